"""The client behind a request: its address (for the API's throttles and the admin login
lockout) and what a client locked out of the admin login is answered."""

from __future__ import annotations

from typing import Any

from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle


def client_address(request: HttpRequest) -> str:
    """The client's address: the connection's own, or, behind ``TRUSTED_PROXY_COUNT`` proxies,
    the one the outermost of them appended to ``X-Forwarded-For`` (anything left of it is what
    the client sent, and is ignored). DRF's rule (``NUM_PROXIES``), so both agree."""
    return BaseThrottle().get_ident(Request(request))


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """django-axes' answer to a locked-out login: 429 with ``Retry-After``, and no CORS header
    (axes' own answers an XMLHttpRequest with ``Access-Control-Allow-Origin: *``)."""
    cool_off = get_cool_off(request)
    seconds = int(cool_off.total_seconds()) if cool_off else 0
    response = HttpResponse(
        "Too many failed logins from this address; try again later.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    if seconds:
        response["Retry-After"] = str(seconds)
    return response
