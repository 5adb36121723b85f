"""The per-exercise counters kept by database triggers: equal to a GROUP BY over ``scores``
after any statement (raw SQL included), untouched by writes that change no counted value, and
sharded so that concurrent writers of different users do not wait for each other.

Five counters per (exercise, shard): attempted, correct, first_try_correct, solved (scores with
an ``attempts_to_correct``) and the sum of ``attempts_to_correct``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connection, connections, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from scores.models import STATS_SHARDS, ExerciseStats, Score
from scores.services import Write, score_write
from scores.tests.helpers import stored

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="statement-level triggers, TRUNCATE, xmin and row locks are PostgreSQL's",
)

# (attempted, correct, first_try_correct, solved, attempts_to_correct)
Counts = tuple[int, int, int, int, int]
Counters = dict[tuple[int, int], Counts]
NOTHING = (0, 0, 0, 0, 0)
COUNTED = ("attempted", "correct", "first_try_correct", "solved", "attempts_to_correct")


def counters() -> Counters:
    """The stored counters per (exercise, shard), leaving out rows that count nothing (a shard
    whose scores were all deleted keeps a row of zeros)."""
    rows = ExerciseStats.objects.values_list("exercise_id", "shard", *COUNTED)
    return {
        (exercise_id, shard): tuple(counts)
        for exercise_id, shard, *counts in rows
        if tuple(counts) != NOTHING
    }


def truth() -> Counters:
    """The counters computed directly from ``scores``."""
    rows = (
        Score.objects.order_by()
        .annotate(shard=F("user_id") % STATS_SHARDS)
        .values("exercise_id", "shard")
        .annotate(
            n=Count("id"),
            n_correct=Count("id", filter=Q(correct=True)),
            n_first_try=Count("id", filter=Q(first_attempt_correct=True)),
            n_solved=Count("attempts_to_correct"),
            to_correct=Coalesce(Sum("attempts_to_correct"), 0),
        )
    )
    return {
        (r["exercise_id"], r["shard"]): (
            r["n"],
            r["n_correct"],
            r["n_first_try"],
            r["n_solved"],
            r["to_correct"],
        )
        for r in rows
    }


def service_write(user_id: int, exercise_id: int, correct: bool) -> None:
    """One attempt through the write service, as the API makes it."""
    score_write(
        write=Write(user_id=user_id, exercise_id=exercise_id, correct=correct),
        recorded_by="test",
    )


def execute(sql: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def upsert_sql(rows: int) -> str:
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * rows)
    return (
        "INSERT INTO scores (user_id, exercise_id, correct, created_at, updated_at) "  # noqa: S608
        f"VALUES {values} ON CONFLICT (user_id, exercise_id) DO UPDATE "
        "SET correct = excluded.correct, updated_at = excluded.updated_at"
    )


def raw_upsert(*items: tuple[int, int, bool]) -> None:
    """One multi-row ``INSERT … ON CONFLICT DO UPDATE`` statement, bypassing the service: an
    inserted row gets the columns' defaults for its history (not a first-try success, not
    solved), an updated one keeps its history."""
    now = timezone.now()
    execute(upsert_sql(len(items)), [v for item in items for v in (*item, now, now)])


@pytest.fixture
def seeded() -> Counters:
    """Scores of two exercises over several shards (users 1, 17 and 33 share shard 1), written
    through the service; user 33 got exercise 1 right on the third attempt, then wrong."""
    for user_id, exercise_id, correct in (
        (1, 1, False),
        (17, 1, True),
        (2, 1, True),
        (33, 1, False),
        (33, 1, False),
        (33, 1, True),
        (33, 1, False),
        (1, 2, True),
        (5, 2, False),
    ):
        service_write(user_id, exercise_id, correct)
    return counters()


# --- Counters equal the truth after raw statements -----------------------------------------


@pytest.mark.django_db
def test_the_seeded_counters_are_the_truth_per_shard(seeded) -> None:
    assert seeded == {
        (1, 1): (3, 1, 1, 2, 4),  # 17 right first time; 33 right on the 3rd attempt
        (1, 2): (1, 1, 1, 1, 1),
        (2, 1): (1, 1, 1, 1, 1),
        (2, 5): (1, 0, 0, 0, 0),
    }
    assert seeded == truth()


@pytest.mark.django_db
def test_a_multi_row_upsert_mixing_inserts_and_updates_keeps_the_counters_true(seeded) -> None:
    raw_upsert(
        (1, 1, True),  # update: flips to correct
        (17, 1, True),  # update: unchanged
        (2, 1, False),  # update: flips to incorrect
        (49, 1, True),  # insert into the shard of users 1, 17 and 33
        (3, 1, False),  # insert into a new shard
        (5, 2, True),  # update of another exercise
        (7, 9, True),  # insert of a new exercise
    )

    assert stored() == [
        (1, 1, True),
        (1, 2, True),
        (2, 1, False),
        (3, 1, False),
        (5, 2, True),
        (7, 9, True),
        (17, 1, True),
        (33, 1, False),
        (49, 1, True),
    ]
    assert counters() == truth()
    assert counters() == {
        (1, 1): (4, 3, 1, 2, 4),
        (1, 2): (1, 0, 1, 1, 1),  # user 2 keeps their history: right first time
        (1, 3): (1, 0, 0, 0, 0),
        (2, 1): (1, 1, 1, 1, 1),
        (2, 5): (1, 1, 0, 0, 0),  # correct now, but no history says how
        (9, 7): (1, 1, 0, 0, 0),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "UPDATE scores SET correct = NOT correct WHERE exercise_id = 1",
            {(1, 1): (3, 2, 1, 2, 4), (1, 2): (1, 0, 1, 1, 1)},
        ),
        (
            "UPDATE scores SET correct = true",
            {(1, 1): (3, 3, 1, 2, 4), (2, 5): (1, 1, 0, 0, 0)},
        ),
        ("UPDATE scores SET correct = correct", {}),
        ("UPDATE scores SET updated_at = created_at", {}),
        ("UPDATE scores SET attempts = attempts + 1", {}),
        ("UPDATE scores SET user_id = user_id + 16 WHERE user_id = 2", {}),
        (
            "UPDATE scores SET user_id = 100 WHERE user_id = 2",
            {(1, 2): None, (1, 4): (1, 1, 1, 1, 1)},
        ),
        (
            "UPDATE scores SET exercise_id = 3 WHERE user_id = 5",
            {(2, 5): None, (3, 5): (1, 0, 0, 0, 0)},
        ),
        (
            "UPDATE scores SET first_attempt_correct = false WHERE exercise_id = 1",
            {(1, 1): (3, 1, 0, 2, 4), (1, 2): (1, 1, 0, 1, 1)},
        ),
        (
            "UPDATE scores SET attempts_to_correct = NULL WHERE user_id = 33",
            {(1, 1): (3, 1, 1, 1, 1)},
        ),
        # The update trigger must not pair old and new rows by id (fixed in migration 0003).
        pytest.param(
            "UPDATE scores SET id = id + 1000, correct = NOT correct WHERE exercise_id = 2",
            {(2, 1): (1, 0, 1, 1, 1), (2, 5): (1, 1, 0, 0, 0)},
            id="UPDATE scores SET id and correct",
        ),
        pytest.param(
            "UPDATE scores SET id = id + 1000, attempts_to_correct = 1 WHERE user_id = 33",
            {(1, 1): (3, 1, 1, 2, 2)},
            id="UPDATE scores SET id and attempts_to_correct",
        ),
        ("DELETE FROM scores WHERE user_id = 17", {(1, 1): (2, 0, 0, 1, 3)}),
        ("DELETE FROM scores WHERE exercise_id = 1", {(1, 1): None, (1, 2): None}),
        ("DELETE FROM scores", dict.fromkeys(((1, 1), (1, 2), (2, 1), (2, 5)))),
    ],
)
def test_raw_updates_and_deletes_keep_the_counters_true(seeded, sql, expected) -> None:
    execute(sql)

    after = {**seeded, **expected}
    assert counters() == {key: value for key, value in after.items() if value is not None}
    assert counters() == truth()


@postgresql_only
@pytest.mark.django_db
def test_truncate_empties_the_counters(seeded, admin) -> None:
    execute("TRUNCATE scores")

    assert stored() == []
    assert list(ExerciseStats.objects.values_list("exercise_id", "shard")) == []
    assert admin.get("/scores/stats/exercises").json()["results"] == []


@postgresql_only
@pytest.mark.django_db
def test_truncate_then_new_scores_count_from_zero(seeded) -> None:
    execute("TRUNCATE scores")
    raw_upsert((1, 1, True), (2, 1, False))

    assert counters() == truth() == {(1, 1): (1, 1, 0, 0, 0), (1, 2): (1, 0, 0, 0, 0)}


# --- Writes that change no counted value touch no counter ----------------------------------


def versions() -> dict[tuple[int, int], str]:
    """The row version (``xmin``) of every counter row: it changes whenever a row is written."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT exercise_id, shard, xmin::text FROM exercise_stats")
        return {(exercise, shard): xmin for exercise, shard, xmin in cursor.fetchall()}


