"""Lists: cursor pagination by id, filters, and 400s for bad parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from scores.models import Score
from scores.tests.conftest import USER_ID
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import iso, score_json

pytestmark = pytest.mark.django_db


def ids(response) -> list[int]:
    return [row["id"] for row in response.json()["results"]]


def test_pages_follow_the_next_link_in_id_order(staff) -> None:
    scores = ScoreFactory.create_batch(5)

    first = staff.get("/scores?page_size=2")
    second = staff.get(first.json()["next"])
    third = staff.get(second.json()["next"])

    assert ids(first) + ids(second) + ids(third) == [s.id for s in scores]
    assert first.json()["previous"] is None
    assert second.json()["previous"] is not None
    assert third.json()["next"] is None
    assert parse_qs(urlsplit(first.json()["next"]).query)["page_size"] == ["2"]


def test_a_page_is_stable_when_rows_are_inserted_before_it(staff) -> None:
    ScoreFactory.create_batch(3)
    first = staff.get("/scores?page_size=2")
    ScoreFactory(user_id=1, exercise_id=1)  # a new row, after the cursor

    second = staff.get(first.json()["next"])

    assert len(ids(second)) == 2
    assert set(ids(first)).isdisjoint(ids(second))


def test_page_size_defaults_to_100_and_is_capped_at_1000(staff) -> None:
    Score.objects.bulk_create(
        Score(user_id=user, exercise_id=1, correct=True) for user in range(1, 1006)
    )

    default = staff.get("/scores")
    capped = staff.get("/scores?page_size=5000")

    assert len(ids(default)) == 100
    assert len(ids(capped)) == 1000
    assert capped.json()["next"] is not None


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("exercise_id=abc", "exercise_id", "Enter a whole number."),
        ("exercise_id=0", "exercise_id", "Ensure this value is greater than or equal to 1."),
        (
            "exercise_id=2147483648",
            "exercise_id",
            "Ensure this value is less than or equal to 2147483647.",
        ),
        ("user_id=1.5", "user_id", "Enter a whole number."),
        ("user_id=-1", "user_id", "Ensure this value is greater than or equal to 1."),
        (
            "correct=maybe",
            "correct",
            "Select a valid choice. maybe is not one of the available choices.",
        ),
        ("updated_after=yesterday", "updated_after", "Enter a valid date/time."),
        ("updated_before=2026-13-01T00:00:00Z", "updated_before", "Enter a valid date/time."),
        (
            "updated_after=0001-01-01T00:00:00%2B01:00",  # year 0 in UTC
            "updated_after",
            "Must be from year 1 to 9999 once converted to UTC.",
        ),
        ("page_size=abc", "page_size", "Must be a positive integer."),
        ("page_size=0", "page_size", "Must be a positive integer."),
        ("cursor=garbage", "cursor", "Invalid cursor."),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(user, query, field, message) -> None:
    response = user.get(f"/scores?{query}")

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid input.", "errors": {field: [message]}}


def test_filters_combine(staff) -> None:
    now = timezone.now()
    match = ScoreFactory(user_id=8, exercise_id=3, correct=True)
    ScoreFactory(user_id=8, exercise_id=4, correct=True)
    ScoreFactory(user_id=8, exercise_id=5, correct=False)
    ScoreFactory(user_id=9, exercise_id=3, correct=True)
    Score.objects.filter(id=match.id).update(updated_at=now)

    response = staff.get(
        "/scores",
        {
            "user_id": 8,
            "exercise_id": 3,
            "correct": "true",
            "updated_after": iso(now - timedelta(seconds=1)),
            "updated_before": iso(now + timedelta(seconds=1)),
        },
    )

    assert response.status_code == 200
    assert response.json()["results"] == [score_json(match)]


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("false", False), ("0", False)]
)
def test_correct_filter_accepts_true_false_1_0(user, value, expected) -> None:
    ScoreFactory(user_id=USER_ID, exercise_id=1, correct=True)
    ScoreFactory(user_id=USER_ID, exercise_id=2, correct=False)

    response = user.get(f"/scores?correct={value}")

    assert [row["correct"] for row in response.json()["results"]] == [expected]


def test_updated_after_is_inclusive_and_updated_before_exclusive(staff) -> None:
    moment = timezone.now().replace(microsecond=0)
    early, exact, late = ScoreFactory.create_batch(3)
    for score, when in (
        (early, moment - timedelta(hours=1)),
        (exact, moment),
        (late, moment + timedelta(hours=1)),
    ):
        Score.objects.filter(id=score.id).update(updated_at=when)

    after = staff.get("/scores", {"updated_after": iso(moment)})
    before = staff.get("/scores", {"updated_before": iso(moment)})
    naive = staff.get("/scores", {"updated_after": moment.replace(tzinfo=None).isoformat()})

    assert ids(after) == [exact.id, late.id]
    assert ids(before) == [early.id]
    assert ids(naive) == [exact.id, late.id]  # no offset: UTC


def test_a_time_filter_with_an_offset_postgresql_refuses_is_that_instant(staff) -> None:
    score = ScoreFactory()
    Score.objects.filter(id=score.id).update(updated_at=datetime(2026, 1, 1, 0, 0, tzinfo=UTC))

    before = staff.get("/scores", {"updated_before": "2026-01-01T16:15:01+16:15"})
    after = staff.get("/scores", {"updated_after": "2026-01-01T16:15:01+16:15"})

    assert (before.status_code, ids(before)) == (200, [score.id])
    assert (after.status_code, ids(after)) == (200, [])


def test_own_scores_list_is_paginated_and_filtered_too(user) -> None:
    for exercise in range(1, 6):
        ScoreFactory(user_id=USER_ID, exercise_id=exercise, correct=exercise % 2 == 0)

    first = user.get("/scores/user?page_size=1&correct=true")
    second = user.get(first.json()["next"])

    assert [r["exercise_id"] for r in first.json()["results"] + second.json()["results"]] == [2, 4]
    assert second.json()["next"] is None
