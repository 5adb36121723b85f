"""The events bell on DATABASE_LISTEN_URL's database (the ``listen`` alias): a direct connection
to the primary, for when DATABASE_URL goes through a PgBouncer in transaction mode, which never
delivers notifications to a LISTEN sent through it (docs/scaling.md, "The topology, run")."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections, transaction

from scores.events import sequence_events
from scores.services import Write, score_write
from scores.tests.conftest import database_alias

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN is PostgreSQL's"),
    pytest.mark.django_db(transaction=True, databases=["default", "listen"]),
]
LISTENER = "evalsvc-test-listen"


@pytest.fixture(scope="module", autouse=True)
def listen(django_db_setup: None) -> Iterator[None]:
    """The ``listen`` alias on the test database, its sessions named ``LISTENER``.
    Module-scoped: it exists before each test case checks the databases it declares."""
    default = connections["default"].settings_dict
    with database_alias(
        "listen",
        {
            **default,
            "OPTIONS": {**default["OPTIONS"], "application_name": LISTENER},
            "TEST": {"MIRROR": "default"},
        },
    ):
        yield


def listening_sessions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE application_name = %s", [LISTENER])
        return [query for (query,) in cursor.fetchall()]


def test_a_long_poll_is_woken_by_a_notification_on_the_listen_database(admin) -> None:
    answers: list[Any] = []

    def poll() -> None:
        try:
            answers.append(admin.get("/events?wait=30").json())
        finally:
            connections.close_all()

    poller = threading.Thread(target=poll)
    poller.start()
    for _ in range(100):  # until the bell listens
        if listening_sessions():
            break
        time.sleep(0.1)
    assert listening_sessions() == ["LISTEN score_events"]

    # Another process numbers the event (holding the sequencer's lock until it commits), so
    # the bell does not find it itself: only the notification at the commit wakes the poll.
    with transaction.atomic():
        score_write(write=Write(user_id=1, exercise_id=1, correct=True), recorded_by="g")
        assert sequence_events() == 1
    poller.join(15)  # half its wait: woken, not timed out

    assert not poller.is_alive()
    [answer] = answers
    assert [event["subject"] for event in answer["results"]] == ["users/1/exercises/1"]
