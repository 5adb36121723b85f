"""A user's progress summary and the per-exercise statistics, which must always equal a direct
GROUP BY over ``scores`` however the scores were written (late attempts and replays included)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db.models import Count, FloatField, Q, Sum
from django.db.models.functions import Cast
from rest_framework.test import APIClient

from scores.models import MAX_ID, Score
from scores.services import Write, score_write
from scores.tests.conftest import ADMIN_ID, OTHER_ID, USER_ID
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import iso, page, stored

pytestmark = pytest.mark.django_db

CALLERS = ["user", "other", "admin", "staff"]
PRIVILEGED = ["admin", "staff"]

# --- GET /scores/summary -------------------------------------------------------------------


def summary(
    user_id: int,
    attempted: int,
    correct: int,
    last: str | None,
    points: float = 0,
    max_points: float = 0,
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "attempted": attempted,
        "correct": correct,
        "incorrect": attempted - correct,
        "last_updated_at": last,
        "points": points,
        "max_points": max_points,
    }


@pytest.fixture
def progress() -> datetime:
    """User 4: three scores (two correct), the latest updated at the returned instant; user 5:
    one incorrect score, updated later (it must not count for user 4)."""
    latest = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    for exercise, correct, updated_at in (
        (1, True, datetime(2026, 1, 1, tzinfo=UTC)),
        (2, False, latest),
        (3, True, datetime(2026, 2, 1, 8, 0, 0, 1, tzinfo=UTC)),
    ):
        score = ScoreFactory(user_id=USER_ID, exercise_id=exercise, correct=correct)
        Score.objects.filter(id=score.id).update(updated_at=updated_at)
    other = ScoreFactory(user_id=OTHER_ID, exercise_id=1, correct=False)
    Score.objects.filter(id=other.id).update(updated_at=datetime(2026, 4, 1, tzinfo=UTC))
    return latest


def test_summary_counts_the_callers_own_scores(user, progress) -> None:
    response = user.get("/scores/summary")

    assert response.status_code == 200
    assert response.json() == summary(USER_ID, 3, 2, "2026-03-01T12:30:15.123456Z")
    assert response.json()["last_updated_at"] == iso(progress)


def test_summary_naming_the_callers_own_user_id_is_allowed(user, progress) -> None:
    response = user.get(f"/scores/summary?user_id={USER_ID}")

    assert response.status_code == 200
    assert response.json() == summary(USER_ID, 3, 2, "2026-03-01T12:30:15.123456Z")


@pytest.mark.parametrize("caller", ["user", "admin"])
def test_summary_of_a_caller_without_scores_is_zeros_and_null(caller, request) -> None:
    ScoreFactory(user_id=OTHER_ID, exercise_id=1, correct=True)
    expected_user = {"user": USER_ID, "admin": ADMIN_ID}[caller]

    response = request.getfixturevalue(caller).get("/scores/summary")

    assert response.status_code == 200
    assert response.json() == summary(expected_user, 0, 0, None)


@pytest.mark.parametrize("caller", PRIVILEGED)
@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        (USER_ID, summary(USER_ID, 3, 2, "2026-03-01T12:30:15.123456Z")),
        (OTHER_ID, summary(OTHER_ID, 1, 0, "2026-04-01T00:00:00Z")),
        (99, summary(99, 0, 0, None)),
    ],
)
def test_summary_of_any_user_named_by_a_privileged_caller(
    caller, request, progress, user_id, expected
) -> None:
    response = request.getfixturevalue(caller).get(f"/scores/summary?user_id={user_id}")

    assert response.status_code == 200
    assert response.json() == expected


def test_summary_of_an_admin_without_user_id_is_the_admins_own(admin, progress) -> None:
    ScoreFactory(user_id=ADMIN_ID, exercise_id=9, correct=True)
    Score.objects.filter(user_id=ADMIN_ID).update(updated_at=datetime(2026, 5, 5, tzinfo=UTC))

    response = admin.get("/scores/summary")

    assert response.status_code == 200
    assert response.json() == summary(ADMIN_ID, 1, 1, "2026-05-05T00:00:00Z")


def test_summary_by_a_staff_account_must_name_the_user(staff, progress) -> None:
    response = staff.get("/scores/summary")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid input.",
        "errors": {"user_id": ["This field is required for staff and service accounts."]},
    }


def test_summary_of_another_user_is_forbidden_to_a_user(user, progress) -> None:
    response = user.get(f"/scores/summary?user_id={OTHER_ID}")

    assert response.status_code == 403
    assert response.json() == {"detail": "You may only read and write your own scores."}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "Must be an integer."),
        ("1.5", "Must be an integer."),
        ("-1", "Must be an integer."),
        ("", "Must be an integer."),
        ("0", f"Must be an integer from 1 to {MAX_ID}."),
        (str(MAX_ID + 1), f"Must be an integer from 1 to {MAX_ID}."),
    ],
)
@pytest.mark.parametrize("caller", ["user", "staff"])
def test_summary_with_a_bad_user_id_is_a_400_naming_it(caller, request, value, message) -> None:
    response = request.getfixturevalue(caller).get("/scores/summary", {"user_id": value})

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid input.", "errors": {"user_id": [message]}}


def test_summary_requires_credentials(anon, progress) -> None:
    response = anon.get("/scores/summary")

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"] == 'Bearer realm="evalsvc"'


def test_summary_is_refused_to_a_django_account_that_is_neither_staff_nor_a_platform_user(
    non_staff,
) -> None:
    response = non_staff.get("/scores/summary?user_id=4")

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Only platform users and staff accounts may use the scores API."
    }


@pytest.mark.parametrize(("caller", "queries"), [("user", 1), ("staff", 2)])
def test_summary_costs_one_query_once_the_token_verdict_is_cached(
    caller, queries, request, progress, django_assert_max_num_queries
) -> None:
    client = request.getfixturevalue(caller)
    client.get("/scores/summary")  # caches the users service's verdict for a bearer token

    # One aggregate query; a staff token costs one more, its lookup (DRF tokens are not cached).
    with django_assert_max_num_queries(queries):
        response = client.get(f"/scores/summary?user_id={USER_ID}")

    assert response.json() == summary(USER_ID, 3, 2, "2026-03-01T12:30:15.123456Z")


# --- GET /scores/stats/exercises -----------------------------------------------------------


def rate(numerator: float, denominator: int) -> float:
    """Rounded to 4 places, an exact half up (as documented; not Python's round-half-even)."""
    exact = Decimal(repr(numerator)) / Decimal(denominator)
    return float(exact.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def truth() -> list[dict[str, Any]]:
    """The statistics computed directly from ``scores``, the way the counters must add up."""
    rows = (
        Score.objects.order_by("exercise_id")
        .values("exercise_id")
        .annotate(
            n=Count("id"),
            n_correct=Count("id", filter=Q(correct=True)),
            n_first_try=Count("id", filter=Q(first_attempt_correct=True)),
            n_solved=Count("attempts_to_correct"),
            to_correct=Sum("attempts_to_correct"),
            n_scored=Count("points"),
            ratio_sum=Sum(Cast("points", FloatField()) / Cast("max_points", FloatField())),
        )
    )
    return [
        {
            "exercise_id": row["exercise_id"],
            "attempted": row["n"],
            "correct": row["n_correct"],
            "success_rate": rate(row["n_correct"], row["n"]),
            "first_try_correct": row["n_first_try"],
            "avg_attempts_to_correct": (
                rate(row["to_correct"], row["n_solved"]) if row["n_solved"] else None
            ),
            "avg_points_ratio": (
                rate(row["ratio_sum"], row["n_scored"]) if row["n_scored"] else None
            ),
        }
        for row in rows
    ]


def stat(
    exercise_id: int,
    attempted: int,
    correct: int,
    first_try: int,
    avg: float | None,
    points_ratio: float | None = None,
) -> dict[str, Any]:
    """One row of ``/scores/stats/exercises``."""
    return {
        "exercise_id": exercise_id,
        "attempted": attempted,
        "correct": correct,
        "success_rate": rate(correct, attempted),
        "first_try_correct": first_try,
        "avg_attempts_to_correct": avg,
        "avg_points_ratio": points_ratio,
    }


def stats_of(client: APIClient, query: str = "page_size=1000") -> list[dict[str, Any]]:
    response = client.get(f"/scores/stats/exercises?{query}")
    assert response.status_code == 200
    assert response.json()["next"] is None
    return response.json()["results"]


def add_scores(exercise_id: int, verdicts: dict[int, bool | list[bool]]) -> None:
    """Each user's attempts at the exercise, in order, through the write service (one verdict:
    a single attempt)."""
    for user_id, attempts in verdicts.items():
        for correct in attempts if isinstance(attempts, list) else [attempts]:
            score_write(
                write=Write(user_id=user_id, exercise_id=exercise_id, correct=correct),
                recorded_by="test",
            )


@pytest.fixture
def exercises() -> None:
    """Four exercises, their users spread over several counter shards (1 and 17 share one)."""
    # 1/3 correct; right first time: user 2 (later wrong); solved in 3 and 1 attempts.
    add_scores(3, {1: [False, False, True], 17: False, 2: [True, False]})
    add_scores(5, {4: True, 20: [False, True]})  # 2/2; one first time; 1 and 2 attempts
    add_scores(8, {5: [False, False]})  # 0/1: nobody solved it
    add_scores(12, {1: True, 2: [False, True, True], 33: [False, False]})  # 2/3; 1 and 2


EXERCISES = [
    {
        "exercise_id": 3,
        "attempted": 3,
        "correct": 1,
        "success_rate": 0.3333,
        "first_try_correct": 1,
        "avg_attempts_to_correct": 2.0,
        "avg_points_ratio": None,
    },
    {
        "exercise_id": 5,
        "attempted": 2,
        "correct": 2,
        "success_rate": 1.0,
        "first_try_correct": 1,
        "avg_attempts_to_correct": 1.5,
        "avg_points_ratio": None,
    },
    {
        "exercise_id": 8,
        "attempted": 1,
        "correct": 0,
        "success_rate": 0.0,
        "first_try_correct": 0,
        "avg_attempts_to_correct": None,
        "avg_points_ratio": None,
    },
    {
        "exercise_id": 12,
        "attempted": 3,
        "correct": 2,
        "success_rate": 0.6667,
        "first_try_correct": 1,
        "avg_attempts_to_correct": 1.5,
        "avg_points_ratio": None,
    },
]


@pytest.mark.parametrize("caller", CALLERS)
def test_stats_per_exercise_for_any_authenticated_caller(caller, request, exercises) -> None:
    response = request.getfixturevalue(caller).get("/scores/stats/exercises")

    assert response.status_code == 200
    assert response.json() == page(EXERCISES)
    assert response.json()["results"] == truth()


def test_stats_counts_are_json_integers(user, exercises) -> None:
    response = user.get("/scores/stats/exercises")

    first, _, none_solved, _ = response.json()["results"]
    counts = ("exercise_id", "attempted", "correct", "first_try_correct")
    assert [type(first[key]) for key in counts] == [int] * 4
    assert [type(first[key]) for key in ("success_rate", "avg_attempts_to_correct")] == [float] * 2
    assert (
        b'"attempted":3,"correct":1,"success_rate":0.3333,'
        b'"first_try_correct":1,"avg_attempts_to_correct":2.0' in response.content
    )
    assert none_solved["avg_attempts_to_correct"] is None
    assert b'"first_try_correct":0,"avg_attempts_to_correct":null' in response.content


def test_stats_with_no_scores_is_an_empty_page(user) -> None:
    response = user.get("/scores/stats/exercises")

    assert response.status_code == 200
    assert response.json() == page([])


@pytest.mark.parametrize(
    ("correct", "attempted", "expected"),
    [(1, 3, 0.3333), (2, 3, 0.6667), (1, 8, 0.125), (5, 7, 0.7143), (1, 1, 1.0), (0, 4, 0.0)],
)
def test_stats_success_rate_is_rounded_to_4_places(user, correct, attempted, expected) -> None:
    add_scores(1, {user_id: user_id <= correct for user_id in range(1, attempted + 1)})

    response = user.get("/scores/stats/exercises")

    assert response.json() == page(
        [
            {
                "exercise_id": 1,
                "attempted": attempted,
                "correct": correct,
                "success_rate": expected,
                "first_try_correct": correct,  # one attempt each
                "avg_attempts_to_correct": 1.0 if correct else None,
                "avg_points_ratio": None,
            }
        ]
    )


# An exact tie in the 5th place rounds up (Decimal ROUND_HALF_UP), not to even as Python's
# round() would (0.0312, 0.1562).
@pytest.mark.parametrize(("correct", "attempted", "expected"), [(1, 32, 0.0313), (5, 32, 0.1563)])
def test_stats_success_rate_rounds_an_exact_half_up(user, correct, attempted, expected) -> None:
    add_scores(1, {user_id: user_id <= correct for user_id in range(1, attempted + 1)})

    response = user.get("/scores/stats/exercises")

    assert response.json()["results"][0]["success_rate"] == expected
    assert response.json()["results"] == truth()


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        ([1, 2, 2], 1.6667),  # 5/3
        ([1, 1, 2], 1.3333),  # 4/3
        ([2] + [1] * 31, 1.0313),  # 33/32 = 1.03125: a tie, rounded up
        ([6] + [1] * 31, 1.1563),  # 37/32 = 1.15625
        ([3, 4], 3.5),
    ],
)
def test_stats_avg_attempts_to_correct_is_rounded_to_4_places_half_up(
    user, attempts, expected
) -> None:
    add_scores(
        1,
        {
            user_id: [False] * (count - 1) + [True]
            for user_id, count in enumerate(attempts, start=1)
        },
    )

    (row,) = user.get("/scores/stats/exercises").json()["results"]

    assert row["avg_attempts_to_correct"] == expected
    assert row["first_try_correct"] == attempts.count(1)
    assert [row] == truth()


