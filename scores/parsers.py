"""JSON in through orjson, with the body size limit enforced while reading, and a body that
ends before its Content-Length (the client went away mid-request) refused, never applied."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from scores.exceptions import RequestTooLarge


class ORJSONParser(BaseParser):
    media_type = "application/json"

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        declared = _content_length(parser_context)
        if declared is not None and len(body) < declared:
            raise ParseError(f"The request body ended after {len(body)} of {declared} bytes.")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            try:  # integers beyond 64 bits: parse them so the field's own check can name it
                return json.loads(body)
            except ValueError:
                raise ParseError(f"JSON parse error - {exc}") from exc


def _content_length(parser_context: Mapping[str, Any] | None) -> int | None:
    request = (parser_context or {}).get("request")
    try:
        return int(request.META["CONTENT_LENGTH"]) if request is not None else None
    except (KeyError, ValueError):
        return None
