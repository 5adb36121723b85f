"""JSON, never HTML, for what happens outside DRF's views: oversized bodies and unhandled
errors; the Content-Security-Policy of the HTML pages."""

from __future__ import annotations

import logging
from collections.abc import Callable

from csp.middleware import CSPMiddleware
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from scores.exceptions import RequestTooLarge, as_api_exception, json_error, response_headers

logger = logging.getLogger("evalsvc.errors")


class JSONErrorMiddleware:
    """Rejects bodies over the limit with a 413 and turns any exception escaping a view of the
    API into the JSON error shape (503 for a database outage, 500 for a bug, logged)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_error(400, "Invalid Content-Length header.")
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            exc = RequestTooLarge(
                f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
            )
            return json_error(exc.status_code, str(exc.detail))
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if request.path.startswith("/admin/"):
            return None
        api_exc = as_api_exception(exception)
        if api_exc is not None:
            return json_error(api_exc.status_code, str(api_exc.detail), response_headers(api_exc))
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "Internal server error.")


class PageSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware (``CONTENT_SECURITY_POLICY``, its view decorators and nonces),
    for the answers a browser renders as a page: ``text/html`` (the admin, /docs, /redoc).
    The API's JSON, CSV and metrics are never rendered, and building the policy costs about
    65 µs, which every API request would pay."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if not response.get("Content-Type", "").startswith("text/html"):
            return response
        return super().process_response(request, response)
