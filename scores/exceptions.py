"""One JSON error shape for the whole API, and the named errors the domain raises.

Every error is ``{"detail": "<message>"}``; validation errors add
``"errors": {"<field>": ["<message>", ...]}`` (non-field problems under ``non_field_errors``,
items of a list body keyed by their index).
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError
from django.http import Http404, HttpResponse
from rest_framework import exceptions, status
from rest_framework.response import Response


class ServiceUnavailable(exceptions.APIException):
    """A dependency is down; the client should retry after ``Retry-After`` seconds."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A service this request depends on is unavailable; retry later."
    default_code = "service_unavailable"


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
        and all(isinstance(item, (dict, list)) for item in detail)
    ):
        return {str(index): item for index, item in enumerate(detail) if item}
    return {"non_field_errors": detail if isinstance(detail, list) else [detail]}


def as_api_exception(exc: Exception) -> exceptions.APIException | None:
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
    if isinstance(exc, IntegrityError):
        return Conflict("The write conflicts with a stored score.")
    if isinstance(exc, (OperationalError, InterfaceError)):
        return DatabaseUnavailable()
    if isinstance(exc, DatabaseError) and "connection" in str(exc).lower():
        return DatabaseUnavailable()
    return None


def response_headers(exc: exceptions.APIException) -> dict[str, str]:
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    wait = getattr(exc, "wait", None)
    if wait is not None:
        headers["Retry-After"] = str(max(1, int(wait)))
    elif isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(settings.RETRY_AFTER_SECONDS)
    return headers


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler: every known error as one JSON shape; None lets a bug be a 500."""
    from rest_framework.views import set_rollback  # rest_framework.views imports our auth classes

    api_exc = as_api_exception(exc)
    if api_exc is None:
        return None
    if isinstance(api_exc, exceptions.ValidationError):
        data = error_body("Invalid input.", _validation_errors(api_exc.detail))
    else:
        data = error_body(str(api_exc.detail), getattr(api_exc, "errors", None))
    set_rollback()
    return Response(data, status=api_exc.status_code, headers=response_headers(api_exc))
