"""Cursor pagination: stable under inserts, and a keyset scan however deep the page.

Cursors are signed (``django.core.signing``, salted with the list's ordering): a cursor the
service did not issue (forged, truncated, edited, or taken from another list) is a 400 naming
``cursor``, and what a cursor holds never reaches a query unchecked.
"""

from __future__ import annotations

from typing import Any

from django.core import signing
from rest_framework import exceptions
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from scores.validation import InvalidValue, parse_count_text

INVALID_CURSOR = "Invalid cursor."


class IdCursorPagination(CursorPagination):
    ordering: str | tuple[str, ...] = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            return parse_count_text(raw, maximum=self.max_page_size)
        except InvalidValue as exc:
            raise exceptions.ValidationError({"page_size": [str(exc)]}) from exc

    example_path = "/scores"  # for the schema's example of a next/previous link

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """DRF's page schema, with links of this service as examples."""
        paged: dict[str, Any] = super().get_paginated_response_schema(schema)
        link = f"https://scores.example.com{self.example_path}?cursor=WzAsZmFsc2UsIjE3Il0:1vB2xq:k3"
        paged["properties"]["next"]["example"] = link
        paged["properties"]["previous"]["example"] = None
        return paged

    @property
    def _salt(self) -> str:
        ordering = self.ordering if isinstance(self.ordering, str) else ",".join(self.ordering)
        return f"evalsvc.cursor:{ordering}"

    def encode_cursor(self, cursor: Cursor) -> str:
        token = signing.dumps([cursor.offset, cursor.reverse, cursor.position], salt=self._salt)
        return str(replace_query_param(str(self.base_url), self.cursor_query_param, token))

    def decode_cursor(self, request: Request) -> Cursor | None:
        token = request.query_params.get(self.cursor_query_param)
        if token is None:
            return None
        try:
            offset, reverse, position = signing.loads(token, salt=self._salt)
        except (signing.BadSignature, ValueError, TypeError) as exc:
            raise exceptions.ValidationError({"cursor": [INVALID_CURSOR]}) from exc
        if not (
            type(offset) is int
            and 0 <= offset <= self.offset_cutoff
            and type(reverse) is bool
            and (position is None or isinstance(position, str))
        ):  # pragma: no cover - only a cursor signed with this SECRET_KEY gets here
            raise exceptions.ValidationError({"cursor": [INVALID_CURSOR]})
        return Cursor(offset=offset, reverse=reverse, position=position)  # type: ignore[arg-type]


class ExerciseCursorPagination(IdCursorPagination):
    ordering = "exercise_id"
    example_path = "/scores/stats/exercises"


class AttemptCursorPagination(IdCursorPagination):
    """A score's attempts, oldest first (by attempted_at, then as logged)."""

    ordering = ("attempted_at", "id")
    example_path = "/scores/17/attempts"
