"""Shared fixtures: a real users service on loopback, API clients for each kind of caller."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import circuitbreaker
import psycopg
import pytest
from django.core.cache import cache
from django.db import connections
from pytest_httpserver import HTTPServer
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from werkzeug import Request, Response

from scores.database import database_breaker
from scores.replicas import replica_breaker
from scores.resilient_cache import redis_breaker
from scores.users_service import local_verdicts
from scores.users_service import users_service as users_service_client


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    return ("127.0.0.1", 0)


@dataclass
class UsersService:
    """The users service: a real HTTP server on loopback answering ``GET /auth/status``.

    Tokens are registered with ``user()``; anything else is answered 401. ``calls`` counts the
    requests it received.
    """

    server: HTTPServer
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0

    def user(self, user_id: int, *, admin: bool = False, active: bool = True) -> str:
        token = f"token-{user_id}-{'admin' if admin else 'user'}-{'on' if active else 'off'}"
        self.tokens[token] = {
            "id": user_id,
            "username": f"user{user_id}",
            "email": f"user{user_id}@example.com",
            "active": active,
            "admin": admin,
        }
        return token

    def handle(self, request: Request) -> Response:
        self.calls += 1
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        data = self.tokens.get(token) if scheme == "Bearer" else None
        if data is None:
            body = {"status": "fail", "message": "Invalid token. Please log in again."}
            return Response(json.dumps(body), status=401, content_type="application/json")
        body = {"status": "success", "data": data}
        return Response(json.dumps(body), status=200, content_type="application/json")


def trip(breaker: Any, failure: BaseException | None = None) -> None:
    """Open ``breaker`` as a run of ``failure`` would."""
    for _ in range(breaker._failure_threshold):
        breaker.record_failure(failure or ConnectionError("test: failing"))
    assert breaker.opened


def after_pause(breaker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Move ``breaker``'s clock past its pause: calls go through again."""
    later = time.monotonic() + breaker._recovery_timeout + 1
    monkeypatch.setattr(circuitbreaker, "monotonic", lambda: later)
    assert not breaker.opened


@contextmanager
def database_alias(alias: str, settings_dict: dict[str, Any]) -> Iterator[None]:
    """The database ``alias`` with these settings, completed as Django completes its configured
    ones, for the duration: one the testing settings lack (``replica``, ``listen``), or one
    this replaces for a while. Its connections are closed when it changes."""
    previous = connections.settings.get(alias)
    if previous is not None:
        connections[alias].close()
        del connections[alias]
    configured = connections.configure_settings({"default": {}, alias: dict(settings_dict)})
    connections.settings[alias] = configured[alias]
    try:
        yield
    finally:
        connections[alias].close()
        del connections[alias]
        if previous is None:
            del connections.settings[alias]
        else:
            connections.settings[alias] = previous


def _forget_state() -> None:
    cache.clear()
    local_verdicts.clear()
    for breaker in (database_breaker, redis_breaker, replica_breaker):
        breaker.reset()
    users_service_client.forget_health()


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    _forget_state()
    yield
    _forget_state()


@pytest.fixture
def users_service(httpserver: HTTPServer, settings: Any) -> UsersService:
    service = UsersService(server=httpserver)
    httpserver.expect_request("/auth/status", method="GET").respond_with_handler(service.handle)
    settings.USERS_SERVICE_URL = httpserver.url_for("/")
    return service


def bearer_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


USER_ID = 4
OTHER_ID = 5
ADMIN_ID = 1


@pytest.fixture
def user(users_service: UsersService) -> APIClient:
    """Platform user 4."""
    return bearer_client(users_service.user(USER_ID))


@pytest.fixture
def other(users_service: UsersService) -> APIClient:
    """Platform user 5."""
    return bearer_client(users_service.user(OTHER_ID))


@pytest.fixture
def admin(users_service: UsersService) -> APIClient:
    """Platform user 1, an admin according to the users service."""
    return bearer_client(users_service.user(ADMIN_ID, admin=True))


@pytest.fixture
def staff(db: None, django_user_model: Any) -> APIClient:
    """A staff service account with a DRF token (e.g. the grader)."""
    account = django_user_model.objects.create_user("grader", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=account).key}")
    return client


@pytest.fixture
def non_staff(db: None, django_user_model: Any) -> APIClient:
    """A Django account that is neither staff nor a platform user."""
    account = django_user_model.objects.create_user("someone")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=account).key}")
    return client


@pytest.fixture
def held() -> Iterator[Callable[[], psycopg.Connection]]:
    """Opens connections of their own to the test database (outside Django), whose transactions
    stay open until the test commits or rolls them back; closed at teardown whatever happened."""
    opened: list[psycopg.Connection] = []
    settings = connections["default"].settings_dict
    conninfo = {
        "dbname": settings["NAME"],
        "user": settings["USER"],
        "password": settings["PASSWORD"],
        "host": settings["HOST"],
        "port": settings["PORT"],
    }

    def open_transaction() -> psycopg.Connection:
        conn = psycopg.connect(**{k: str(v) for k, v in conninfo.items() if v})
        opened.append(conn)
        return conn

    yield open_transaction
    for conn in opened:
        conn.close()
