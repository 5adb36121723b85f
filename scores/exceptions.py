"""One JSON error shape for the whole API, and the named errors the domain raises.

Every error is ``{"detail": "<message>"}``; validation errors add
``"errors": {"<field>": ["<message>", ...]}`` (non-field problems under ``non_field_errors``,
items of a list body keyed by their index). Errors are JSON whatever the request's ``Accept``
header asks for.

Database errors are told apart by their class and SQLSTATE, never by their message: a missed
deadline, a lost connection or a server going away is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError, OperationalError
from django.http import Http404, HttpResponse
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ServiceUnavailable(exceptions.APIException):
    """A dependency is down or missed its deadline; retry after ``retry_after`` seconds
    (``RETRY_AFTER_SECONDS`` unless given)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A service this request depends on is unavailable; retry later."
    default_code = "service_unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class UsersServiceUnavailable(ServiceUnavailable):
    default_detail = "The users service is unavailable; retry later."
    default_code = "users_service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    default_detail = "The database is unavailable; retry later."
    default_code = "database_unavailable"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"

    def __init__(self, detail: str | None = None, errors: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors  # which fields conflict, in the validation errors' shape


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def error_body(detail: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return body


def json_error(
    status_code: int, detail: str, headers: dict[str, str] | None = None
) -> HttpResponse:
    """An error response outside DRF's views (middleware, unknown routes, Django's handlers)."""
    return HttpResponse(
        orjson.dumps(error_body(detail)),
        status=status_code,
        content_type="application/json",
        headers=headers,
    )


def _validation_errors(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return dict(detail)
    if (
        isinstance(detail, list)
        and detail
        and all(isinstance(item, dict | list) for item in detail)
    ):
        return {str(index): item for index, item in enumerate(detail) if item}
    return {"non_field_errors": detail if isinstance(detail, list) else [detail]}


# SQLSTATE classes and codes of a database that cannot answer now: connection exceptions (08),
# insufficient resources (53), operator intervention (57: statement timeout, shutdown), lock
# wait timeout (55P03), a read-only replica promoted away (25006).
_UNAVAILABLE_CLASSES = ("08", "53", "57")
_UNAVAILABLE_CODES = ("55P03", "25006")


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether a database error means "not now" rather than a bug or bad data."""
    if not isinstance(exc, DatabaseError):
        return False
    if isinstance(exc, InterfaceError):  # the connection is closed
        return True
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in _UNAVAILABLE_CLASSES or sqlstate in _UNAVAILABLE_CODES
    # No SQLSTATE: psycopg's own connection errors, or SQLite's (a locked database file).
    return isinstance(exc, OperationalError)


def as_api_exception(exc: BaseException) -> exceptions.APIException | None:
    """The API error an exception stands for, or None for a bug (a 500)."""
    if isinstance(exc, exceptions.APIException):
        return exc
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge(str(exc))
    if isinstance(exc, SuspiciousOperation):  # e.g. over DATA_UPLOAD_MAX_NUMBER_FIELDS parameters
        return exceptions.ParseError(str(exc))
    if is_database_unavailable(exc):
        return DatabaseUnavailable()
    if isinstance(exc, IntegrityError):
        return Conflict("The write conflicts with a stored score.")
    if isinstance(exc, DataError):  # a value the database refuses that validation let through
        logger.warning("database refused a value: %s", exc)
        return exceptions.ValidationError({"non_field_errors": ["A value is out of range."]})
    return None


def response_headers(exc: exceptions.APIException) -> dict[str, str]:
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    wait = getattr(exc, "wait", None)
    if wait is not None:
        headers["Retry-After"] = str(max(1, int(wait)))
    elif isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after or settings.RETRY_AFTER_SECONDS)
    return headers


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler: every known error as one JSON shape, rendered as JSON whatever
    the client accepts (DRF renders an error with the renderer negotiated for the request,
    which for a browser would be the browsable API's HTML page); None lets a bug be a 500."""
    from rest_framework.views import set_rollback  # rest_framework.views imports our auth classes

    api_exc = as_api_exception(exc)
    if api_exc is None:
        return None
    if isinstance(api_exc, exceptions.ValidationError):
        data = error_body("Invalid input.", _validation_errors(api_exc.detail))
    else:
        data = error_body(str(api_exc.detail), getattr(api_exc, "errors", None))
    request = context.get("request")
    if request is not None:
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
    set_rollback()
    return Response(data, status=api_exc.status_code, headers=response_headers(api_exc))
