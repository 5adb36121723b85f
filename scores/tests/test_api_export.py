"""GET /scores/export.csv: the list's scores as streamed CSV for privileged callers; errors are
the API's JSON whatever the Accept header says."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scores.csv_export import LINES_PER_CHUNK
from scores.models import MAX_ID, Score
from scores.selectors import EXPORT_BATCH
from scores.services import Write, score_write
from scores.tests.conftest import bearer_client
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import iso

pytestmark = pytest.mark.django_db

HEADER = "id,user_id,exercise_id,correct,created_at,updated_at,points,max_points\n"
URL = "/scores/export.csv"


def csv_text(response) -> str:
    assert response.streaming
    return b"".join(response.streaming_content).decode()


def csv_line(score: Score) -> str:
    score.refresh_from_db()
    verdict = "true" if score.correct else "false"
    return (
        f"{score.id},{score.user_id},{score.exercise_id},{verdict},"
        f"{iso(score.created_at)},{iso(score.updated_at)},{points(score.points)},"
        f"{points(score.max_points)}\n"
    )


def points(value: Any) -> str:
    return "" if value is None else str(value)


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.fixture
def rows() -> list[Score]:
    """Three scores with fixed timestamps (with and without microseconds)."""
    scores = []
    for user_id, exercise_id, correct, created_at, updated_at in (
        (4, 3, True, at(2026, 1, 2, 3, 4, 5, 123456), at(2026, 1, 2, 3, 4, 5, 123456)),
        (5, 3, False, at(2026, 2, 1), at(2026, 3, 1, 10, 0, 0, 1)),
        (4, 7, False, at(2026, 2, 2), at(2026, 4, 30, 23, 59, 59, 999999)),
    ):
        score = ScoreFactory(user_id=user_id, exercise_id=exercise_id, correct=correct)
        Score.objects.filter(id=score.id).update(created_at=created_at, updated_at=updated_at)
        scores.append(score)
    return scores


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_export_gives_privileged_callers_every_score_as_csv(caller, request, rows) -> None:
    first, second, third = (score.id for score in rows)

    response = request.getfixturevalue(caller).get(URL)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="scores.csv"'
    assert csv_text(response) == (
        HEADER + f"{first},4,3,true,2026-01-02T03:04:05.123456Z,2026-01-02T03:04:05.123456Z,,\n"
        f"{second},5,3,false,2026-02-01T00:00:00Z,2026-03-01T10:00:00.000001Z,,\n"
        f"{third},4,7,false,2026-02-02T00:00:00Z,2026-04-30T23:59:59.999999Z,,\n"
    )


def test_export_with_a_trailing_slash_and_accept_text_csv_is_the_same(staff, rows) -> None:
    plain = staff.get(URL)
    slashed = staff.get(URL + "/", HTTP_ACCEPT="text/csv")

    assert slashed.status_code == 200
    assert slashed["Content-Type"] == "text/csv; charset=utf-8"
    assert csv_text(slashed) == csv_text(plain)


def test_export_keeps_its_six_columns_for_scores_with_history(staff) -> None:
    """The history columns (attempts, first_correct_at, ...) are the JSON API's, not the
    CSV's; nor does the export read the attempt log."""
    for correct in (False, True, False):
        score_write(write=Write(user_id=4, exercise_id=3, correct=correct), recorded_by="test")
    score = Score.objects.get()
    assert score.attempts == 3

    with CaptureQueriesContext(connection) as captured:
        text = csv_text(staff.get(URL))

    assert text == HEADER + csv_line(score)
    assert not any("score_attempts" in query["sql"] for query in captured.captured_queries)


def test_export_of_no_scores_is_the_header_alone(staff) -> None:
    response = staff.get(URL)

    assert response.status_code == 200
    assert csv_text(response) == HEADER


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"exercise_id": 3}, [0, 1]),
        ({"exercise_id": 9}, []),
        ({"user_id": 4}, [0, 2]),
        ({"correct": "false"}, [1, 2]),
        ({"correct": "1"}, [0]),
        ({"updated_after": "2026-03-01T10:00:00.000001Z"}, [1, 2]),
        ({"updated_before": "2026-03-01T10:00:00.000001Z"}, [0]),
        ({"updated_after": "2026-03-01T10:00:00.000002Z", "exercise_id": 7}, [2]),
        ({"exercise_id": 3, "correct": "true", "user_id": 4}, [0]),
    ],
)
def test_export_applies_the_list_filters(admin, rows, query, expected) -> None:
    response = admin.get(URL, query)

    assert response.status_code == 200
    assert csv_text(response) == HEADER + "".join(csv_line(rows[index]) for index in expected)


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("exercise_id=abc", "exercise_id", "Enter a whole number."),
        ("exercise_id=0", "exercise_id", "Ensure this value is greater than or equal to 1."),
        (
            f"user_id={MAX_ID + 1}",
            "user_id",
            f"Ensure this value is less than or equal to {MAX_ID}.",
        ),
        (
            "correct=maybe",
            "correct",
            "Select a valid choice. maybe is not one of the available choices.",
        ),
        ("updated_after=yesterday", "updated_after", "Enter a valid date/time."),
        ("updated_before=2026-13-01T00:00:00Z", "updated_before", "Enter a valid date/time."),
    ],
)
@pytest.mark.parametrize("accept", [None, "text/csv"])
def test_export_with_a_bad_filter_is_a_json_400_naming_it(
    staff, rows, query, field, message, accept
) -> None:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}

    response = staff.get(f"{URL}?{query}", **headers)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Invalid input.", "errors": {field: [message]}}