def test_stats_pages_follow_the_next_link_in_exercise_order(user, exercises) -> None:
    first = user.get("/scores/stats/exercises?page_size=3")
    second = user.get(first.json()["next"])

    assert first.status_code == second.status_code == 200
    assert first.json()["results"] == EXERCISES[:3]
    assert first.json()["previous"] is None
    assert parse_qs(urlsplit(first.json()["next"]).query)["page_size"] == ["3"]
    assert second.json()["results"] == EXERCISES[3:]
    assert second.json()["next"] is None
    assert second.json()["previous"] is not None


def test_stats_previous_link_leads_back_to_the_first_page(user, exercises) -> None:
    first = user.get("/scores/stats/exercises?page_size=2")
    second = user.get(first.json()["next"])

    back = user.get(second.json()["previous"])

    assert second.json()["results"] == EXERCISES[2:]
    assert back.status_code == 200
    assert back.json()["results"] == EXERCISES[:2]
    assert back.json()["previous"] is None


def test_stats_page_size_defaults_to_100_and_is_capped_at_1000(user) -> None:
    Score.objects.bulk_create(  # as written by the service: correct at the first attempt
        Score(
            user_id=1,
            exercise_id=exercise,
            correct=True,
            first_attempt_correct=True,
            attempts_to_correct=1,
        )
        for exercise in range(1, 1002)
    )

    default = user.get("/scores/stats/exercises")
    capped = user.get("/scores/stats/exercises?page_size=5000")

    assert [row["exercise_id"] for row in default.json()["results"]] == list(range(1, 101))
    assert default.json()["next"] is not None
    assert [row["exercise_id"] for row in capped.json()["results"]] == list(range(1, 1001))
    assert user.get(capped.json()["next"]).json()["results"] == [stat(1001, 1, 1, 1, 1.0)]


