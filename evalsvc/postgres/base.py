"""Django's PostgreSQL backend, with two costs of its hot path removed.

**Health checks without a round trip.** With ``CONN_HEALTH_CHECKS`` Django runs ``SELECT 1``
before the first query of every request on a persistent connection: on the get-one path that
is a third of the database time. A connection that the server has closed
(``pg_terminate_backend``, a restart, a failover, an idle timeout) has something to read on its
socket: the server's farewell error, or the end of the stream. So an idle connection whose
socket has nothing to read is taken as usable, and only one that has something waiting is
checked with Django's ``SELECT 1`` (which then fails and makes Django reconnect). A peer that
vanished without a word (a cut cable) is found by the first query's error instead, as with any
check made a moment before a query.

**Timestamps read by psycopg's C loader.** Django reads ``timestamptz`` values with a loader
written in Python (to attach its own time zone), about 3 µs a value: a third of the time of a
100-score page. When Django's time zone is UTC, which is the session's time zone Django sets,
psycopg's C loader returns the same aware ``datetime`` (``tzinfo=datetime.timezone.utc``), so it
is used instead.
"""

from __future__ import annotations

import datetime
import select
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base
from psycopg import adapt

try:  # the C implementation, present with psycopg[binary] or psycopg[c]
    from psycopg_binary._psycopg import (  # type: ignore[attr-defined]
        TimestamptzLoader as FastTimestamptzLoader,
    )
except ImportError:  # pragma: no cover - pure-Python psycopg
    FastTimestamptzLoader = None


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def _fast_timestamps(self) -> bool:
        return (
            FastTimestamptzLoader is not None
            and settings.USE_TZ
            and self.timezone == datetime.UTC
            and self.timezone_name == "UTC"
        )

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        if self._fast_timestamps and "context" in params:
            context = adapt.AdaptersMap(params["context"])  # Django's map is shared: copy it
            context.register_loader("timestamptz", FastTimestamptzLoader)
            params["context"] = context
        return params

    def create_cursor(self, name: str | None = None) -> Any:
        if not self._fast_timestamps:
            return super().create_cursor(name)
        # Django's create_cursor without its time-zone check, which expects its own loader on
        # the connection (this connection's loader already gives UTC datetimes).
        if name is None:
            return self.connection.cursor()
        withhold = self.connection.autocommit
        if self.settings_dict["OPTIONS"].get("server_side_binding") is not True:
            return base.ServerSideCursor(  # type: ignore[attr-defined]
                self.connection, name=name, scrollable=False, withhold=withhold
            )
        return self.connection.cursor(name, scrollable=False, withhold=withhold)

    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            return False
        try:
            readable, _, _ = select.select([connection.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        if not readable:
            return True
        return bool(super().is_usable())