@pytest.mark.parametrize("accept", [None, "text/csv", "text/csv, application/json;q=0.1"])
@pytest.mark.parametrize(
    ("caller", "status", "body"),
    [
        ("user", 403, {"detail": "Only privileged callers may do this."}),
        (
            "non_staff",
            403,
            {"detail": "Only platform users and staff accounts may use the scores API."},
        ),
        ("anon", 401, {"detail": "Authentication credentials were not provided."}),
    ],
)
def test_export_refusals_are_json_whatever_the_accept_header(
    caller, status, body, accept, request, rows
) -> None:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}

    response = request.getfixturevalue(caller).get(URL, **headers)

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json() == body
    assert not response.streaming


def test_export_of_an_invalid_bearer_token_is_a_json_401(users_service, rows) -> None:
    response = bearer_client("nobody").get(URL, HTTP_ACCEPT="text/csv")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Invalid, expired or inactive token."}
    assert response["WWW-Authenticate"] == 'Bearer realm="evalsvc"'


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_export_is_read_only(staff, rows, method) -> None:
    response = getattr(staff, method)(URL)

    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f'Method "{method.upper()}" not allowed.'}


def bulk_scores(count: int) -> list[Score]:
    """``count`` scores inserted in a few statements, returned in id order."""
    now = timezone.now()
    Score.objects.bulk_create(
        Score(
            user_id=n,
            exercise_id=1 + n % 7,
            correct=n % 3 == 0,
            created_at=now,
            updated_at=now,
        )
        for n in range(1, count + 1)
    )
    return list(Score.objects.order_by("id"))


def expected_csv(scores: list[Score]) -> str:
    return HEADER + "".join(
        f"{s.id},{s.user_id},{s.exercise_id},{'true' if s.correct else 'false'},"
        f"{iso(s.created_at)},{iso(s.updated_at)},,\n"
        for s in scores
    )


def test_export_streams_more_rows_than_one_chunk_in_id_order(staff) -> None:
    scores = bulk_scores(2500)

    response = staff.get(URL)

    assert response.status_code == 200
    assert response.streaming
    chunks = list(response.streaming_content)
    assert len(chunks) == 1 + math.ceil(2500 / LINES_PER_CHUNK)
    assert b"".join(chunks).decode() == expected_csv(scores)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="server-side cursors are PostgreSQL's"
)
def test_export_streams_through_a_server_side_cursor_outside_any_transaction(staff) -> None:
    """As in production: autocommit, the rows read while the response is iterated."""
    scores = bulk_scores(2500)

    response = staff.get(URL)

    assert response.status_code == 200
    assert not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    assert csv_text(response) == expected_csv(scores)


ROWS = 12_000


@pytest.mark.parametrize(
    ("query", "selected", "count", "queries"),
    [
        ("", lambda s: True, ROWS, 4),
        ("?correct=true", lambda s: s.correct, 4000, 2),
        ("?exercise_id=3", lambda s: s.exercise_id == 3, 1715, 2),
    ],
    ids=["all", "correct", "one-exercise"],
)
def test_export_in_keyset_batches_is_the_same_csv(
    admin, monkeypatch, query, selected, count, queries
) -> None:
    scores = bulk_scores(ROWS)
    admin.get("/scores/summary")  # caches the token's verdict: no query of its own below
    default = csv_text(admin.get(URL + query))
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)

    with CaptureQueriesContext(connection) as captured:
        keyset = csv_text(admin.get(URL + query))

    expected = [score for score in scores if selected(score)]
    assert len(expected) == count
    assert keyset == default == expected_csv(expected)
    # Full batches, the last partial one, and the empty read that ends the loop.
    assert len(captured) == math.ceil(count / EXPORT_BATCH) + 1 == queries
    assert all(f"LIMIT {EXPORT_BATCH}" in query["sql"] for query in captured.captured_queries)
