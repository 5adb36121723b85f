"""The Score model against the real database: timestamps, constraints and column defaults.

Integrity is the database's job, so every constraint is shown refusing a row, whether it comes
through the ORM or as raw SQL that bypasses it.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scores.models import MAX_ID, Score
from scores.tests.factories import ScoreFactory

pytestmark = pytest.mark.django_db

COLUMNS = ["id", "user_id", "exercise_id", "correct", "created_at", "updated_at"]


def insert(**columns: Any) -> None:
    """INSERT one row into ``scores`` with raw SQL: only the given columns, values bound."""
    names = ", ".join(columns)
    placeholders = ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO scores ({names}) VALUES ({placeholders})"  # noqa: S608 (our column names)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*columns.values()])


def stored() -> list[tuple[int, int, bool]]:
    return list(Score.objects.values_list("user_id", "exercise_id", "correct"))


def not_null_violation(column: str) -> str:
    """The database's message for a NULL in ``column``, as a pattern."""
    message = {
        "postgresql": f'null value in column "{column}" of relation "scores"',
        "sqlite": f"NOT NULL constraint failed: scores.{column}",
    }[connection.vendor]
    return re.escape(message)


def utc_offsets(score: Score) -> list[timedelta | None]:
    return [score.created_at.utcoffset(), score.updated_at.utcoffset()]


def test_adding_a_score_stores_every_field_and_both_timestamps_in_aware_utc() -> None:
    before = timezone.now()
    score = ScoreFactory(user_id=7, exercise_id=3, correct=True)
    after = timezone.now()

    stored_score = Score.objects.get()
    assert {
        field: getattr(stored_score, field) for field in ("id", "user_id", "exercise_id", "correct")
    } == {"id": score.id, "user_id": 7, "exercise_id": 3, "correct": True}
    assert utc_offsets(stored_score) == [timedelta(0), timedelta(0)]
    assert before <= stored_score.created_at <= stored_score.updated_at <= after


def test_two_scores_added_more_than_a_second_apart_have_different_created_at() -> None:
    """The old service's bug: created_at was a default computed once, when the module loaded."""
    first = ScoreFactory()
    time.sleep(1.1)  # real time, on purpose: a default frozen at import would not move
    second = ScoreFactory()

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.created_at < second.created_at


def test_saving_a_score_again_moves_updated_at_and_leaves_created_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    score = ScoreFactory(correct=False)
    score.refresh_from_db()
    created_at = score.created_at
    later = score.updated_at + timedelta(minutes=5)
    monkeypatch.setattr(timezone, "now", lambda: later)

    score.correct = True
    score.save()

    again = Score.objects.get(pk=score.pk)
    assert (again.created_at, again.updated_at, again.correct) == (created_at, later, True)


def test_the_database_refuses_a_second_score_of_one_user_for_one_exercise() -> None:
    ScoreFactory(user_id=7, exercise_id=3, correct=True)

    with (
        pytest.raises(
            IntegrityError,
            match=r"scores_user_exercise_uniq|UNIQUE constraint failed: scores\.user_id, "
            r"scores\.exercise_id",
        ),
        transaction.atomic(),
    ):
        Score.objects.create(user_id=7, exercise_id=3, correct=False)

    assert stored() == [(7, 3, True)]


@pytest.mark.parametrize(
    ("user_id", "exercise_id"),
    [
        pytest.param(7, 4, id="same-user-other-exercise"),
        pytest.param(8, 3, id="other-user-same-exercise"),
    ],
)
def test_the_uniqueness_is_of_the_pair_so_sharing_one_id_is_allowed(
    user_id: int, exercise_id: int
) -> None:
    ScoreFactory(user_id=7, exercise_id=3, correct=True)

    ScoreFactory(user_id=user_id, exercise_id=exercise_id, correct=False)

    assert sorted(stored()) == sorted([(7, 3, True), (user_id, exercise_id, False)])


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("field", ["user_id", "exercise_id"])
def test_the_database_refuses_an_id_that_is_not_positive(field: str, value: int) -> None:
    with (
        pytest.raises(IntegrityError, match=f"scores_{field}_positive"),
        transaction.atomic(),
    ):
        ScoreFactory(**{field: value})

    assert stored() == []


@pytest.mark.parametrize("value", [1, MAX_ID])
def test_the_smallest_and_the_largest_ids_are_accepted(value: int) -> None:
    ScoreFactory(user_id=value, exercise_id=value, correct=True)

    assert stored() == [(value, value, True)]


@pytest.mark.parametrize("column", COLUMNS)
def test_the_database_refuses_null_in_every_column(column: str) -> None:
    if column == "id" and connection.vendor == "sqlite":
        pytest.skip("SQLite gives a NULL INTEGER PRIMARY KEY the next rowid instead of refusing")
    now = timezone.now()
    row = {"user_id": 7, "exercise_id": 3, "correct": True, "created_at": now, "updated_at": now}

    with pytest.raises(IntegrityError, match=not_null_violation(column)), transaction.atomic():
        insert(**{**row, column: None})

    assert stored() == []


@pytest.mark.parametrize("column", ["user_id", "exercise_id", "correct"])
def test_a_raw_insert_without_a_column_that_has_no_default_is_refused(column: str) -> None:
    row = {"user_id": 7, "exercise_id": 3, "correct": True}
    del row[column]

    with pytest.raises(IntegrityError, match=not_null_violation(column)), transaction.atomic():
        insert(**row)

    assert stored() == []


def test_a_raw_insert_gets_created_at_and_updated_at_from_the_database_default() -> None:
    # SQLite's clock may keep whole seconds only, so the lower bound is rounded down.
    before = timezone.now().replace(microsecond=0)
    insert(user_id=7, exercise_id=3, correct=True)
    after = timezone.now()

    score = Score.objects.get()
    assert (score.user_id, score.exercise_id, score.correct) == (7, 3, True)
    assert utc_offsets(score) == [timedelta(0), timedelta(0)]
    assert score.created_at == score.updated_at
    assert before <= score.created_at <= after


@pytest.mark.parametrize(
    ("correct", "text"),
    [
        (True, "user 4 / exercise 12: correct"),
        (False, "user 4 / exercise 12: incorrect"),
    ],
)
def test_a_score_reads_as_its_user_exercise_and_verdict(correct: bool, text: str) -> None:
    assert str(ScoreFactory.build(user_id=4, exercise_id=12, correct=correct)) == text
