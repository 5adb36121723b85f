"""Cursor pagination by id: stable under inserts, and a keyset scan however deep the page."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request


class IdCursorPagination(CursorPagination):
    ordering: str | tuple[str, ...] = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise exceptions.ValidationError({"page_size": ["Must be a positive integer."]})
        return min(int(raw), self.max_page_size)

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError({"cursor": ["Invalid cursor."]}) from exc


class ExerciseCursorPagination(IdCursorPagination):
    ordering = "exercise_id"


class AttemptCursorPagination(IdCursorPagination):
    """A score's attempts, oldest first (by attempted_at, then as logged)."""

    ordering = ("attempted_at", "id")