@postgresql_only
@pytest.mark.django_db(transaction=True)  # each statement its own transaction, so its own xmin
@pytest.mark.parametrize(
    ("write", "touched"),
    [
        (lambda: execute("UPDATE scores SET updated_at = now()"), set()),
        (lambda: execute("UPDATE scores SET correct = correct"), set()),
        (lambda: execute("UPDATE scores SET user_id = user_id + 16 WHERE user_id = 2"), set()),
        (lambda: raw_upsert((1, 1, False), (17, 1, True), (5, 2, False)), set()),
        (lambda: service_write(17, 1, True), set()),
        (lambda: service_write(1, 1, False), set()),
        (lambda: raw_upsert((1, 1, True), (17, 1, True)), {(1, 1)}),
        (lambda: service_write(5, 2, True), {(2, 5)}),
        (lambda: execute("UPDATE scores SET correct = true WHERE exercise_id = 1"), {(1, 1)}),
        (lambda: execute("UPDATE scores SET attempts_to_correct = 2 WHERE user_id = 17"), {(1, 1)}),
    ],
    ids=[
        "touch-updated_at",
        "set-correct-to-itself",
        "move-to-a-user-of-the-same-shard",
        "upsert-repeating-correct",
        "service-upsert-repeating-correct",
        "service-upsert-repeating-incorrect",
        "upsert-flipping-one",
        "service-upsert-flipping-one",
        "update-flipping-some",
        "update-attempts_to_correct",
    ],
)
def test_only_writes_that_change_a_counted_value_touch_the_counters(
    seeded, write: Callable[[], Any], touched
) -> None:
    before = versions()

    write()

    after = versions()
    assert set(after) == set(before)
    assert {key for key in after if after[key] != before[key]} == touched
    assert counters() == truth()


