"""JSON, never HTML, for what happens outside DRF's views: oversized bodies and unhandled errors;
and the browser-session middleware kept to the requests that use a session."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

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


class SiteMiddleware:
    """The middleware of the site's browser sessions (``SITE_MIDDLEWARE``: sessions, CSRF,
    login, messages, the admin's login lockout), run only for requests that can use a session:
    the admin's pages and requests carrying the session cookie (staff using the API from the
    admin's login, DRF's session authentication). A bearer-token call has no session to load,
    no cookie to protect from forgery and no login to lock out, so it skips them: they were
    about 45 µs, a tenth of the application's time on a one-score read (README, Performance).

    Built as Django builds ``MIDDLEWARE``: each one wrapped so that its exceptions become
    responses, and their ``process_view`` hooks (CSRF's check) run before the view when the
    request is the site's.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        handler: Callable[[HttpRequest], Any] = get_response
        view_hooks: list[Callable[..., HttpResponse | None]] = []
        for path in reversed(settings.SITE_MIDDLEWARE):
            try:
                middleware = import_string(path)(handler)
            except MiddlewareNotUsed:
                continue
            if hasattr(middleware, "process_exception") or hasattr(
                middleware, "process_template_response"
            ):
                raise ImproperlyConfigured(f"{path} has hooks SiteMiddleware does not run.")
            if hasattr(middleware, "process_view"):
                view_hooks.insert(0, middleware.process_view)
            handler = convert_exception_to_response(middleware)
        self.site = handler
        self.view_hooks = view_hooks
        self.prefixes = tuple(settings.SITE_PATH_PREFIXES)

    def is_site_request(self, request: HttpRequest) -> bool:
        return (
            request.path_info.startswith(self.prefixes)
            or settings.SESSION_COOKIE_NAME in request.COOKIES
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.is_site_request(request):
            request.is_site_request = True  # type: ignore[attr-defined]
            return self.site(request)
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        if not getattr(request, "is_site_request", False):
            return None
        for hook in self.view_hooks:
            response = hook(request, view, args, kwargs)
            if response is not None:
                return response
        return None
