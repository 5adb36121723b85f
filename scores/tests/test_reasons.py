"""``reason`` on every write (spec: "Personal data and audit"): read like every other write field,
by every write path, stored in the attempt log and shown with it; the reason of a deletion goes
to the audit log."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.db import connection

from scores.models import Attempt, AuditEntry, Score
from scores.tests.conftest import USER_ID
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import NULL

pytestmark = pytest.mark.django_db

REGRADE = "Regraded after the test suite was fixed (ticket #41)"
CONTROL = "Must not contain control characters (U+0000-U+001F, U+007F-U+009F)."


def reasons() -> list[tuple[int, int, str | None]]:
    """The attempt log as (user_id, exercise_id, reason), as written."""
    return list(Attempt.objects.order_by("id").values_list("user_id", "exercise_id", "reason"))


# --- Every write path stores it -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/scores", {"exercise_id": 7, "correct": True}),
        ("patch", "/scores", {"exercise_id": 7, "correct": True}),
        ("put", "/scores/user/7", {"correct": True}),
    ],
)
def test_each_write_path_stores_the_reason_in_the_attempt_log(user, method, path, body) -> None:
    response = getattr(user, method)(path, {**body, "reason": REGRADE}, format="json")

    assert response.status_code == 201
    assert reasons() == [(USER_ID, 7, REGRADE)]


@pytest.mark.parametrize("method", ["put", "patch"])
def test_an_update_by_id_stores_the_reason(staff, method) -> None:
    score = ScoreFactory(user_id=USER_ID, exercise_id=7, correct=False)

    response = getattr(staff, method)(
        f"/scores/{score.id}", {"correct": True, "reason": REGRADE}, format="json"
    )

    assert response.status_code == 200
    assert reasons() == [(USER_ID, 7, REGRADE)]


def test_bulk_items_store_each_their_own_reason_or_none(staff) -> None:
    items = [
        {"user_id": 1, "exercise_id": 3, "correct": True, "reason": "Batch regrade"},
        {"user_id": 2, "exercise_id": 3, "correct": False},
        {"user_id": 3, "exercise_id": 3, "correct": False, "reason": ""},
    ]

    response = staff.post("/scores/bulk", {"scores": items}, format="json")

    assert response.status_code == 200
    assert reasons() == [(1, 3, "Batch regrade"), (2, 3, None), (3, 3, None)]


def test_the_csv_import_reads_an_optional_reason_column(tmp_path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text(
        'user_id,exercise_id,correct,reason\n1,3,true,"Imported, from the old service"\n2,3,0,\n',
        encoding="utf-8",
    )

    call_command("import_scores", str(path), stdout=io.StringIO(), stderr=io.StringIO())

    assert reasons() == [(1, 3, "Imported, from the old service"), (2, 3, None)]


def test_a_csv_reason_with_a_line_break_is_an_invalid_row_naming_it(tmp_path) -> None:
    from django.core.management import CommandError

    path = tmp_path / "scores.csv"
    path.write_text('user_id,exercise_id,correct,reason\n1,3,true,"two\nlines"\n', newline="")
    err = io.StringIO()

    with pytest.raises(CommandError, match="1 invalid row"):
        call_command("import_scores", str(path), stdout=io.StringIO(), stderr=err)

    assert err.getvalue().startswith(f"line 3: reason: {CONTROL}")
    assert Score.objects.count() == 0


def test_the_attempt_log_shows_the_reason(user) -> None:
    user.patch("/scores", {"exercise_id": 7, "correct": False}, format="json")
    score = user.patch(
        "/scores", {"exercise_id": 7, "correct": True, "reason": REGRADE}, format="json"
    ).json()

    log = user.get(f"/scores/{score['id']}/attempts").json()["results"]

    assert [attempt["reason"] for attempt in log] == [None, REGRADE]


# --- Read like every other field ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "Must be a string."),
        (True, "Must be a string."),
        (["why"], "Must be a string."),
        ({"why": "not"}, "Must be a string."),
        (None, NULL),
        ("x" * 501, "Must be at most 500 characters."),
        ("line one\nline two", CONTROL),
        ("tab\there", CONTROL),
        ("nul\x00", CONTROL),
        ("escape \x1b[31m", CONTROL),
        ("delete \x7f", CONTROL),
        ("next line \x85", CONTROL),
        ("\ud800", "Must be valid Unicode text (no lone surrogates)."),
    ],
    ids=[
        "number",
        "boolean",
        "list",
        "object",
        "null",
        "501-characters",
        "line-feed",
        "tab",
        "nul",
        "escape",
        "del",
        "c1-next-line",
        "lone-surrogate",
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "base"),
    [
        ("patch", "/scores", {"exercise_id": 5, "correct": True}),
        ("post", "/scores", {"exercise_id": 5, "correct": True}),
        ("put", "/scores/user/5", {"correct": True}),
    ],
)
def test_a_bad_reason_is_a_400_naming_it_and_nothing_is_written(
    user, method, path, base, value, message
) -> None:
    body = json.dumps({**base, "reason": value})  # escaped: a lone surrogate as \ud800

    response = getattr(user, method)(path, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid input.", "errors": {"reason": [message]}}
    assert Score.objects.count() == Attempt.objects.count() == 0


def test_a_bad_reason_in_a_bulk_item_is_a_400_naming_item_and_field(staff) -> None:
    items = [
        {"user_id": 1, "exercise_id": 3, "correct": True, "reason": "fine"},
        {"user_id": 2, "exercise_id": 3, "correct": True, "reason": "x" * 501},
    ]

    response = staff.post("/scores/bulk", {"scores": items}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "scores": {"1": {"reason": ["Must be at most 500 characters."]}}
    }
    assert Score.objects.count() == 0


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("x" * 500, "x" * 500),
        ("é" * 500, "é" * 500),  # characters, not bytes
        ("😀 emoji and  spaces ", "😀 emoji and  spaces "),  # stored as written
        ("", None),  # an empty reason is none
    ],
    ids=["500-ascii", "500-non-ascii", "as-written", "empty"],
)
def test_a_reason_up_to_500_characters_is_stored_as_written(user, value, stored) -> None:
    response = user.patch(
        "/scores", {"exercise_id": 5, "correct": True, "reason": value}, format="json"
    )

    assert response.status_code == 201
    assert reasons() == [(USER_ID, 5, stored)]


# --- Retries --------------------------------------------------------------------------------------


ATTEMPT = "3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b"


@pytest.mark.parametrize(
    ("retry", "status"),
    [
        ({"reason": REGRADE}, 201),  # the same request: answered as the first time
        ({}, 201),  # left out: compared only when given, as attempted_at
        ({"reason": "Another reason"}, 409),
    ],
    ids=["same", "left-out", "different"],
)
def test_a_retry_with_the_same_attempt_id_compares_the_reason_when_given(
    user, retry, status
) -> None:
    first = {"exercise_id": 5, "correct": True, "attempt_id": ATTEMPT, "reason": REGRADE}
    user.patch("/scores", first, format="json")

    response = user.patch(
        "/scores",
        {"exercise_id": 5, "correct": True, "attempt_id": ATTEMPT, **retry},
        format="json",
    )

    assert response.status_code == status
    if status == 409:
        assert response.json()["errors"] == {"reason": ["Differs from the recorded attempt."]}
    assert reasons() == [(USER_ID, 5, REGRADE)]


# --- Deletions: the audit log ---------------------------------------------------------------------


def audit_entries() -> list[tuple[str, str, str, str]]:
    return list(
        AuditEntry.objects.order_by("id").values_list("actor", "action", "target", "reason")
    )


@pytest.mark.parametrize(
    ("caller", "actor"), [("admin", "user:1"), ("staff", "staff:grader")], ids=["admin", "staff"]
)
def test_a_deletion_through_the_api_is_audited_with_its_reason(request, caller, actor) -> None:
    score = ScoreFactory(user_id=USER_ID, exercise_id=7, correct=True)

    response = request.getfixturevalue(caller).delete(
        f"/scores/{score.id}?reason=Duplicate%20of%20another%20score"
    )

    assert response.status_code == 204
    assert audit_entries() == [
        (
            actor,
            "score.deleted",
            f"score {score.id} (user {USER_ID}, exercise 7)",
            "Duplicate of another score",
        )
    ]


def test_a_deletion_without_a_reason_is_audited_without_one(admin) -> None:
    score = ScoreFactory(user_id=USER_ID, exercise_id=7, correct=True)

    admin.delete(f"/scores/{score.id}")

    assert audit_entries() == [
        ("user:1", "score.deleted", f"score {score.id} (user {USER_ID}, exercise 7)", "")
    ]


@pytest.mark.parametrize("reason", ["%0A", "x" * 501], ids=["line-feed", "501-characters"])
def test_a_deletion_with_a_bad_reason_is_a_400_and_deletes_nothing(admin, reason) -> None:
    score = ScoreFactory(user_id=USER_ID, exercise_id=7, correct=True)

    response = admin.delete(f"/scores/{score.id}?reason={reason}")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["reason"]
    assert Score.objects.count() == 1
    assert audit_entries() == []


# --- The schema -----------------------------------------------------------------------------------


def test_every_operation_taking_a_reason_in_its_query_documents_the_400(anon) -> None:
    schema = anon.get("/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    taking = {
        f"{method.upper()} {path}": operation["responses"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if any(p.get("name") == "reason" for p in operation.get("parameters", []))
    }

    assert sorted(taking) == ["DELETE /privacy/users/{user_id}", "DELETE /scores/{id}"]
    assert all("400" in responses for responses in taking.values())


def test_every_write_body_of_the_schema_has_reason(anon) -> None:
    schema = anon.get("/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    bodies = {
        name: component
        for name, component in schema["components"]["schemas"].items()
        if name.endswith("Request") and "correct" in component.get("properties", {})
    }

    assert sorted(bodies) == [
        "BulkItemRequest",
        "ScoreCorrectRequest",
        "ScoreUpdateRequest",
        "ScoreWriteRequest",
    ]
    for component in bodies.values():
        assert component["properties"]["reason"]["maxLength"] == 500
        assert "reason" not in component.get("required", [])
    assert "reason" in schema["components"]["schemas"]["Attempt"]["properties"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's catalogs")
def test_the_reason_column_was_added_without_a_default_or_a_rewrite() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type, character_maximum_length, is_nullable, column_default "
            "FROM information_schema.columns "
            "WHERE table_name = 'score_attempts' AND column_name = 'reason'"
        )
        assert cursor.fetchall() == [("character varying", 500, "YES", None)]
