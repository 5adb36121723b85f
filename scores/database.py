"""The database as a dependency with deadlines: every statement and lock wait is bounded by
``DATABASE_STATEMENT_TIMEOUT`` and every connection attempt by ``DATABASE_CONNECT_TIMEOUT``
(set on the connection by ``evalsvc.settings.base.database``); a request whose database misses
its deadline is a JSON 503 with ``Retry-After`` (``scores.exceptions``).

A database that keeps missing its deadlines (a table locked for a minute, a server that does
not answer) is not asked again by every request: ``database_breaker`` opens after a few
consecutive failures, and while it is open requests that need the database are answered 503 at
once, so they do not each hold a worker for the whole deadline.

A kept connection that the server closed while it was idle (a restart, ``pg_terminate_backend``)
is found by Django's own ``CONN_HEALTH_CHECKS`` before the request uses it, and replaced.

Timestamps are read by ``ISOTimestamptzLoader``, a psycopg loader registered on each new
PostgreSQL connection (``connection_created``) in place of Django's, which parses them in Python:
15 % more 100-score pages a second in the shared harness (docs/scaling.md, "Parts replaced").
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse
from psycopg.types.datetime import TimestamptzLoader

from scores.breakers import DependencyBreaker
from scores.exceptions import DatabaseUnavailable, is_database_unavailable, json_error

database_breaker = DependencyBreaker(
    "database",
    failure_threshold=3,
    recovery_timeout=5,
    is_failure=is_database_unavailable,
)

# Routes that never touch the database: answered even while the breaker is open.
DATABASE_FREE_ROUTES = frozenset({"health", "ping", "schema", "docs", "redoc", "metrics"})


def guard(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
    """A Django execute wrapper: refuses at once while the breaker is open, else runs the
    statement and counts its outcome."""
    if database_breaker.opened:
        raise DatabaseUnavailable(retry_after=database_breaker.retry_after())
    with database_breaker:
        return execute(sql, params, many, context)


def unavailable() -> HttpResponse:
    return json_error(
        503,
        str(DatabaseUnavailable.default_detail),
        {"Retry-After": str(database_breaker.retry_after())},
    )


class DatabaseGuardMiddleware:
    """Puts ``guard`` around every statement of the request. Before a view that needs the
    database (all but ``DATABASE_FREE_ROUTES``), answers 503 at once while the breaker is open,
    and connects (a failed connection attempt counts as a failure; its deadline is
    ``DATABASE_CONNECT_TIMEOUT``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with ExitStack() as stack:
            for connection in connections.all():
                stack.enter_context(connection.execute_wrapper(guard))
            return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        match = request.resolver_match
        if match is not None and match.url_name in DATABASE_FREE_ROUTES:
            return None
        if database_breaker.opened:
            return unavailable()
        try:
            connections["default"].ensure_connection()
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            database_breaker.record_failure(exc)
            return unavailable()
        return None


class ISOTimestamptzLoader(TimestamptzLoader):
    """``timestamptz`` as an aware UTC ``datetime``, parsed by ``datetime.fromisoformat`` (C)
    from PostgreSQL's ISO output. ``timezone`` is what Django compares with its own time zone
    before using a connection's loader."""

    timezone = UTC

    def load(self, data: Any) -> datetime:
        try:
            moment = datetime.fromisoformat(bytes(data).decode())
        except ValueError:  # infinity, BC dates: psycopg's own parser says what is wrong
            moment = super().load(data)
        return moment if moment.utcoffset() == UTC.utcoffset(None) else moment.astimezone(UTC)


def use_iso_timestamps(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created`` receiver: PostgreSQL connections read timestamps with
    ``ISOTimestamptzLoader`` when Django's time zone is UTC (the session's, then)."""
    if connection.vendor == "postgresql" and connection.timezone_name == "UTC":
        connection.connection.adapters.register_loader("timestamptz", ISOTimestamptzLoader)
