"""Read-your-writes routing between the primary and a replica (DATABASE_REPLICA_URL), and reads
that fall back to the primary when the replica cannot answer.

The testing settings have no replica: this module adds one that reaches the test database
itself (as a replica with no lag would), ``replica_down`` moves it to a port nothing listens on
(a stopped server), and ``replica_routing`` adds the router and middleware production adds.
Test cases keep the replica's connection in a transaction of its own (Django does so for every
database a test declares), so the tests that connect or reconnect it are transactional.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.db import OperationalError, connection, connections
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from evalsvc.settings.base import database
from scores.database import database_breaker
from scores.models import Score
from scores.replicas import PrimaryReplicaRouter, ReadYourWritesMiddleware, replica_breaker
from scores.services import Write, score_write
from scores.tests.conftest import USER_ID, after_pause, database_alias, trip
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import score_json

pytestmark = pytest.mark.django_db(databases=["default", "replica"])

router = PrimaryReplicaRouter()


@pytest.fixture(scope="module", autouse=True)
def replica(django_db_setup: None) -> Iterator[None]:
    """The ``replica`` alias, on the test database. A mirror, so that test cases leave its
    transactions alone; module-scoped, so that it exists before each test case checks the
    databases it declares."""
    settings_dict = {**connections["default"].settings_dict, "TEST": {"MIRROR": "default"}}
    with database_alias("replica", settings_dict):
        yield


@pytest.fixture
def replica_down() -> Iterator[None]:
    """The replica's server stopped: connections to it are refused."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    stopped = {**database(f"postgres://u@127.0.0.1:{port}/replica"), "TEST": {"MIRROR": "default"}}
    with database_alias("replica", stopped):
        yield


@pytest.fixture
def replica_routing(settings: Any) -> None:
    """The router and middleware production settings add with DATABASE_REPLICA_URL."""
    after = settings.MIDDLEWARE.index("scores.middleware.JSONErrorMiddleware") + 1
    settings.DATABASE_ROUTERS = ["scores.replicas.PrimaryReplicaRouter"]
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE[:after],
        "scores.replicas.ReadYourWritesMiddleware",
        *settings.MIDDLEWARE[after:],
    ]


def serve(method: str, token: str | None, status: int = 200) -> str:
    """The database a read inside one request of ``method`` by ``token`` would use."""
    used: list[str] = []

    def view(request):
        used.append(router.db_for_read(Score))
        return HttpResponse(status=status)

    credentials = {} if token is None else {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    request = getattr(RequestFactory(), method)("/scores", **credentials)
    ReadYourWritesMiddleware(view)(request)
    return used[0]


# --- Read-your-writes ---------------------------------------------------------------------------
def test_reads_go_to_the_replica_and_writes_to_the_primary() -> None:
    assert serve("get", "reader") == "replica"
    assert router.db_for_write(Score) == "default"


@pytest.mark.parametrize("method", ["post", "patch", "put", "delete"])
def test_a_writing_request_reads_on_the_primary(method) -> None:
    assert serve(method, f"writer-{method}") == "default"


def test_after_a_write_the_same_client_reads_the_primary_and_others_the_replica() -> None:
    serve("patch", "alice")

    assert serve("get", "alice") == "default"
    assert serve("get", "bob") == "replica"


def test_a_failed_write_does_not_pin_the_client() -> None:
    serve("patch", "carol", status=400)

    assert serve("get", "carol") == "replica"


def test_the_pin_expires() -> None:
    serve("patch", "dave")
    cache.clear()  # the REPLICA_STICKY_SECONDS have passed

    assert serve("get", "dave") == "replica"


def test_a_request_without_credentials_reads_the_replica_without_asking_the_cache(
    monkeypatch,
) -> None:
    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cache was asked")

    monkeypatch.setattr(cache, "get", unavailable)
    monkeypatch.setattr(cache, "set", unavailable)

    assert serve("get", None) == "replica"
    assert serve("post", None, status=401) == "default"


def test_migrations_run_on_the_primary_only() -> None:
    assert router.allow_migrate("default", "scores") is True
    assert router.allow_migrate("replica", "scores") is False


# --- A replica that cannot answer ---------------------------------------------------------------
@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
@pytest.mark.usefixtures("replica_down", "replica_routing")
def test_reads_are_answered_from_the_primary_while_the_replica_refuses_connections(user) -> None:
    score = ScoreFactory(user_id=USER_ID, exercise_id=3)

    answers = [user.get(f"/scores/{score.id}") for _ in range(3)]

    assert [(a.status_code, a.json()) for a in answers] == [(200, score_json(score))] * 3
    assert replica_breaker.opened
    assert replica_breaker.failure_count == 1  # asked once, then left alone
    assert not database_breaker.opened


def test_the_replica_is_asked_again_after_its_pause(monkeypatch) -> None:
    trip(replica_breaker, OperationalError("test: refused"))

    assert serve("get", "erin") == "default"

    after_pause(replica_breaker, monkeypatch)

    assert serve("get", "erin") == "replica"
    assert not replica_breaker.opened


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL backend to stop")
@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
@pytest.mark.usefixtures("replica_routing")
def test_a_read_the_replica_fails_midway_is_answered_again_from_the_primary(user) -> None:
    score = ScoreFactory(user_id=USER_ID, exercise_id=3)
    assert user.get(f"/scores/{score.id}").status_code == 200  # read on the replica
    replica_backend = connections["replica"].connection.info.backend_pid
    with connection.cursor() as cursor:  # the replica's server ends the session under it
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [replica_backend])

    answer = user.get(f"/scores/{score.id}")

    assert (answer.status_code, answer.json()) == (200, score_json(score))
    assert not database_breaker.opened


@pytest.mark.usefixtures("replica_routing")
def test_a_503_of_the_primary_is_not_answered_again(user) -> None:
    score = ScoreFactory(user_id=USER_ID, exercise_id=3)
    trip(database_breaker, OperationalError("test: timed out"))

    with CaptureQueriesContext(connections["replica"]) as on_replica:
        answer = user.get(f"/scores/{score.id}")

    assert answer.status_code == 503
    assert on_replica.captured_queries == []


# --- What always reads the primary --------------------------------------------------------------
@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="a second connection to SQLite's test file waits on the test's own lock",
)
@pytest.mark.usefixtures("replica_routing")
def test_the_events_feed_reads_the_primary_where_its_events_are_numbered(admin) -> None:
    score_write(write=Write(user_id=USER_ID, exercise_id=4, correct=True), recorded_by="g")

    with CaptureQueriesContext(connections["replica"]) as on_replica:
        answer = admin.get("/events?wait=1")

    assert [event["subject"] for event in answer.json()["results"]] == [
        f"users/{USER_ID}/exercises/4"
    ]
    assert on_replica.captured_queries == []