@pytest.mark.parametrize(
    ("exercise_id", "expected"), [(3, EXERCISES[:1]), (12, EXERCISES[3:]), (4, [])]
)
def test_stats_filtered_by_exercise(user, exercises, exercise_id, expected) -> None:
    response = user.get(f"/scores/stats/exercises?exercise_id={exercise_id}")

    assert response.status_code == 200
    assert response.json() == page(expected)


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("exercise_id=abc", "exercise_id", "Enter a whole number."),
        ("exercise_id=1.5", "exercise_id", "Enter a whole number."),
        ("exercise_id=0", "exercise_id", "Ensure this value is greater than or equal to 1."),
        (
            f"exercise_id={MAX_ID + 1}",
            "exercise_id",
            f"Ensure this value is less than or equal to {MAX_ID}.",
        ),
        ("page_size=abc", "page_size", "Must be a positive integer."),
        ("page_size=0", "page_size", "Must be a positive integer."),
        ("cursor=garbage", "cursor", "Invalid cursor."),
    ],
)
def test_stats_with_a_bad_parameter_is_a_400_naming_it(user, query, field, message) -> None:
    response = user.get(f"/scores/stats/exercises?{query}")

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid input.", "errors": {field: [message]}}


def test_stats_requires_credentials(anon) -> None:
    response = anon.get("/scores/stats/exercises")

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_stats_is_refused_to_a_django_account_that_is_neither_staff_nor_a_platform_user(
    non_staff,
) -> None:
    response = non_staff.get("/scores/stats/exercises")

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Only platform users and staff accounts may use the scores API."
    }


