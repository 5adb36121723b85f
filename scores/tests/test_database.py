"""PostgreSQL connections: a connection the server closed is replaced before a request uses it
(Django's CONN_HEALTH_CHECKS); every statement and lock wait has its deadline, and one that misses
it is a 503; timestamps are read by the ISO loader as UTC datetimes; repeated statements are
prepared on the connection."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.db import (
    DataError,
    OperationalError,
    close_old_connections,
    connection,
    connections,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test.utils import CaptureQueriesContext
from psycopg import pq

from scores.database import ISOTimestamptzLoader, database_breaker
from scores.tests.conftest import USER_ID, after_pause, trip
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


def wait_readable(wrapper: BaseDatabaseWrapper) -> None:
    deadline = time.monotonic() + 5
    while not select.select([wrapper.connection.fileno()], [], [], 0.05)[0]:
        assert time.monotonic() < deadline, "the server did not close the connection"


@pytest.mark.django_db(transaction=True)
def test_the_request_after_the_server_closed_its_connection_is_answered(user) -> None:
    ScoreFactory(user_id=USER_ID)
    assert user.get("/scores/user").status_code == 200
    pid = backend_pid(connection)
    killer = connections.create_connection("default")
    with killer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    killer.close()
    wait_readable(connection)
    # What the WSGI handler does when a request starts (request_started), and Django's test
    # client leaves out: the kept connection is health-checked again before its next use.
    close_old_connections()

    assert user.get("/scores/user").status_code == 200
    assert backend_pid(connection) != pid


def test_timestamps_are_read_by_the_iso_loader_as_utc_datetimes(fresh) -> None:
    with fresh.cursor() as cursor:
        cursor.execute("SELECT TIMESTAMPTZ '2026-11-26 12:34:56.789+02', TIMESTAMPTZ '2026-11-26'")
        [values] = cursor.fetchall()
        loader = cursor.cursor.adapters.get_loader(1184, pq.Format.TEXT)  # timestamptz

    assert values == (
        datetime(2026, 11, 26, 10, 34, 56, 789000, tzinfo=UTC),
        datetime(2026, 11, 26, tzinfo=UTC),
    )
    assert {value.tzinfo for value in values} == {UTC}
    assert loader is ISOTimestamptzLoader


def test_a_timestamp_out_of_pythons_range_is_refused_as_psycopg_would(fresh) -> None:
    with fresh.cursor() as cursor:
        cursor.execute("SELECT TIMESTAMPTZ 'infinity'")
        with pytest.raises(DataError, match="too large"):
            cursor.fetchall()


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


# --- Deadlines --------------------------------------------------------------------------------


def test_every_connection_has_the_statement_and_lock_deadlines(fresh, settings) -> None:
    with fresh.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        [(statement,)] = cursor.fetchall()
        cursor.execute("SHOW lock_timeout")
        [(lock,)] = cursor.fetchall()

    assert (statement, lock) == ("5s", "5s")
    assert fresh.settings_dict["OPTIONS"]["connect_timeout"] == 3


@pytest.fixture
def locked_scores() -> Iterator[None]:
    """Another session holds ``scores`` locked (as a long ALTER TABLE would)."""
    locker = connections.create_connection("default")
    locker.ensure_connection()
    locker.connection.autocommit = False
    locker.connection.execute("LOCK TABLE scores IN ACCESS EXCLUSIVE MODE")
    yield
    locker.connection.rollback()
    locker.close()


@pytest.fixture
def short_deadline() -> Iterator[None]:
    """The request's connection waits 100 ms for a lock, as it would 5 s in production."""
    connection.ensure_connection()
    connection.connection.execute("SET lock_timeout = '100ms'")
    yield
    connection.connection.execute("RESET lock_timeout")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("locked_scores", "short_deadline")
def test_a_lock_held_past_the_deadline_is_a_503_then_not_tried_for_a_while(user) -> None:
    waits = [user.get("/scores/user") for _ in range(database_breaker._failure_threshold)]
    with CaptureQueriesContext(connection) as queries:
        refused = user.get("/scores/user")
        alive = user.get("/health")

    for response in [*waits, refused]:
        assert (response.status_code, response.json()) == (
            503,
            {"detail": "The database is unavailable; retry later."},
        )
        assert 1 <= int(response["Retry-After"]) <= 5
    assert database_breaker.opened
    assert len(queries) == 0  # not asked while the breaker is open
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})


@pytest.mark.django_db(transaction=True)
def test_the_database_is_asked_again_after_the_pause(user, monkeypatch) -> None:
    trip(database_breaker, OperationalError("test: timed out"))
    assert user.get("/scores/user").status_code == 503

    after_pause(database_breaker, monkeypatch)
    response = user.get("/scores/user")

    assert (response.status_code, response.json()["results"]) == (200, [])
    assert database_breaker.closed
