"""Attempt history: every write is logged, retries are idempotent, late results never win."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from scores.models import Attempt, ExerciseStats, Score
from scores.tests.conftest import OTHER_ID, USER_ID, bearer_client
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import iso, page, score_json, stored
from scores.tests.test_concurrency import THREADS, in_parallel

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - timedelta(days=1)


def at(minutes: int) -> str:
    return iso(T0 + timedelta(minutes=minutes))


def log() -> list[tuple[int, int, bool, bool, str]]:
    """The attempt log as (user_id, exercise_id, correct, applied, recorded_by), as written."""
    return list(
        Attempt.objects.order_by("id").values_list(
            "user_id", "exercise_id", "correct", "applied", "recorded_by"
        )
    )


def attempt_json(attempt: Attempt) -> dict:
    return {
        "id": attempt.id,
        "score_id": attempt.score_id,
        "user_id": attempt.user_id,
        "exercise_id": attempt.exercise_id,
        "correct": attempt.correct,
        "attempted_at": iso(attempt.attempted_at),
        "recorded_at": iso(attempt.recorded_at),
        "recorded_by": attempt.recorded_by,
        "attempt_id": None if attempt.attempt_id is None else str(attempt.attempt_id),
        "applied": attempt.applied,
        "points": None if attempt.points is None else float(attempt.points),
        "max_points": None if attempt.max_points is None else float(attempt.max_points),
        "reason": attempt.reason,
    }


# --- Every write path appends exactly one attempt -------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/scores", {"exercise_id": 7, "correct": True}),
        ("patch", "/scores", {"exercise_id": 7, "correct": True}),
        ("put", "/scores/user/7", {"correct": True}),
    ],
)
def test_each_user_write_path_logs_one_attempt(user, method, path, body) -> None:
    response = getattr(user, method)(path, body, format="json")

    assert response.status_code == 201
    assert log() == [(USER_ID, 7, True, True, str(USER_ID))]
    attempt = Attempt.objects.get()
    assert attempt.score_id == response.json()["id"]
    assert attempt.recorded_at == attempt.attempted_at  # no attempted_at: when recorded


@pytest.mark.parametrize("method", ["put", "patch"])
def test_an_update_by_id_logs_one_attempt(user, method) -> None:
    score = ScoreFactory(user_id=USER_ID, exercise_id=7, correct=False)

    response = getattr(user, method)(f"/scores/{score.id}", {"correct": True}, format="json")

    assert response.status_code == 200
    assert log() == [(USER_ID, 7, True, True, str(USER_ID))]


def test_a_bulk_write_logs_one_attempt_per_item_recorded_by_the_staff_account(staff) -> None:
    items = [{"user_id": u, "exercise_id": 3, "correct": u % 2 == 0} for u in range(1, 6)]

    response = staff.post("/scores/bulk", {"scores": items}, format="json")

    assert response.json() == {"created": 5, "updated": 0}
    assert log() == [(u, 3, u % 2 == 0, True, "grader") for u in range(1, 6)]


def test_a_staff_correction_in_the_admin_is_logged(admin_client) -> None:
    score = ScoreFactory(user_id=9, exercise_id=2, correct=False)

    response = admin_client.post(
        f"/admin/scores/score/{score.id}/change/",
        {"correct": "on", "reason": "Appeal upheld"},
        follow=False,
    )

    assert response.status_code == 302
    assert stored() == [(9, 2, True)]
    assert log() == [(9, 2, True, True, "admin")]


def test_the_admin_score_page_shows_its_attempts(admin_client, user) -> None:
    user.patch(
        "/scores", {"exercise_id": 2, "correct": False, "attempted_at": at(1)}, format="json"
    )
    user.patch("/scores", {"exercise_id": 2, "correct": True, "attempted_at": at(2)}, format="json")
    score = Score.objects.get()

    html = admin_client.get(f"/admin/scores/score/{score.id}/change/").content.decode()

    assert "Attempt log (oldest first)" in html
    assert html.count("<td>incorrect</td>") == 1
    assert html.count("<td>correct</td>") == 1


# --- attempts and first_correct_at ----------------------------------------------------------


def test_attempts_and_first_correct_at_follow_the_applied_attempts(user) -> None:
    for minute, correct in ((1, False), (2, False), (3, True), (4, False), (5, True)):
        response = user.patch(
            "/scores",
            {"exercise_id": 4, "correct": correct, "attempted_at": at(minute)},
            format="json",
        )

    assert response.json()["attempts"] == 5
    assert response.json()["first_correct_at"] == at(3)
    score = Score.objects.get()
    assert (score.first_attempt_correct, score.attempts_to_correct) == (False, 3)


def test_stats_count_first_try_successes_and_average_attempts_to_correct(admin, user, other):
    user.patch("/scores", {"exercise_id": 4, "correct": True}, format="json")  # 1st try
    for correct in (False, False, True):  # 3rd try
        other.patch("/scores", {"exercise_id": 4, "correct": correct}, format="json")
    admin.patch("/scores", {"exercise_id": 4, "correct": False}, format="json")  # not yet

    response = user.get("/scores/stats/exercises?exercise_id=4")

    assert response.json()["results"] == [
        {
            "exercise_id": 4,
            "attempted": 3,
            "correct": 2,
            "success_rate": 0.6667,
            "first_try_correct": 1,
            "avg_attempts_to_correct": 2.0,
            "avg_points_ratio": None,
        }
    ]


# --- Ordering ---------------------------------------------------------------------------------


def test_an_older_attempt_arriving_late_is_logged_but_does_not_apply(user) -> None:
    newer = user.patch(
        "/scores", {"exercise_id": 5, "correct": True, "attempted_at": at(10)}, format="json"
    )
    older = user.patch(
        "/scores", {"exercise_id": 5, "correct": False, "attempted_at": at(5)}, format="json"
    )

    assert older.status_code == 200
    assert older.json() == newer.json()  # the score, unchanged
    assert stored() == [(USER_ID, 5, True)]
    assert log() == [(USER_ID, 5, True, True, "4"), (USER_ID, 5, False, False, "4")]


def test_an_older_attempt_by_id_does_not_apply_either(user) -> None:
    user.patch(
        "/scores", {"exercise_id": 5, "correct": True, "attempted_at": at(10)}, format="json"
    )
    score = Score.objects.get()

    response = user.put(
        f"/scores/{score.id}", {"correct": False, "attempted_at": at(1)}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == score_json(score)
    assert stored() == [(USER_ID, 5, True)]


def test_an_attempt_with_the_same_timestamp_applies(user) -> None:
    user.patch(
        "/scores", {"exercise_id": 5, "correct": True, "attempted_at": at(10)}, format="json"
    )

    response = user.patch(
        "/scores", {"exercise_id": 5, "correct": False, "attempted_at": at(10)}, format="json"
    )

    assert response.json()["correct"] is False
    assert [applied for *_, applied, _ in log()] == [True, True]


def test_an_older_item_in_a_bulk_write_does_not_apply(staff) -> None:
    staff.patch(
        "/scores",
        {"user_id": 1, "exercise_id": 1, "correct": True, "attempted_at": at(10)},
        format="json",
    )
    items = [
        {"user_id": 1, "exercise_id": 1, "correct": False, "attempted_at": at(5)},
        {"user_id": 2, "exercise_id": 1, "correct": False, "attempted_at": at(5)},
    ]

    response = staff.post("/scores/bulk", {"scores": items}, format="json")

    assert response.json() == {"created": 1, "updated": 1}
    assert stored() == [(1, 1, True), (2, 1, False)]
    assert log()[1:] == [(1, 1, False, False, "grader"), (2, 1, False, True, "grader")]


# --- Idempotent retries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("post", "/scores", 201), ("patch", "/scores", 201), ("put", "/scores/user/6", 201)],
)
def test_a_replay_is_answered_as_the_first_time_and_changes_nothing(user, method, path, status):
    body = {"exercise_id": 6, "correct": True, "attempt_id": str(uuid.uuid4())}

    first = getattr(user, method)(path, body, format="json")
    again = getattr(user, method)(path, body, format="json")

    assert (first.status_code, again.status_code) == (status, status)
    assert again.json() == first.json()
    assert Attempt.objects.count() == 1
    assert Score.objects.get().attempts == 1


def test_a_replay_of_an_update_answers_200_with_the_score(user) -> None:
    user.patch("/scores", {"exercise_id": 6, "correct": False}, format="json")
    body = {"exercise_id": 6, "correct": True, "attempt_id": str(uuid.uuid4())}

    first = user.patch("/scores", body, format="json")
    again = user.patch("/scores", body, format="json")

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert Attempt.objects.count() == 2


def test_the_same_attempt_id_with_other_content_is_a_409_naming_the_fields(user) -> None:
    attempt_id = str(uuid.uuid4())
    user.patch(
        "/scores", {"exercise_id": 6, "correct": True, "attempt_id": attempt_id}, format="json"
    )

    response = user.patch(
        "/scores", {"exercise_id": 8, "correct": False, "attempt_id": attempt_id}, format="json"
    )

    assert response.status_code == 409
    assert response.json() == {
        "detail": "This attempt_id was already recorded with a different exercise_id, correct; "
        "a retry must repeat the first request exactly.",
        "errors": {
            "exercise_id": ["Differs from the recorded attempt."],
            "correct": ["Differs from the recorded attempt."],
        },
    }
    assert stored() == [(USER_ID, 6, True)]
    assert Attempt.objects.count() == 1


def test_another_user_with_the_same_attempt_id_writes_an_attempt_of_their_own(user, other):
    attempt_id = str(uuid.uuid4())
    first = user.patch(
        "/scores", {"exercise_id": 30, "correct": False, "attempt_id": attempt_id}, format="json"
    )

    response = other.patch(
        "/scores", {"exercise_id": 30, "correct": False, "attempt_id": attempt_id}, format="json"
    )

    assert (first.status_code, response.status_code) == (201, 201)
    assert (response.json()["user_id"], response.json()["id"]) == (OTHER_ID, first.json()["id"] + 1)
    assert stored() == [(USER_ID, 30, False), (OTHER_ID, 30, False)]
    assert Attempt.objects.filter(attempt_id=attempt_id).count() == 2


@pytest.mark.parametrize(
    "body",
    [
        {"exercise_id": 30, "correct": True},
        {"exercise_id": 31, "correct": False},
        {"exercise_id": 30, "correct": False, "attempted_at": "2026-01-01T00:00:00Z"},
    ],
    ids=["other-result", "other-exercise", "other-time"],
)
def test_nothing_of_another_users_attempt_shows_whatever_the_body(user, other, body) -> None:
    attempt_id = str(uuid.uuid4())
    user.patch(
        "/scores", {"exercise_id": 30, "correct": False, "attempt_id": attempt_id}, format="json"
    )

    response = other.patch("/scores", {**body, "attempt_id": attempt_id}, format="json")

    assert response.status_code == 201
    assert response.json()["user_id"] == OTHER_ID
    assert {key: response.json()[key] for key in ("exercise_id", "correct")} == {
        "exercise_id": body["exercise_id"],
        "correct": body["correct"],
    }


def test_a_grader_write_for_another_user_is_not_blocked_by_a_users_attempt_id(user, staff):
    attempt_id = str(uuid.uuid4())
    user.patch(
        "/scores", {"exercise_id": 30, "correct": False, "attempt_id": attempt_id}, format="json"
    )

    response = staff.patch(
        "/scores",
        {"user_id": 77, "exercise_id": 30, "correct": True, "attempt_id": attempt_id},
        format="json",
    )

    assert (response.status_code, response.json()["user_id"]) == (201, 77)


def test_a_bulk_item_replayed_is_skipped_and_a_changed_one_refuses_the_batch(staff) -> None:
    attempt_id = str(uuid.uuid4())
    item = {"user_id": 1, "exercise_id": 1, "correct": True, "attempt_id": attempt_id}
    staff.post("/scores/bulk", {"scores": [item]}, format="json")

    again = staff.post("/scores/bulk", {"scores": [item]}, format="json")
    changed = staff.post(
        "/scores/bulk",
        {"scores": [{"user_id": 2, "exercise_id": 1, "correct": True}, {**item, "correct": False}]},
        format="json",
    )

    assert again.json() == {"created": 0, "updated": 1}
    assert changed.status_code == 409
    assert changed.json()["errors"] == {
        "scores": {"1": {"correct": ["Differs from the recorded attempt."]}}
    }
    assert stored() == [(1, 1, True)]
    assert Attempt.objects.count() == 1


# --- Validation of the history fields ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"attempt_id": "not-a-uuid"},
            {"attempt_id": ["Must be a UUID, e.g. 3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b."]},
        ),
        (
            {"attempt_id": 12},
            {"attempt_id": ["Must be a UUID, e.g. 3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b."]},
        ),
        (
            {"attempted_at": "yesterday"},
            {"attempted_at": ["Must be an ISO 8601 timestamp, e.g. 2026-11-26T14:24:20Z."]},
        ),
        (
            {"attempted_at": 1700000000},
            {"attempted_at": ["Must be an ISO 8601 timestamp, e.g. 2026-11-26T14:24:20Z."]},
        ),
        (
            {"attempted_at": iso(timezone.now() + timedelta(days=1))},
            {"attempted_at": ["Must not be in the future."]},
        ),
        (
            {"attempted_at": "0001-01-01T00:00:00+01:00"},  # year 0 in UTC
            {"attempted_at": ["Must be from year 1 to 9999 once converted to UTC."]},
        ),
        ({"attempt_id": None}, {"attempt_id": ["This field may not be null."]}),
    ],
)
def test_bad_history_fields_are_a_400_naming_them(user, fields, errors) -> None:
    response = user.patch("/scores", {"exercise_id": 1, "correct": True, **fields}, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid input.", "errors": errors}
    assert Attempt.objects.count() == Score.objects.count() == 0


def test_a_naive_attempted_at_is_utc(user) -> None:
    naive = (T0 + timedelta(minutes=1)).replace(tzinfo=None).isoformat()

    user.patch("/scores", {"exercise_id": 1, "correct": True, "attempted_at": naive}, format="json")

    assert Attempt.objects.get().attempted_at == T0 + timedelta(minutes=1)


def test_an_attempted_at_with_an_offset_postgresql_refuses_is_stored_in_utc(user) -> None:
    response = user.patch(
        "/scores",
        {"exercise_id": 1, "correct": True, "attempted_at": "2026-01-01T12:00:00+16:15"},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["first_correct_at"] == "2025-12-31T19:45:00Z"
    assert Attempt.objects.get().attempted_at == datetime(2025, 12, 31, 19, 45, tzinfo=UTC)


# --- The attempts endpoints -------------------------------------------------------------------


def test_a_scores_attempts_oldest_first_for_its_owner(user) -> None:
    for minute in (3, 1, 2):  # arrives out of order
        user.patch(
            "/scores",
            {"exercise_id": 2, "correct": True, "attempted_at": at(minute)},
            format="json",
        )
    score = Score.objects.get()
    expected = [attempt_json(a) for a in Attempt.objects.order_by("attempted_at")]

    by_id = user.get(f"/scores/{score.id}/attempts")
    by_exercise = user.get("/scores/user/2/attempts")

    assert by_id.json() == by_exercise.json() == page(expected)
    assert [a["attempted_at"] for a in expected] == [at(1), at(2), at(3)]


def test_attempts_are_paginated(user) -> None:
    for minute in range(5):
        user.patch(
            "/scores",
            {"exercise_id": 2, "correct": True, "attempted_at": at(minute)},
            format="json",
        )

    first = user.get("/scores/user/2/attempts?page_size=2")
    second = user.get(first.json()["next"])
    third = user.get(second.json()["next"])

    times = [a["attempted_at"] for r in (first, second, third) for a in r.json()["results"]]
    assert times == [at(minute) for minute in range(5)]
    assert third.json()["next"] is None


def test_another_users_attempts_are_not_found(user, other) -> None:
    user.patch("/scores", {"exercise_id": 2, "correct": True}, format="json")
    score = Score.objects.get()

    assert other.get(f"/scores/{score.id}/attempts").status_code == 404
    assert other.get(f"/scores/user/2/attempts?user_id={USER_ID}").status_code == 404
    assert other.get("/scores/user/2/attempts").status_code == 404


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_privileged_callers_read_anyones_attempts(caller, request, user) -> None:
    user.patch("/scores", {"exercise_id": 2, "correct": True}, format="json")
    score = Score.objects.get()
    client = request.getfixturevalue(caller)

    assert client.get(f"/scores/{score.id}/attempts").status_code == 200
    assert len(client.get(f"/scores/user/2/attempts?user_id={USER_ID}").json()["results"]) == 1


def test_attempts_need_credentials(anon) -> None:
    assert anon.get("/scores/1/attempts").status_code == 401


# --- Concurrency on PostgreSQL ----------------------------------------------------------------

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="concurrency is a PostgreSQL property"
)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_writes_of_one_pair_count_exactly_the_applied_attempts(users_service) -> None:
    token = users_service.user(USER_ID)
    bearer_client(token).get("/scores")

    responses = in_parallel(
        lambda i: bearer_client(token).patch(
            "/scores",
            {"exercise_id": 9, "correct": i % 3 == 0, "attempted_at": at(i % 7)},
            format="json",
        )
    )

    assert Counter(r.status_code for r in responses) == {201: 1, 200: THREADS - 1}
    score = Score.objects.get()
    assert Attempt.objects.filter(score_id=score.id).count() == THREADS
    assert score.attempts == Attempt.objects.filter(score_id=score.id, applied=True).count()
    assert iso(score.last_attempted_at) == at(6)  # the newest attempt won, whatever the order
    assert ExerciseStats.objects.filter(exercise_id=9).count() == 1


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_of_one_attempt_id_log_one_attempt(users_service) -> None:
    token = users_service.user(USER_ID)
    bearer_client(token).get("/scores")
    body = {"exercise_id": 9, "correct": True, "attempt_id": str(uuid.uuid4())}

    responses = in_parallel(lambda i: bearer_client(token).patch("/scores", body, format="json"))

    assert Counter(r.status_code for r in responses) == {201: THREADS}
    assert len({r.content for r in responses}) == 1
    assert Attempt.objects.count() == 1
    assert Score.objects.get().attempts == 1


# --- The data migration -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_history_migration_gives_existing_scores_one_applied_attempt_each() -> None:
    from django.db.migrations.executor import MigrationExecutor

    before, after = (
        ("scores", "0002_exercise_indexes_and_stats"),
        ("scores", "0003_attempt_history"),
    )
    MigrationExecutor(connection).migrate([before])
    try:
        when = T0
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO scores (user_id, exercise_id, correct, created_at, updated_at) "
                "VALUES (%s, 1, %s, %s, %s), (%s, 1, %s, %s, %s), (%s, 2, %s, %s, %s)",
                [1, True, when, when, 2, False, when, when, 17, True, when, when],
            )
        MigrationExecutor(connection).migrate([after])

        rows = Score.objects.order_by("user_id").values_list(
            "user_id",
            "attempts",
            "last_attempted_at",
            "first_correct_at",
            "first_attempt_correct",
            "attempts_to_correct",
        )
        assert list(rows) == [
            (1, 1, when, when, True, 1),
            (2, 1, when, None, False, None),
            (17, 1, when, when, True, 1),
        ]
        assert log() == [
            (1, 1, True, True, "migration"),
            (2, 1, False, True, "migration"),
            (17, 2, True, True, "migration"),
        ]
        stats = {
            row["exercise_id"]: row
            for row in ExerciseStats.objects.values("exercise_id").annotate(
                **{
                    f: Sum(f)
                    for f in (
                        "attempted",
                        "correct",
                        "first_try_correct",
                        "solved",
                        "attempts_to_correct",
                    )
                }
            )
        }
        assert [stats[1]["attempted"], stats[1]["correct"], stats[1]["first_try_correct"]] == [
            2,
            1,
            1,
        ]
        assert [stats[2]["solved"], stats[2]["attempts_to_correct"]] == [1, 1]
    finally:
        MigrationExecutor(connection).migrate(
            MigrationExecutor(connection).loader.graph.leaf_nodes()
        )
