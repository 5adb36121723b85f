"""WSGI entry point (production settings unless DJANGO_SETTINGS_MODULE is set).

Django reads a request body only as long as its ``Content-Length``; a body sent with
``Transfer-Encoding: chunked`` has none and would reach the views empty. ``ChunkedBodies``
reads such a body first, up to the body limit, and hands it on with its length: chunked bodies
are read like any other on every route, and over the limit they get the API's 413.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsvc.settings.production")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ChunkedBodies:
    """WSGI middleware: a chunked request body, read whole (at most ``MAX_BODY_BYTES``) and
    passed on with its ``Content-Length``."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                detail = f'{{"detail": "The request body is larger than {limit} bytes."}}'
                start_response(
                    "413 Request Entity Too Large",
                    [("Content-Type", "application/json"), ("Connection", "close")],
                )
                return [detail.encode()]
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


application = ChunkedBodies(get_wsgi_application())
