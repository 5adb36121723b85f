"""JSON request bodies: DRF's parser, refusing with a 400 (never a 500) a body nested deeper than
the parser can follow, and a body that ended before its ``Content-Length`` (the client went
away mid-request: nothing half-sent is applied)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json


class JSONParser(parsers.JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        context = parser_context or {}
        body = stream.read()
        request = context.get("request")
        declared = _content_length(request)
        if declared is not None and len(body) < declared:
            raise ParseError(f"The request body ended after {len(body)} of {declared} bytes.")
        encoding = context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.loads(body.decode(encoding))  # NaN and Infinity refused, as DRF does
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc


def _content_length(request: Any) -> int | None:
    try:
        return int(request.META["CONTENT_LENGTH"]) if request is not None else None
    except (KeyError, ValueError):
        return None