def test_an_exercise_whose_scores_were_all_deleted_disappears_from_the_stats(
    admin, exercises
) -> None:
    for score in Score.objects.filter(exercise_id=5):
        assert admin.delete(f"/scores/{score.id}").status_code == 204
    partly = Score.objects.get(exercise_id=3, user_id=17)
    assert admin.delete(f"/scores/{partly.id}").status_code == 204

    response = admin.get("/scores/stats/exercises")

    assert response.json() == page([stat(3, 2, 1, 1, 2.0), EXERCISES[2], EXERCISES[3]])
    assert response.json()["results"] == truth()
    assert stored(exercise_id=5) == []


def score_id(user_id: int, exercise_id: int) -> int:
    return Score.objects.get(user_id=user_id, exercise_id=exercise_id).id


def bulk(*items: tuple[int, int, bool]) -> dict[str, Any]:
    return {"scores": [{"user_id": u, "exercise_id": e, "correct": c} for u, e, c in items]}


LONG_AGO = "2020-01-01T00:00:00Z"  # older than any applied attempt: logged, never applied
ATTEMPT_ID = "3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b"

# (who, method, path or a callable giving it, body, expected status): every write path of the
# API, including upserts that flip `correct`, upserts that repeat it, attempts older than the
# score (not applied), a replayed attempt_id (changes nothing), and deletes.
WRITES: list[tuple[str, str, str | Callable[[], str], Any, int]] = [
    ("user", "post", "/scores", {"exercise_id": 1, "correct": True}, 201),
    ("user", "patch", "/scores", {"exercise_id": 1, "correct": False}, 200),
    ("user", "patch", "/scores", {"exercise_id": 1, "correct": False}, 200),
    ("user", "patch", "/scores", {"exercise_id": 2, "correct": True}, 201),
    ("other", "put", "/scores/user/1", {"correct": True}, 201),
    ("other", "put", "/scores/user/1", {"correct": True}, 200),
    ("admin", "patch", "/scores", {"user_id": 17, "exercise_id": 1, "correct": True}, 201),
    ("staff", "put", "/scores/user/2?user_id=33", {"correct": False}, 201),
    ("staff", "put", lambda: f"/scores/{score_id(USER_ID, 1)}", {"correct": True}, 200),
    ("user", "patch", lambda: f"/scores/{score_id(USER_ID, 2)}", {"correct": False}, 200),
    (
        "user",
        "patch",
        "/scores",
        {"exercise_id": 2, "correct": True, "attempted_at": LONG_AGO},
        200,
    ),
    (
        "admin",
        "post",
        "/scores",
        {"user_id": 20, "exercise_id": 3, "correct": False, "attempt_id": ATTEMPT_ID},
        201,
    ),
    (
        "admin",
        "post",
        "/scores",
        {"user_id": 20, "exercise_id": 3, "correct": False, "attempt_id": ATTEMPT_ID},
        201,
    ),
    ("staff", "post", "/scores/bulk", bulk((4, 1, False), (17, 1, True), (20, 3, True)), 200),
    ("staff", "post", "/scores/bulk", bulk((1, 3, True), (36, 1, False), (5, 2, True)), 200),
    (
        "staff",
        "post",
        "/scores/bulk",
        {
            "scores": [
                {"user_id": 4, "exercise_id": 1, "correct": True, "attempted_at": LONG_AGO},
                {"user_id": 33, "exercise_id": 2, "correct": True, "attempted_at": LONG_AGO},
            ]
        },
        200,
    ),
    ("admin", "delete", lambda: f"/scores/{score_id(17, 1)}", None, 204),
    ("admin", "delete", lambda: f"/scores/{score_id(20, 3)}", None, 204),
    ("staff", "post", "/scores", {"user_id": 17, "exercise_id": 1, "correct": False}, 201),
    ("admin", "delete", lambda: f"/scores/{score_id(1, 3)}", None, 204),
    ("staff", "put", "/scores/user/2?user_id=33", {"correct": True}, 200),  # 2nd attempt
]


