"""POST /scores/bulk: up to 1000 upserts by a privileged caller in one statement (and one for
their attempt log), all or nothing, every bad item named by its index."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.db import connection, connections
from django.db.models import Count, Q, Sum
from django.utils import timezone

from scores.models import MAX_ID, Attempt, Score
from scores.services import Write, score_write
from scores.tests.conftest import OTHER_ID, USER_ID, bearer_client
from scores.tests.helpers import BOOLEAN, INTEGER, MISSING, NULL, RANGE, REQUIRED, iso, stored

pytestmark = pytest.mark.django_db

ATTEMPT_ID = "Must be a UUID, e.g. 3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b."
ATTEMPTED_AT = "Must be an ISO 8601 timestamp, e.g. 2026-11-26T14:24:20Z."

BAD_IDS = [
    ("abc", INTEGER),
    ("5", INTEGER),
    (0, RANGE),
    (-1, RANGE),
    (MAX_ID + 1, RANGE),
    (10**30, RANGE),
    (1.5, INTEGER),
    (True, INTEGER),
    ([], INTEGER),
    (None, NULL),
    (MISSING, REQUIRED),
]
BAD_CORRECT = [
    ("yes", BOOLEAN),
    ("true", BOOLEAN),
    (None, NULL),
    (2, BOOLEAN),
    (-1, BOOLEAN),
    (0.5, BOOLEAN),
    (MISSING, REQUIRED),
]


def item(user_id: Any = USER_ID, exercise_id: Any = 1, correct: Any = True) -> dict[str, Any]:
    fields = {"user_id": user_id, "exercise_id": exercise_id, "correct": correct}
    return {key: value for key, value in fields.items() if value is not MISSING}


def bulk(*items: dict[str, Any]) -> dict[str, Any]:
    return {"scores": list(items)}


def invalid(errors: dict[str, Any]) -> dict[str, Any]:
    return {"detail": "Invalid input.", "errors": errors}


def logged() -> list[tuple[int, int, bool, bool, bool, str]]:
    """The attempt log as (user_id, exercise_id, correct, applied, created_score, recorded_by),
    ordered by pair."""
    return list(
        Attempt.objects.order_by("user_id", "exercise_id", "id").values_list(
            "user_id", "exercise_id", "correct", "applied", "created_score", "recorded_by"
        )
    )


EXISTING = [(USER_ID, 1, False), (OTHER_ID, 2, True)]
# Their attempt log: one attempt each, which created the score.
EXISTING_LOG = [(USER_ID, 1, False, True, True, "seed"), (OTHER_ID, 2, True, True, True, "seed")]


@pytest.fixture
def existing() -> list[Score]:
    """Two scores written through the service, which a valid bulk updates and a refused one
    must leave alone (scores and attempt log)."""
    for user_id, exercise_id, correct in EXISTING:
        score_write(
            write=Write(user_id=user_id, exercise_id=exercise_id, correct=correct),
            recorded_by="seed",
        )
    return [Score.objects.get(user_id=u, exercise_id=e) for u, e, _ in EXISTING]


# --- Who may ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("caller", "recorded_by"), [("admin", "1"), ("staff", "grader")])
def test_bulk_upserts_a_mix_of_new_and_existing_scores(
    caller, recorded_by, request, existing
) -> None:
    before = [(score.id, score.created_at, score.updated_at) for score in existing]
    body = bulk(
        item(USER_ID, 1, True),  # update, flips correct
        item(OTHER_ID, 2, True),  # update, same correct
        item(6, 3, False),  # new
        item(USER_ID, 3, True),  # new, for a user who has other scores
    )

    response = request.getfixturevalue(caller).post("/scores/bulk", body, format="json")

    assert response.status_code == 200
    assert response.json() == {"created": 2, "updated": 2}
    assert stored() == [(USER_ID, 1, True), (USER_ID, 3, True), (OTHER_ID, 2, True), (6, 3, False)]
    for score, (score_id, created_at, updated_at) in zip(existing, before, strict=True):
        score.refresh_from_db()
        assert (score.id, score.created_at) == (score_id, created_at)
        assert score.updated_at > updated_at
    inserted = Score.objects.get(user_id=6, exercise_id=3)
    assert inserted.created_at == inserted.updated_at == existing[0].updated_at
    # One applied attempt per item, logged in the same transaction.
    assert logged() == [
        EXISTING_LOG[0],
        (USER_ID, 1, True, True, False, recorded_by),
        (USER_ID, 3, True, True, True, recorded_by),
        EXISTING_LOG[1],
        (OTHER_ID, 2, True, True, False, recorded_by),
        (6, 3, False, True, True, recorded_by),
    ]
    history = Score.objects.order_by("user_id", "exercise_id").values_list(
        "user_id", "exercise_id", "attempts", "first_correct_at"
    )
    now = existing[0].updated_at
    assert list(history) == [
        (USER_ID, 1, 2, now),  # wrong at first, right now
        (USER_ID, 3, 1, now),
        (OTHER_ID, 2, 2, existing[1].first_correct_at),  # right before: stays as it was
        (6, 3, 1, None),
    ]
    assert existing[1].first_correct_at < now
    written = Attempt.objects.filter(recorded_by=recorded_by)
    assert set(written.values_list("attempted_at", "recorded_at")) == {(now, now)}


def test_bulk_items_carry_their_attempt_id_and_attempted_at(staff, existing) -> None:
    attempted_at = (timezone.now() - timedelta(hours=1)).replace(microsecond=0)
    first, second = uuid.uuid4(), uuid.uuid4()
    body = bulk(
        {**item(USER_ID, 1, True), "attempt_id": str(first), "attempted_at": iso(attempted_at)},
        {**item(7, 7, False), "attempt_id": str(second).upper()},
        {**item(8, 8, True), "attempted_at": iso(attempted_at).replace("Z", "+02:00")},
    )

    response = staff.post("/scores/bulk", body, format="json")

    assert response.status_code == 200
    assert response.json() == {"created": 2, "updated": 1}
    rows = (
        Attempt.objects.filter(recorded_by="grader")
        .order_by("user_id")
        .values_list("user_id", "attempt_id", "attempted_at", "applied")
    )
    now = Score.objects.get(user_id=7).updated_at
    assert list(rows) == [
        # Older than the score's latest attempt (stored before): logged, not applied.
        (USER_ID, first, attempted_at, False),
        (7, second, now, True),
        (8, None, attempted_at - timedelta(hours=2), True),
    ]
    assert stored() == [(USER_ID, 1, False), (OTHER_ID, 2, True), (7, 7, False), (8, 8, True)]


def test_bulk_accepts_0_and_1_as_correct_and_integral_floats_as_ids(staff) -> None:
    body = bulk(item(7, 1.0, 1), item(8.0, 1, 0))

    response = staff.post("/scores/bulk", body, format="json")

    assert response.status_code == 200
    assert response.json() == {"created": 2, "updated": 0}
    assert stored() == [(7, 1, True), (8, 1, False)]


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_bulk_by_a_privileged_caller_works_when_self_reporting_is_off(
    caller, request, settings, existing
) -> None:
    settings.SCORES_SELF_REPORT = False

    response = request.getfixturevalue(caller).post(
        "/scores/bulk", bulk(item(USER_ID, 1, True)), format="json"
    )

    assert response.status_code == 200
    assert response.json() == {"created": 0, "updated": 1}
    assert stored() == [(USER_ID, 1, True), (OTHER_ID, 2, True)]


def test_bulk_of_an_empty_list_writes_nothing(staff, existing) -> None:
    response = staff.post("/scores/bulk", {"scores": []}, format="json")

    assert response.status_code == 200
    assert response.json() == {"created": 0, "updated": 0}
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


def test_bulk_of_exactly_1000_scores_is_accepted(staff, existing) -> None:
    pairs = [(user_id, exercise_id) for user_id in range(1, 101) for exercise_id in range(1, 11)]
    body = bulk(*(item(u, e, (u + e) % 3 == 0) for u, e in pairs))

    response = staff.post("/scores/bulk", body, format="json")

    assert response.status_code == 200
    assert response.json() == {"created": 998, "updated": 2}
    assert stored() == [(u, e, (u + e) % 3 == 0) for u, e in pairs]


@pytest.mark.parametrize("caller", ["user", "other"])
def test_bulk_is_forbidden_to_users_even_for_their_own_scores(caller, request, existing) -> None:
    body = bulk(item(USER_ID, 1, True), item(OTHER_ID, 9, True))

    response = request.getfixturevalue(caller).post("/scores/bulk", body, format="json")

    assert response.status_code == 403
    assert response.json() == {"detail": "Only privileged callers may do this."}
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


def test_bulk_is_refused_to_a_django_account_that_is_neither_staff_nor_a_platform_user(
    non_staff, existing
) -> None:
    response = non_staff.post("/scores/bulk", bulk(item(9, 9, True)), format="json")

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Only platform users and staff accounts may use the scores API."
    }
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


def test_bulk_requires_credentials(anon, existing) -> None:
    response = anon.post("/scores/bulk", bulk(item(9, 9, True)), format="json")

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"] == 'Bearer realm="evalsvc"'
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


# --- Validation: a 400 naming the item, and nothing stored -----------------------------------

VALID = item(USER_ID, 1, True)  # an update of a stored score: it must not be applied either
REPEATED_ATTEMPT = "3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ([VALID], {"non_field_errors": ["Expected an object, got an array."]}),
        ({}, {"scores": [REQUIRED]}),
        ({"score": [VALID]}, {"scores": [REQUIRED]}),
        ({"scores": None}, {"scores": [NULL]}),
        ({"scores": "abc"}, {"scores": ["Expected a list of scores, got a string."]}),
        ({"scores": {"0": VALID}}, {"scores": ["Expected a list of scores, got an object."]}),
        ({"scores": 5}, {"scores": ["Expected a list of scores, got a number."]}),
        ({"scores": 1.5}, {"scores": ["Expected a list of scores, got a number."]}),
        ({"scores": True}, {"scores": ["Expected a list of scores, got a boolean."]}),
        (
            bulk(*(item(u, 1, True) for u in range(1, 1002))),
            {"scores": ["At most 1000 scores per request (got 1001): split it."]},
        ),
        (bulk(VALID, 5), {"scores": {"1": {"non_field_errors": ["Expected an object."]}}}),
        (bulk(VALID, None), {"scores": {"1": {"non_field_errors": ["Expected an object."]}}}),
        (
            bulk(VALID, [4, 2, True]),
            {"scores": {"1": {"non_field_errors": ["Expected an object."]}}},
        ),
        (
            bulk(VALID, {}),
            {
                "scores": {
                    "1": {"user_id": [REQUIRED], "exercise_id": [REQUIRED], "correct": [REQUIRED]}
                }
            },
        ),
        (
            bulk(VALID, item(0, "x", None), item(9, 9, True), item(MISSING, 3, 2)),
            {
                "scores": {
                    "1": {"user_id": [RANGE], "exercise_id": [INTEGER], "correct": [NULL]},
                    "3": {"user_id": [REQUIRED], "correct": [BOOLEAN]},
                }
            },
        ),
        (
            bulk(VALID, item(OTHER_ID, 1, True), item(USER_ID, 1, False)),
            {"scores": {"2": {"non_field_errors": ["Same user_id and exercise_id as item 0."]}}},
        ),
        (
            bulk(VALID, item(7, 7, True), item(7, 7, True), item(7, 7.0, False)),
            {
                "scores": {
                    "2": {"non_field_errors": ["Same user_id and exercise_id as item 1."]},
                    "3": {"non_field_errors": ["Same user_id and exercise_id as item 1."]},
                }
            },
        ),
        (
            bulk(
                VALID,
                {**item(7, 7, True), "attempt_id": REPEATED_ATTEMPT},
                {**item(7, 8, True), "attempt_id": REPEATED_ATTEMPT},
            ),
            {"scores": {"2": {"attempt_id": ["Same attempt_id as item 1."]}}},
        ),
    ],
    ids=[
        "a-list-body",
        "an-empty-object",
        "a-misspelt-scores",
        "scores-null",
        "scores-a-string",
        "scores-an-object",
        "scores-a-number",
        "scores-a-fraction",
        "scores-a-boolean",
        "1001-items",
        "an-item-a-number",
        "an-item-null",
        "an-item-a-list",
        "an-item-empty",
        "several-bad-items",
        "a-repeated-pair",
        "a-pair-repeated-twice",
        "an-attempt-id-repeated-for-one-user",
    ],
)
def test_a_bad_bulk_body_is_a_400_and_stores_nothing(staff, existing, body, errors) -> None:
    response = staff.post("/scores/bulk", body, format="json")

    assert response.status_code == 400
    assert response.json() == invalid(errors)
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


@pytest.mark.parametrize(("value", "message"), BAD_IDS)
@pytest.mark.parametrize("field", ["user_id", "exercise_id"])
def test_a_bad_id_in_an_item_is_a_400_naming_the_index_and_field(
    staff, existing, field, value, message
) -> None:
    body = bulk(VALID, item(9, 9, True), item(**{field: value}))

    response = staff.post("/scores/bulk", body, format="json")

    assert response.status_code == 400
    assert response.json() == invalid({"scores": {"2": {field: [message]}}})
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


@pytest.mark.parametrize(("value", "message"), BAD_CORRECT)
def test_a_bad_correct_in_an_item_is_a_400_naming_the_index(
    admin, existing, value, message
) -> None:
    body = bulk(VALID, item(9, 9, value))

    response = admin.post("/scores/bulk", body, format="json")

    assert response.status_code == 400
    assert response.json() == invalid({"scores": {"1": {"correct": [message]}}})
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("attempt_id", "not-a-uuid", ATTEMPT_ID),
        ("attempt_id", 5, ATTEMPT_ID),
        ("attempt_id", "", ATTEMPT_ID),
        ("attempt_id", None, NULL),
        ("attempted_at", "yesterday", ATTEMPTED_AT),
        ("attempted_at", "2026-13-01T00:00:00Z", ATTEMPTED_AT),
        ("attempted_at", "2026-02-30T00:00:00Z", ATTEMPTED_AT),
        ("attempted_at", 1700000000, ATTEMPTED_AT),
        ("attempted_at", None, NULL),
        ("attempted_at", "2999-01-01T00:00:00Z", "Must not be in the future."),
    ],
)
def test_a_bad_attempt_field_in_an_item_is_a_400_naming_the_index(
    staff, existing, field, value, message
) -> None:
    body = bulk(VALID, {**item(9, 9, True), field: value})

    response = staff.post("/scores/bulk", body, format="json")

    assert response.status_code == 400
    assert response.json() == invalid({"scores": {"1": {field: [message]}}})
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


@pytest.mark.parametrize(
    "raw", [b'{"scores": [', b'{"scores": [{"user_id": 1,}]}', b"\xff", b"{'scores': []}"]
)
def test_malformed_json_is_a_400_and_stores_nothing(staff, existing, raw) -> None:
    response = staff.generic("POST", "/scores/bulk", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")
    assert set(response.json()) == {"detail"}
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


@pytest.mark.parametrize(
    ("raw", "errors"),
    [
        (b"", {"scores": [REQUIRED]}),
        (b"null", {"non_field_errors": ["Expected an object, got null."]}),
        (b'"scores"', {"non_field_errors": ["Expected an object, got a string."]}),
        (b"5", {"non_field_errors": ["Expected an object, got a number."]}),
        (b"true", {"non_field_errors": ["Expected an object, got a boolean."]}),
        (b"[]", {"non_field_errors": ["Expected an object, got an array."]}),
    ],
)
def test_an_empty_or_non_object_json_body_is_a_400_and_stores_nothing(
    staff, existing, raw, errors
) -> None:
    response = staff.generic("POST", "/scores/bulk", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == invalid(errors)
    assert stored() == EXISTING
    assert logged() == EXISTING_LOG


# --- Cost ------------------------------------------------------------------------------------


# The upsert (on PostgreSQL with its events in the same statement: WITH ... INSERT), then the
# attempt log (SQLite: the events in a statement of their own). On PostgreSQL the batch first
# takes its users' write locks, shared (SELECT pg_advisory_xact_lock_shared: an erasure of one
# of them sees all of the batch or none of it).
WRITE = (
    ["SAVEPOINT", "SELECT", "WITH", "INSERT", "RELEASE"]
    if connection.vendor == "postgresql"
    else ["SAVEPOINT", "INSERT", "INSERT", "INSERT", "RELEASE"]
)


@pytest.mark.parametrize(
    ("caller", "statements"), [("admin", WRITE), ("staff", ["SELECT", *WRITE])]
)
def test_a_bulk_write_is_one_statement_and_one_for_the_log(
    caller, statements, request, existing, django_assert_num_queries
) -> None:
    client = request.getfixturevalue(caller)
    client.post("/scores/bulk", {"scores": []}, format="json")  # caches a bearer token's verdict
    body = bulk(*(item(u, e, u % 2 == 0) for u in range(1, 21) for e in range(1, 6)))

    # The upsert of all 100 items is one statement, their 100 log rows another, in one
    # transaction (a savepoint here, as the test runs in a transaction). A bearer token's
    # verdict is cached after the first request, so an admin costs nothing more; a staff token
    # is looked up in the database on every request (DRF tokens are not cached): one more query.
    with django_assert_num_queries(len(statements)) as ctx:
        response = client.post("/scores/bulk", body, format="json")

    assert [query["sql"].split()[0] for query in ctx.captured_queries] == statements
    upsert, *_, log = (query["sql"] for query in ctx.captured_queries if "INSERT" in query["sql"])
    assert "INSERT INTO scores AS scores " in upsert
    assert log.startswith("INSERT INTO score_attempts ")
    assert response.json() == {"created": 98, "updated": 2}
    assert stored() == [(u, e, u % 2 == 0) for u in range(1, 21) for e in range(1, 6)]
    assert Attempt.objects.count() == len(EXISTING) + 100


def test_a_bulk_with_an_older_item_costs_no_statement_more(
    admin, existing, django_assert_num_queries
) -> None:
    admin.post("/scores/bulk", {"scores": []}, format="json")  # caches the token's verdict
    long_ago = "2020-01-01T00:00:00Z"
    body = bulk(
        {**item(USER_ID, 1, True), "attempted_at": long_ago},  # older than the stored score
        item(OTHER_ID, 2, False),
        item(9, 9, True),
    )

    # The log statement finds the score an older item did not apply to by itself.
    with django_assert_num_queries(len(WRITE)) as ctx:
        response = admin.post("/scores/bulk", body, format="json")

    statements = [query["sql"].split()[0] for query in ctx.captured_queries]
    assert statements == WRITE
    assert response.json() == {"created": 1, "updated": 2}
    assert stored() == [(USER_ID, 1, False), (OTHER_ID, 2, False), (9, 9, True)]
    assert logged() == [
        EXISTING_LOG[0],
        (USER_ID, 1, True, False, False, "1"),
        EXISTING_LOG[1],
        (OTHER_ID, 2, False, True, False, "1"),
        (9, 9, True, True, True, "1"),
    ]


# --- Concurrency -----------------------------------------------------------------------------

THREADS = 8


def in_parallel(request: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    """Run ``request(i)`` in ``count`` threads released at once; each uses its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = request(index)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


