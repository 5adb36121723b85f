"""DRF authentication classes: platform users' bearer tokens (vouched for by the users service,
``scores.users_service``), staff and service accounts' DRF tokens, and a last one refusing any
other ``Authorization`` header.

Refused credentials spend the anonymous rate of the client's address
(``scores.throttling.RefusedCredentials``); past it, a request with credentials that are not
already known to be good is answered 429 before anyone is asked about them.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, TokenAuthentication
from rest_framework.request import Request

from scores.callers import PlatformUser
from scores.telemetry import note_caller
from scores.throttling import RefusedCredentials
from scores.users_service import is_known_accepted, verify_token


def refuse(request: Request, message: str) -> exceptions.AuthenticationFailed:
    """Count a refusal against the client address's anonymous rate; the 401 to raise."""
    RefusedCredentials(request).spend()
    return exceptions.AuthenticationFailed(message)


def ensure_not_over_rate(request: Request) -> None:
    """Raises ``Throttled`` when the client's address has spent its anonymous rate."""
    wait = RefusedCredentials(request).exhausted()
    if wait is not None:
        raise exceptions.Throttled(wait)


class UsersServiceAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``, vouched for by the users service."""

    keyword = "bearer"

    def authenticate(self, request: Request) -> tuple[PlatformUser, str] | None:
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != self.keyword:
            return None
        token = token.strip()
        if not token or " " in token or not token.isprintable():
            ensure_not_over_rate(request)
            raise refuse(request, "Malformed Authorization header: expected 'Bearer <token>'.")
        if not is_known_accepted(token):
            ensure_not_over_rate(request)
        user = verify_token(token)
        if user is None:
            raise refuse(request, "Invalid, expired or inactive token.")
        note_caller(request._request, user_id=user.id)
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="evalsvc"'


class ServiceTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>`` for staff and service accounts (DRF tokens)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        try:
            result = super().authenticate(request)
        except exceptions.AuthenticationFailed as exc:
            ensure_not_over_rate(request)
            raise refuse(request, str(exc.detail)) from exc
        if result is not None:
            note_caller(request._request, account=result[0].get_username())
        return result


class RejectUnknownAuthorization(BaseAuthentication):
    """Last in line: an Authorization header that nobody above understood is a 401."""

    def authenticate(self, request: Request) -> None:
        if request.META.get("HTTP_AUTHORIZATION"):
            ensure_not_over_rate(request)
            raise refuse(
                request, "Unsupported Authorization header: use 'Bearer <token>' or 'Token <key>'."
            )
        return None
