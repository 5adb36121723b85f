"""Content negotiation: JSON unless a browser asks for HTML (the browsable API for staff)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

FIRST_RENDERER_ACCEPTS = frozenset({"", "*/*", "application/json"})


class JSONFirstNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, short-cut for what API clients send (no Accept, ``*/*`` or JSON) to a
    view that renders JSON first: that renderer, without parsing anything. It is on every
    request's path."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> Any:
        renderers = list(renderers)
        first = renderers[0]
        if (
            first.media_type == "application/json"
            and request.META.get("HTTP_ACCEPT", "") in FIRST_RENDERER_ACCEPTS
            and not format_suffix
            and "format" not in request.GET
        ):
            return first, first.media_type
        return super().select_renderer(request, renderers, format_suffix)


class FirstRendererNegotiation(BaseContentNegotiation):
    """For routes whose success body is not JSON (the CSV export): errors are rendered as JSON
    whatever the client's Accept header says, never refused with a 406."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> Any:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type