# --- Concurrency: shards do not serialize writers of different users -----------------------


def uncommitted_upsert(conn: psycopg.Connection, user_id: int, correct: bool) -> None:
    now = timezone.now()
    conn.execute(upsert_sql(1), [user_id, 1, correct, now, now])


def upsert_in_a_thread(user_id: int, correct: bool, lock_timeout: str) -> BaseException | None:
    """Upsert (user_id, exercise 1) through the service in another thread, on its own Django
    connection, giving up after ``lock_timeout``; the error it raised, or None."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            with transaction.atomic():
                execute(f"SET LOCAL lock_timeout = '{lock_timeout}'")
                service_write(user_id, 1, correct)
            outcome.append(None)
        except BaseException as exc:  # reported to the test, which asserts on it
            outcome.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the upsert neither finished nor timed out"
    return outcome[0]


def is_lock_timeout(error: BaseException | None) -> bool:
    return isinstance(error, OperationalError) and isinstance(
        error.__cause__, psycopg.errors.LockNotAvailable
    )


@postgresql_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("end", ["commit", "rollback"])
@pytest.mark.parametrize(
    ("existing", "first", "others"),
    [
        ({}, {1: True}, {2: True, 17: True}),  # inserts
        ({1: False, 2: False, 17: False}, {1: True}, {2: True, 17: True}),  # flips of correct
    ],
    ids=["inserts", "flips"],
)
def test_an_open_upsert_blocks_only_writers_of_the_same_shard(
    held, existing, first, others, end
) -> None:
    assert 1 % STATS_SHARDS == 17 % STATS_SHARDS != 2 % STATS_SHARDS
    for user_id, correct in existing.items():
        service_write(user_id, 1, correct)
    conn = held()
    uncommitted_upsert(conn, 1, first[1])  # psycopg opens a transaction: not committed yet

    other_shard = upsert_in_a_thread(2, others[2], lock_timeout="2s")
    same_shard = upsert_in_a_thread(17, others[17], lock_timeout="200ms")

    assert other_shard is None
    assert is_lock_timeout(same_shard), repr(same_shard)
    getattr(conn, end)()
    expected = {**existing, 2: others[2]}
    if end == "commit":
        expected[1] = first[1]
    assert stored() == sorted((user_id, 1, correct) for user_id, correct in expected.items())
    assert counters() == truth()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_same_shard_writer_proceeds_once_the_open_upsert_commits(held) -> None:
    conn = held()
    uncommitted_upsert(conn, 1, True)
    conn.commit()

    assert upsert_in_a_thread(17, False, lock_timeout="2s") is None
    assert stored() == [(1, 1, True), (17, 1, False)]
    # User 1's raw insert has no history; user 17's write through the service has.
    assert counters() == truth() == {(1, 1): (2, 1, 0, 0, 0)}