def test_stats_equal_a_group_by_over_scores_after_every_kind_of_write(request) -> None:
    reader = request.getfixturevalue("user")
    for step, (caller, method, path, body, status) in enumerate(WRITES):
        url = path() if callable(path) else path
        response = getattr(request.getfixturevalue(caller), method)(url, body, format="json")

        assert response.status_code == status, (step, response.content)
        assert stats_of(reader) == truth(), step
    assert stored() == [
        (USER_ID, 1, False),
        (USER_ID, 2, False),
        (OTHER_ID, 1, True),
        (OTHER_ID, 2, True),
        (17, 1, False),
        (33, 2, True),
        (36, 1, False),
    ]
    # Exercise 1: users 4 and 5 right first time; 17 (written anew) and 36 never right.
    # Exercise 2: users 4 and 5 right first time, 33 on the 2nd attempt: (1 + 1 + 2) / 3.
    assert stats_of(reader) == [stat(1, 4, 1, 2, 1.0), stat(2, 3, 2, 2, 1.3333)]


@pytest.mark.parametrize(("caller", "queries"), [("user", 1), ("staff", 2)])
def test_a_stats_page_costs_one_query(
    caller, queries, request, exercises, django_assert_num_queries
) -> None:
    client = request.getfixturevalue(caller)
    client.get("/scores/stats/exercises")  # caches a bearer token's verdict

    # One query for the page, over the counters (never the scores or the attempt log); a staff
    # token costs one more, its lookup (never cached).
    with django_assert_num_queries(queries) as ctx:
        response = client.get("/scores/stats/exercises?page_size=2")

    assert response.json()["results"] == EXERCISES[:2]
    page_query = ctx.captured_queries[-1]["sql"]
    assert page_query.split()[0] == "SELECT"
    assert '"exercise_stats"' in page_query
    assert '"scores"' not in page_query
    assert '"score_attempts"' not in page_query
