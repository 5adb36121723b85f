"""The PostgreSQL backend's health check: no round trip while the connection is idle and
healthy; a connection the server closed is found unusable and replaced. Its C timestamp loader,
and repeated statements prepared on the connection."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.db import connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg import pq

from scores.tests.conftest import USER_ID
from scores.tests.factories import ScoreFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="PostgreSQL's backend; set DATABASE_TEST_URL to a PostgreSQL database",
    ),
]


@pytest.fixture
def fresh() -> Iterator[BaseDatabaseWrapper]:
    """A second connection to the test database, outside the test's transaction."""
    wrapper = connections.create_connection("default")
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def backend_pid(wrapper: BaseDatabaseWrapper) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def statements_run(pid: int) -> str:
    """The last statement the backend ``pid`` ran (pg_stat_activity.query)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        return str(cursor.fetchone()[0])


def wait_readable(wrapper: BaseDatabaseWrapper) -> None:
    deadline = time.monotonic() + 5
    while not select.select([wrapper.connection.fileno()], [], [], 0.05)[0]:
        assert time.monotonic() < deadline, "the server did not close the connection"


def test_an_idle_healthy_connection_is_usable_without_a_query(fresh) -> None:
    pid = backend_pid(fresh)
    with fresh.cursor() as cursor:
        cursor.execute("SELECT 'the last statement'")

    assert fresh.is_usable() is True
    assert statements_run(pid) == "SELECT 'the last statement'"  # no SELECT 1 since


def test_a_connection_the_server_terminated_is_unusable_and_replaced(fresh) -> None:
    pid = backend_pid(fresh)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_readable(fresh)

    assert fresh.is_usable() is False

    fresh.health_check_enabled, fresh.health_check_done = True, False
    fresh.close_if_health_check_failed()  # what Django does before a request's first query
    assert backend_pid(fresh) != pid


def test_a_connection_with_a_message_waiting_is_checked_with_a_query(fresh) -> None:
    pid = backend_pid(fresh)
    with fresh.cursor() as cursor:
        cursor.execute("LISTEN evalsvc_test")
    notifier = connections.create_connection("default")
    try:
        with notifier.cursor() as cursor:
            cursor.execute("NOTIFY evalsvc_test")  # autocommit: delivered at once
    finally:
        notifier.close()
    wait_readable(fresh)

    assert fresh.is_usable() is True
    assert statements_run(pid) == "SELECT 1"


def test_timestamps_are_read_by_psycopgs_c_loader_as_utc_datetimes(fresh) -> None:
    with fresh.cursor() as cursor:
        cursor.execute("SELECT TIMESTAMPTZ '2026-11-26 12:34:56.789+02'")
        [(value,)] = cursor.fetchall()
        loader = cursor.cursor.adapters.get_loader(1184, pq.Format.TEXT)  # timestamptz

    assert value == datetime(2026, 11, 26, 10, 34, 56, 789000, tzinfo=UTC)
    assert value.tzinfo is UTC
    assert loader.__module__ == "psycopg_binary._psycopg"


def test_a_server_side_cursor_reads_the_same_timestamps(fresh) -> None:
    with fresh.chunked_cursor() as cursor:
        cursor.execute("SELECT TIMESTAMPTZ '2026-11-26 12:34:56+02' FROM generate_series(1, 3)")
        values = [value for (value,) in cursor.fetchall()]
        assert cursor.name  # a named cursor: DECLARE ... CURSOR on the server

    assert values == [datetime(2026, 11, 26, 10, 34, 56, tzinfo=UTC)] * 3
    assert {value.tzinfo for value in values} == {UTC}


def test_a_read_repeated_on_a_connection_is_prepared_there(user, fresh) -> None:
    """PREPARED_STATEMENTS (on by default): from its fifth use, the one-score read is a
    prepared statement on the connection, parsed and planned once."""
    score = ScoreFactory(user_id=USER_ID)

    for _ in range(6):
        assert user.get(f"/scores/{score.id}").status_code == 200

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    assert [statement for statement in prepared if "FROM scores WHERE id = $1" in statement]