ROUNDS = 3


def ratio(numerator: int, denominator: int) -> float:
    """Rounded to 4 places, an exact half up, as the statistics are documented."""
    exact = Decimal(numerator) / Decimal(denominator)
    return float(exact.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="concurrency is a PostgreSQL property"
)
def test_concurrent_bulks_of_overlapping_pairs_in_different_orders_neither_fail_nor_duplicate(
    users_service,
) -> None:
    token = users_service.user(1, admin=True)
    bearer_client(token).get("/scores/summary")  # verdict cached, so the race is on the database
    pairs = [(user_id, exercise_id) for user_id in range(1, 41) for exercise_id in range(1, 6)]

    def batch(round_: int, index: int) -> list[dict[str, Any]]:
        """Each thread writes an overlapping window of the pairs, in an order of its own."""
        window = pairs[index * 20 : index * 20 + 120] + pairs[: 20 * (index % 3)]
        order = random.Random(f"{round_}-{index}").sample(window, len(window))
        return [item(u, e, (u + e + index + round_) % 2 == 0) for u, e in dict.fromkeys(order)]

    created = logged_total = 0
    for round_ in range(ROUNDS):  # a deadlock is likely, not certain, in any one round
        batches = [batch(round_, index) for index in range(THREADS)]
        responses = in_parallel(
            lambda i, b=batches: bearer_client(token).post(
                "/scores/bulk", bulk(*b[i]), format="json"
            )
        )

        assert Counter(r.status_code for r in responses) == {200: THREADS}, round_
        results = [response.json() for response in responses]
        assert [r["created"] + r["updated"] for r in results] == [len(b) for b in batches]
        created += sum(result["created"] for result in results)

        logged_total += sum(len(b) for b in batches)

    assert created == len(pairs)
    assert [(u, e) for u, e, _ in stored()] == pairs
    # Every item logged exactly once, and each score counts exactly its applied attempts.
    assert Attempt.objects.count() == logged_total
    applied = Counter(Attempt.objects.filter(applied=True).values_list("user_id", "exercise_id"))
    assert {(s.user_id, s.exercise_id): s.attempts for s in Score.objects.all()} == applied
    truth = (
        Score.objects.order_by("exercise_id")
        .values("exercise_id")
        .annotate(
            attempted=Count("id"),
            correct=Count("id", filter=Q(correct=True)),
            first_try_correct=Count("id", filter=Q(first_attempt_correct=True)),
            solved=Count("attempts_to_correct"),
            to_correct=Sum("attempts_to_correct"),
        )
    )
    stats = bearer_client(token).get("/scores/stats/exercises").json()["results"]
    counted = ("exercise_id", "attempted", "correct", "first_try_correct")
    assert [{k: row[k] for k in counted} for row in stats] == [
        {k: row[k] for k in counted} for row in truth
    ]
    assert [row["avg_attempts_to_correct"] for row in stats] == [
        ratio(row["to_correct"], row["solved"]) if row["solved"] else None for row in truth
    ]
