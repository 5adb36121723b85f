"""Partial credit (``points`` of ``max_points``) on every write path, and the grading policy
(``SCORE_POLICY``): the latest attempt, or the best one (spec: "Partial credit and grading
policy")."""

from __future__ import annotations

import io
import itertools
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.models import Count, FloatField, Sum
from django.db.models.functions import Cast

from scores.models import Attempt, ExerciseStats, Score
from scores.services import Write, WriteMode, score_write
from scores.tests.conftest import USER_ID, bearer_client
from scores.tests.helpers import NULL, REQUIRED

pytestmark = pytest.mark.django_db

POINTS = "Must be a number with at most 2 decimal places."
POINTS_RANGE = "Must be from 0 to 1,000,000."


def at(hour: int) -> str:
    return f"2026-01-01T{hour:02d}:00:00Z"


def kept() -> tuple[Any, ...]:
    """The one stored score as (correct, points, max_points, attempts)."""
    score = Score.objects.get()
    return (score.correct, score.points, score.max_points, score.attempts)


def logged() -> list[tuple[Any, ...]]:
    return list(
        Attempt.objects.order_by("id").values_list("correct", "points", "max_points", "applied")
    )


# --- Validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"points": 7}, {"max_points": ["Required with points."]}),
        ({"max_points": 10}, {"points": ["Required with max_points."]}),
        ({"points": 11, "max_points": 10}, {"points": ["Must not be more than max_points."]}),
        ({"points": 0, "max_points": 0}, {"max_points": ["Must be more than 0."]}),
        ({"points": -1, "max_points": 10}, {"points": [POINTS_RANGE]}),
        ({"points": 1, "max_points": 1_000_000.01}, {"max_points": [POINTS_RANGE]}),
        ({"points": 1, "max_points": 1_000_001}, {"max_points": [POINTS_RANGE]}),
        ({"points": 7.255, "max_points": 10}, {"points": [POINTS]}),
        ({"points": "7", "max_points": 10}, {"points": [POINTS]}),
        ({"points": True, "max_points": 10}, {"points": [POINTS]}),
        ({"points": [7], "max_points": 10}, {"points": [POINTS]}),
        ({"points": 7, "max_points": None}, {"max_points": [NULL]}),
        ({"points": 10**30, "max_points": 10}, {"points": [POINTS_RANGE]}),
        ({"points": 1e-7, "max_points": 10}, {"points": [POINTS]}),
        ({}, {"correct": [REQUIRED]}),
    ],
    ids=[
        "points-alone",
        "max-points-alone",
        "points-over-max",
        "max-points-zero",
        "negative",
        "three-decimals-max",
        "max-over-a-million",
        "three-decimals",
        "a-string",
        "a-boolean",
        "a-list",
        "null-max",
        "huge",
        "tiny",
        "no-result-at-all",
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "base"),
    [
        ("patch", "/scores", {"exercise_id": 3}),
        ("post", "/scores", {"exercise_id": 3}),
        ("put", "/scores/user/3", {}),
    ],
)
def test_bad_points_are_a_400_naming_the_field(user, method, path, base, fields, errors) -> None:
    response = getattr(user, method)(path, {**base, **fields}, format="json")

    assert (response.status_code, response.json()) == (
        400,
        {"detail": "Invalid input.", "errors": errors},
    )
    assert Score.objects.count() == Attempt.objects.count() == 0


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"points": 10, "max_points": 10}, (True, Decimal("10.00"), Decimal("10.00"))),
        ({"points": 7, "max_points": 10}, (False, Decimal("7.00"), Decimal("10.00"))),
        ({"points": 0.5, "max_points": 0.5}, (True, Decimal("0.50"), Decimal("0.50"))),
        ({"points": 7, "max_points": 10, "correct": True}, (True, Decimal("7.00"), Decimal("10"))),
        ({"points": 10, "max_points": 10, "correct": False}, (False, Decimal(10), Decimal(10))),
        ({"correct": True}, (True, None, None)),
        ({"points": 1_000_000, "max_points": 1_000_000}, (True, Decimal(10**6), Decimal(10**6))),
    ],
    ids=["full", "partial", "fractions", "partial-as-correct", "full-as-wrong", "none", "max"],
)
def test_correct_is_derived_from_points_unless_given(user, fields, expected) -> None:
    response = user.patch("/scores", {"exercise_id": 3, **fields}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert (body["correct"], body["points"], body["max_points"]) == tuple(
        None if value is None else (value if isinstance(value, bool) else float(value))
        for value in expected
    )
    assert kept()[:3] == expected
    assert logged() == [(*expected, True)]


def test_the_old_clients_call_answers_exactly_as_before_with_null_points(user) -> None:
    response = user.patch("/scores", {"exercise_id": 5, "correct": True}, format="json")

    assert response.status_code == 201
    assert set(response.json()) == {
        "id",
        "user_id",
        "exercise_id",
        "correct",
        "created_at",
        "updated_at",
        "attempts",
        "first_correct_at",
        "points",
        "max_points",
    }
    assert (response.json()["points"], response.json()["max_points"]) == (None, None)


# --- Policies on every write path ---------------------------------------------------------------

WRITE_PATHS = ["patch", "put-by-exercise", "bulk", "csv", "service"]


def write(path: str, caller: Any, tmp_path: Any, **fields: Any) -> None:
    """One attempt at user 4's score of exercise 3 through ``path``."""
    body = {"exercise_id": 3, **fields}
    if path == "patch":
        assert caller.patch("/scores", body, format="json").status_code in (200, 201)
    elif path == "put-by-exercise":
        del body["exercise_id"]
        assert caller.put("/scores/user/3?user_id=4", body, format="json").status_code in (200, 201)
    elif path == "bulk":
        response = caller.post("/scores/bulk", {"scores": [{"user_id": 4, **body}]}, format="json")
        assert response.status_code == 200
    elif path == "csv":
        columns = ["user_id", *body]
        csv = tmp_path / f"{uuid.uuid4().hex}.csv"
        csv.write_text(
            ",".join(columns) + "\n" + ",".join(str({"user_id": 4, **body}[c]) for c in columns)
        )
        call_command("import_scores", str(csv), stdout=io.StringIO(), stderr=io.StringIO())
    else:
        values = {k: (Decimal(str(v)) if k.endswith("points") else v) for k, v in body.items()}
        attempted_at = values.pop("attempted_at")
        score_write(
            write=Write(
                user_id=4,
                attempted_at=datetime.fromisoformat(attempted_at),
                correct=values.pop("correct", values.get("points") == values.get("max_points")),
                **values,
            ),
            recorded_by="grader",
        )


@pytest.fixture
def grader(admin: Any) -> Any:
    """A privileged caller whose writes name user 4 (the admin of the users service)."""

    class Grader:
        def patch(self, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
            return admin.patch(path, {"user_id": 4, **body}, **kwargs)

        def put(self, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
            return admin.put(path, body, **kwargs)

        def post(self, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
            return admin.post(path, body, **kwargs)

    return Grader()


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_under_best_a_better_older_attempt_applies_and_a_worse_newer_one_does_not(
    settings, grader, tmp_path, path
) -> None:
    settings.SCORE_POLICY = "best"

    write(path, grader, tmp_path, points=5, max_points=10, attempted_at=at(10))
    write(path, grader, tmp_path, points=8, max_points=10, attempted_at=at(8))  # better, older
    write(path, grader, tmp_path, points=3, max_points=10, attempted_at=at(12))  # worse, newer
    write(path, grader, tmp_path, points=16, max_points=20, attempted_at=at(7))  # equal, older
    write(path, grader, tmp_path, points=4, max_points=5, attempted_at=at(9))  # equal, newer

    assert kept() == (False, Decimal("4.00"), Decimal("5.00"), 3)
    assert [applied for *_, applied in logged()] == [True, True, False, False, True]
    assert Score.objects.get().last_attempted_at == datetime(2026, 1, 1, 9, tzinfo=UTC)


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_under_latest_the_newest_attempt_is_the_score_points_and_all(
    settings, grader, tmp_path, path
) -> None:
    settings.SCORE_POLICY = "latest"

    write(path, grader, tmp_path, points=9, max_points=10, attempted_at=at(10))
    write(path, grader, tmp_path, points=2, max_points=10, attempted_at=at(11))
    write(path, grader, tmp_path, points=10, max_points=10, attempted_at=at(9))  # older

    assert kept() == (False, Decimal("2.00"), Decimal("10.00"), 2)
    assert [applied for *_, applied in logged()] == [True, True, False]


@pytest.mark.parametrize(
    ("first", "second", "applies"),
    [
        ({"correct": False}, {"correct": True}, True),
        ({"correct": True}, {"correct": False}, False),
        ({"correct": True}, {"points": 9, "max_points": 10, "correct": False}, False),
        ({"points": 1, "max_points": 10}, {"correct": True}, True),
        ({"points": 1, "max_points": 3}, {"points": 2, "max_points": 6}, True),  # equal ratio
        ({"points": 2, "max_points": 3}, {"points": 666.66, "max_points": 1000}, False),
    ],
    ids=[
        "correct-over-wrong",
        "wrong-under-correct",
        "no-points-compares-correct",
        "correct-beats-partial-without-points-to-compare",
        "equal-ratio-newer-applies",
        "ratios-compared-exactly",
    ],
)
def test_under_best_what_better_means(settings, grader, tmp_path, first, second, applies) -> None:
    settings.SCORE_POLICY = "best"
    write("patch", grader, tmp_path, attempted_at=at(10), **first)

    write("patch", grader, tmp_path, attempted_at=at(11), **second)

    assert [applied for *_, applied in logged()] == [True, applies]


def test_a_not_applied_attempt_is_answered_200_with_the_unchanged_score(settings, user) -> None:
    settings.SCORE_POLICY = "best"
    first = user.patch("/scores", {"exercise_id": 3, "points": 9, "max_points": 10}, format="json")

    worse = user.patch("/scores", {"exercise_id": 3, "points": 1, "max_points": 10}, format="json")

    assert (worse.status_code, worse.json()) == (200, first.json())


@pytest.mark.parametrize("policy", ["latest", "best"])
@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_privileged_correction_by_id_always_applies(settings, admin, user, policy, method):
    settings.SCORE_POLICY = policy
    score = user.patch(
        "/scores",
        {"exercise_id": 3, "points": 10, "max_points": 10, "attempted_at": at(12)},
        format="json",
    ).json()

    response = getattr(admin, method)(
        f"/scores/{score['id']}",
        {"points": 4, "max_points": 10, "attempted_at": at(1)},
        format="json",
    )

    assert (response.status_code, response.json()["points"]) == (200, 4.0)
    assert kept() == (False, Decimal("4.00"), Decimal("10.00"), 2)


def test_an_owners_update_by_id_follows_the_policy(settings, user) -> None:
    settings.SCORE_POLICY = "best"
    score = user.patch(
        "/scores", {"exercise_id": 3, "points": 10, "max_points": 10}, format="json"
    ).json()

    response = user.put(f"/scores/{score['id']}", {"points": 4, "max_points": 10}, format="json")

    assert (response.status_code, response.json()["points"]) == (200, 10.0)
    assert [applied for *_, applied in logged()] == [True, False]


# --- Replays and conflicts with points ------------------------------------------------------------


@pytest.mark.parametrize("policy", ["latest", "best"])
def test_a_replay_with_points_changes_nothing_and_answers_as_the_first_time(
    settings, user, policy
) -> None:
    settings.SCORE_POLICY = policy
    body = {"exercise_id": 3, "points": 7.5, "max_points": 10, "attempt_id": str(uuid.uuid4())}
    first = user.patch("/scores", body, format="json")
    user.patch("/scores", {"exercise_id": 3, "points": 10, "max_points": 10}, format="json")

    again = user.patch("/scores", body, format="json")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert Attempt.objects.count() == 2


@pytest.mark.parametrize(
    ("changed", "fields"),
    [
        ({"points": 8}, ["points"]),
        ({"points": 10}, ["points", "correct"]),
        ({"max_points": 20}, ["max_points"]),
        ({"points": None, "max_points": None, "correct": False}, ["points", "max_points"]),
    ],
    ids=["other-points", "other-points-and-so-correct", "other-max", "without-points"],
)
def test_the_same_attempt_id_with_other_points_is_a_409_naming_them(user, changed, fields):
    body = {"exercise_id": 3, "points": 7, "max_points": 10, "attempt_id": str(uuid.uuid4())}
    user.patch("/scores", body, format="json")
    retry = {key: value for key, value in {**body, **changed}.items() if value is not None}

    response = user.patch("/scores", retry, format="json")

    assert response.status_code == 409
    assert sorted(response.json()["errors"]) == sorted(fields)
    assert Attempt.objects.count() == 1


# --- The best policy under concurrency (PostgreSQL) -------------------------------------------


def better(attempt: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """The best policy, in Python: ``attempt`` applies over the kept ``than``."""
    if than is None:
        return True
    if attempt["points"] is not None and than["points"] is not None:
        difference = attempt["points"] * than["max_points"] - than["points"] * attempt["max_points"]
    else:
        difference = int(attempt["correct"]) - int(than["correct"])
    return difference > 0 or (difference == 0 and attempt["attempted_at"] >= than["attempted_at"])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrency is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_concurrent_attempts_in_random_order_leave_the_best_and_log_each_rightly(settings):
    """160 graded attempts (random points of random maxima, random times, random order) sent
    by 8 threads at once: the score keeps the best (highest ratio, then the latest), each
    attempt is logged once with the applied its writer was answered, and the applied ones,
    in the order the score's row lock let them through, each beat the one kept before."""
    settings.SCORE_POLICY = "best"
    rng = random.Random(20261130)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    attempts = []
    for _ in range(160):
        max_points = Decimal(rng.choice([10, 20, 3, 7]))
        points = Decimal(rng.randint(0, int(max_points) * 100)) / 100
        attempts.append(
            Write(
                user_id=9,
                exercise_id=9,
                correct=points == max_points,
                points=points,
                max_points=max_points,
                attempted_at=start + timedelta(minutes=rng.randint(0, 50)),
                attempt_id=uuid.uuid4(),
            )
        )
    rng.shuffle(attempts)
    answered: dict[uuid.UUID, bool] = {}

    def send(batch: list[Write]) -> None:
        try:
            for one in batch:
                assert one.attempt_id is not None
                answered[one.attempt_id] = score_write(write=one, recorded_by="grader").applied
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(attempts[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    log = list(
        Attempt.objects.order_by("id").values(
            "attempt_id", "correct", "points", "max_points", "attempted_at", "applied"
        )
    )
    assert len(log) == len(attempts) == len(answered)
    assert {entry["attempt_id"]: entry["applied"] for entry in log} == answered
    applied = [entry for entry in log if entry["applied"]]  # logged with their decision
    for before, after in itertools.pairwise(applied):
        assert better(after, before), (before, after)
    best = max(log, key=lambda e: (e["points"] / e["max_points"], e["attempted_at"]))
    score = Score.objects.get()
    assert (score.points / score.max_points, score.last_attempted_at) == (
        best["points"] / best["max_points"],
        best["attempted_at"],
    )
    assert (score.correct, score.points, score.max_points) == (
        applied[-1]["correct"],
        applied[-1]["points"],
        applied[-1]["max_points"],
    )
    assert score.attempts == len(applied)


# --- Summary and statistics ------------------------------------------------------------------


@pytest.fixture
def credited(admin: Any) -> None:
    for user_id, exercise_id, fields in (
        (4, 1, {"points": 7, "max_points": 10}),
        (4, 2, {"points": 2.5, "max_points": 5}),
        (4, 3, {"correct": True}),
        (5, 1, {"points": 1, "max_points": 3}),
        (6, 1, {"points": 0, "max_points": 3}),
        (6, 2, {"correct": False}),
    ):
        body = {"user_id": user_id, "exercise_id": exercise_id, **fields}
        assert admin.patch("/scores", body, format="json").status_code == 201


def test_the_summary_sums_points_over_the_scores_that_have_them(credited, user) -> None:
    body = user.get("/scores/summary").json()

    assert {key: body[key] for key in ("attempted", "correct", "points", "max_points")} == {
        "attempted": 3,
        "correct": 1,
        "points": 9.5,
        "max_points": 15.0,
    }


def test_the_summary_of_a_user_without_points_says_0(users_service: Any) -> None:
    client = bearer_client(users_service.user(77))
    client.patch("/scores", {"exercise_id": 1, "correct": True}, format="json")

    body = client.get("/scores/summary").json()

    assert (body["points"], body["max_points"]) == (0, 0)


def test_the_stats_average_the_points_ratio_from_counters_and_equal_a_recount(
    credited, user, django_assert_num_queries
) -> None:
    user.get("/scores/summary")  # the token's verdict cached
    with django_assert_num_queries(1):
        rows = user.get("/scores/stats/exercises").json()["results"]

    assert [(row["exercise_id"], row["avg_points_ratio"]) for row in rows] == [
        (1, round((0.7 + 1 / 3 + 0) / 3, 4)),
        (2, 0.5),
        (3, None),  # a score, but none with points
    ]
    recount = {
        row["exercise_id"]: (row["n"], row["ratio"])
        for row in Score.objects.filter(points__isnull=False)
        .values("exercise_id")
        .annotate(
            n=Count("id"),
            ratio=Sum(Cast("points", FloatField()) / Cast("max_points", FloatField())),
        )
    }
    counters = {
        row["exercise_id"]: (row["n"], row["ratio"])
        for row in ExerciseStats.objects.values("exercise_id")
        .annotate(n=Sum("scored"), ratio=Sum("points_ratio_sum"))
        .filter(n__gt=0)
    }
    assert {key: n for key, (n, _) in counters.items()} == {
        key: n for key, (n, _) in recount.items()
    }
    for key, (_, ratio) in counters.items():
        assert float(ratio) == pytest.approx(float(recount[key][1]), abs=1e-9)


def test_the_counters_follow_updates_and_deletes(credited, admin) -> None:
    score = Score.objects.get(user_id=5, exercise_id=1)
    admin.patch(f"/scores/{score.id}", {"points": 3, "max_points": 3}, format="json")
    admin.delete(f"/scores/{Score.objects.get(user_id=6, exercise_id=1).id}")

    rows = admin.get("/scores/stats/exercises?exercise_id=1").json()["results"]

    assert rows[0]["avg_points_ratio"] == round((0.7 + 1.0) / 2, 4)


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_round_trip_keeps_points(credited, staff, tmp_path) -> None:
    exported = b"".join(staff.get("/scores/export.csv").streaming_content).decode()
    assert exported.splitlines()[0] == (
        "id,user_id,exercise_id,correct,created_at,updated_at,points,max_points"
    )
    assert ",7.00,10.00" in exported
    assert exported.splitlines()[3].endswith(",,")
    before = list(
        Score.objects.order_by("id").values_list(
            "user_id", "exercise_id", "correct", "points", "max_points"
        )
    )
    rows = [line.split(",") for line in exported.splitlines()[1:]]
    csv = tmp_path / "round.csv"
    csv.write_text(
        "user_id,exercise_id,correct,points,max_points\n"
        + "".join(f"{r[1]},{r[2]},{r[3]},{r[6]},{r[7]}\n" for r in rows)
    )
    Score.objects.all().delete()

    call_command("import_scores", str(csv), stdout=io.StringIO(), stderr=io.StringIO())

    after = list(
        Score.objects.order_by("id").values_list(
            "user_id", "exercise_id", "correct", "points", "max_points"
        )
    )
    assert after == before


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("4,3,,7,", "max_points: Required with points."),
        ("4,3,,7.255,10", "points: Must be a number with at most 2 decimal places."),
        ("4,3,,11,10", "points: Must not be more than max_points."),
        ("4,3,,,", "correct: This field is required."),
    ],
)
def test_csv_points_are_checked_as_the_apis(tmp_path, row, message) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(f"user_id,exercise_id,correct,points,max_points\n{row}\n")
    err = io.StringIO()

    with pytest.raises(Exception, match="1 invalid row"):
        call_command("import_scores", str(csv), stdout=io.StringIO(), stderr=err)

    assert err.getvalue() == f"line 2: {message}\n"


# --- The admin ------------------------------------------------------------------------------------


@pytest.fixture
def staffer(client: Any, django_user_model: Any) -> Any:
    client.force_login(
        django_user_model.objects.create_user("staffer", is_staff=True, is_superuser=True)
    )
    return client


@pytest.mark.parametrize("policy", ["latest", "best"])
def test_the_admin_list_shows_points_and_the_policy_in_force(settings, staffer, policy) -> None:
    settings.SCORE_POLICY = policy
    score_write(
        write=Write(
            user_id=4, exercise_id=3, correct=False, points=Decimal(7), max_points=Decimal(10)
        ),
        recorded_by="grader",
    )

    html = staffer.get("/admin/scores/score/").content.decode()

    assert f"Grading policy: {policy} (" in html
    assert '<td class="field-points">7.00</td><td class="field-max_points">10.00</td>' in html


def test_a_staff_edit_of_points_is_checked_and_applies_as_a_correction(settings, staffer) -> None:
    settings.SCORE_POLICY = "best"
    result = score_write(
        write=Write(
            user_id=4, exercise_id=3, correct=True, points=Decimal(10), max_points=Decimal(10)
        ),
        recorded_by="grader",
    )
    url = f"/admin/scores/score/{result.score['id']}/change/"

    bad = staffer.post(url, {"correct": "on", "points": "11", "max_points": "10"})
    good = staffer.post(url, {"points": "4", "max_points": "10", "reason": "Partial credit"})

    assert bad.status_code == 200
    assert "Must not be more than max_points." in bad.content.decode()
    assert good.status_code == 302
    assert kept() == (False, Decimal("4.00"), Decimal("10.00"), 2)
    assert logged()[-1] == (False, Decimal("4.00"), Decimal("10.00"), True)


def test_the_statistics_page_shows_the_average_points_ratio(credited, staffer) -> None:
    html = staffer.get("/admin/scores/score/statistics/").content.decode()

    assert '<td class="num">34.4 %</td>' in html  # exercise 1: (0.7 + 1/3 + 0) / 3
    assert '<td class="num">50.0 %</td>' in html


def test_score_write_in_update_mode_with_points_keeps_the_identity() -> None:
    first = score_write(
        write=Write(
            user_id=4, exercise_id=3, correct=True, points=Decimal(3), max_points=Decimal(3)
        ),
        recorded_by="grader",
    )

    again = score_write(
        write=Write(
            user_id=4, exercise_id=3, correct=False, points=Decimal(1), max_points=Decimal(3)
        ),
        recorded_by="grader",
        mode=WriteMode.UPDATE,
        correction=True,
    )

    assert again.score["id"] == first.score["id"]
    assert (again.score["points"], again.score["max_points"]) == (Decimal("1.00"), Decimal("3.00"))
    assert USER_ID == 4
