"""The audit log (spec: "Personal data and audit"): an entry for every listed action, with who,
what, on what and why, and no score values or secrets; read-only in the admin; append-only by
the database itself, except the retention command."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from scores import audit
from scores.callers import Caller
from scores.models import Attempt, AuditEntry, Score
from scores.services import Write, score_write

pytestmark = pytest.mark.django_db

LIST = "/admin/scores/score/"
AUDIT_LIST = "/admin/scores/auditentry/"


def entries() -> list[tuple[str, str, str, str]]:
    """The audit log as (actor, action, target, reason), oldest first."""
    return list(
        AuditEntry.objects.order_by("id").values_list("actor", "action", "target", "reason")
    )


def a_score(user_id: int = 4, exercise_id: int = 3, *, correct: bool = False) -> Any:
    return score_write(
        write=Write(user_id=user_id, exercise_id=exercise_id, correct=correct),
        recorded_by="grader",
    ).score


@pytest.fixture
def staffer(django_user_model: Any) -> Client:
    """A staff account that may do anything in the admin."""
    client = Client()
    client.force_login(
        django_user_model.objects.create_user("alice", is_staff=True, is_superuser=True)
    )
    return client


# --- record() ---------------------------------------------------------------------------------


def test_record_appends_an_entry_at_now() -> None:
    before = timezone.now()

    entry = audit.record("staff:alice", "webhook.created", "webhook 3", "New consumer")

    assert entries() == [("staff:alice", "webhook.created", "webhook 3", "New consumer")]
    assert before <= entry.at <= timezone.now()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("", "webhook.created", "webhook 3"), "actor must be 1 to 200 characters"),
        (("a" * 201, "webhook.created", "webhook 3"), "actor must be 1 to 200 characters"),
        (("staff:alice", "x" * 33, "webhook 3"), "action must be 1 to 32 characters"),
        (("staff:alice", "webhook.created", ""), "target must be 1 to 200 characters"),
        (("staff:alice", "webhook.created", "webhook 3", "two\nlines"), "reason: Must not"),
        (("staff:alice", "webhook.created", "webhook 3", "x" * 501), "reason: Must be at most"),
    ],
)
def test_record_refuses_what_the_log_would_not_hold(arguments, message) -> None:
    with pytest.raises(ValueError, match=message):
        audit.record(*arguments)

    assert entries() == []


@pytest.mark.parametrize(
    ("caller", "actor"),
    [
        (Caller(user_id=1, privileged=True, name="1"), "user:1"),
        (Caller(user_id=None, privileged=True, name="grader"), "staff:grader"),
    ],
)
def test_actors_of_api_callers(caller, actor) -> None:
    assert audit.actor_of(caller) == actor


# --- Score deletions and staff edits in the admin -----------------------------------------------


def test_a_staff_change_needs_a_reason_and_changes_nothing_without_one(staffer) -> None:
    score = a_score()

    response = staffer.post(f"{LIST}{score['id']}/change/", {"correct": "on", "_save": "Save"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"reason": ["This field is required."]}
    assert list(Score.objects.values_list("correct", "attempts")) == [(False, 1)]
    assert Attempt.objects.count() == 1
    assert entries() == []


def test_a_staff_change_with_a_bad_reason_is_a_form_error(staffer) -> None:
    score = a_score()

    response = staffer.post(
        f"{LIST}{score['id']}/change/", {"correct": "on", "reason": "why\x1b", "_save": "Save"}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "reason": ["Must not contain control characters (U+0000-U+001F, U+007F-U+009F)."]
    }
    assert entries() == []


def test_a_staff_change_is_audited_and_its_reason_logged_with_the_attempt(staffer) -> None:
    score = a_score()

    response = staffer.post(
        f"{LIST}{score['id']}/change/",
        {"correct": "on", "points": "7", "max_points": "10", "reason": "Appeal upheld"},
    )

    assert response.status_code == 302
    assert entries() == [
        (
            "staff:alice",
            "score.changed",
            f"score {score['id']} (user 4, exercise 3)",
            "Appeal upheld",
        )
    ]
    assert Attempt.objects.order_by("id").last().reason == "Appeal upheld"  # type: ignore[union-attr]


@pytest.mark.parametrize(("reason", "stored"), [("", ""), ("Missing result", "Missing result")])
def test_a_staff_add_is_audited_with_its_reason_if_any(staffer, reason, stored) -> None:
    response = staffer.post(
        f"{LIST}add/", {"user_id": "4", "exercise_id": "3", "correct": "on", "reason": reason}
    )

    assert response.status_code == 302
    score = Score.objects.get()
    assert entries() == [
        ("staff:alice", "score.added", f"score {score.id} (user 4, exercise 3)", stored)
    ]


def test_the_delete_confirmation_asks_for_a_reason(staffer) -> None:
    score = a_score()

    html = staffer.get(f"{LIST}{score['id']}/delete/").content.decode()

    assert '<input type="text" name="reason" id="id_reason" maxlength="500"' in html
    assert 'name="post" value="yes"' in html


def test_a_delete_without_a_reason_asks_again_and_deletes_nothing(staffer) -> None:
    score = a_score()
    url = f"{LIST}{score['id']}/delete/"

    response = staffer.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == url
    assert "Reason: This field is required." in staffer.get(url).content.decode()
    assert Score.objects.count() == 1
    assert entries() == []


def test_a_delete_with_a_reason_is_audited(staffer) -> None:
    score = a_score()

    response = staffer.post(f"{LIST}{score['id']}/delete/", {"post": "yes", "reason": "Test run"})

    assert response.status_code == 302
    assert Score.objects.count() == 0
    assert entries() == [
        ("staff:alice", "score.deleted", f"score {score['id']} (user 4, exercise 3)", "Test run")
    ]


def test_delete_selected_without_a_reason_shows_the_confirmation_again(staffer) -> None:
    scores = [a_score(user_id) for user_id in (4, 5)]
    selected = [score["id"] for score in scores]

    response = staffer.post(
        LIST, {"action": "delete_selected", "_selected_action": selected, "post": "yes"}
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "Reason: This field is required." in html
    assert '<input type="text" name="reason" id="id_reason"' in html
    assert Score.objects.count() == 2
    assert entries() == []


def test_delete_selected_with_a_reason_audits_each_score(staffer) -> None:
    scores = [a_score(user_id) for user_id in (4, 5)]

    response = staffer.post(
        LIST,
        {
            "action": "delete_selected",
            "_selected_action": [score["id"] for score in scores],
            "post": "yes",
            "reason": "Seeded by mistake",
        },
    )

    assert response.status_code == 302
    assert Score.objects.count() == 0
    assert sorted(entries()) == [
        ("staff:alice", "score.deleted", f"score {s['id']} (user {s['user_id']}, exercise 3)", r)
        for s, r in zip(scores, ["Seeded by mistake"] * 2, strict=True)
    ]


# --- API tokens -------------------------------------------------------------------------------


def test_create_service_token_audits_the_token_issued_and_the_one_it_replaces() -> None:
    call_command("create_service_token", "grader", stdout=io.StringIO())
    first = Token.objects.get().key
    call_command("create_service_token", "grader", "--rotate", stdout=io.StringIO())
    second = Token.objects.get().key

    actor = audit.command_actor("create_service_token")
    assert entries() == [
        (actor, "token.issued", "token of account grader", ""),
        (actor, "token.revoked", "token of account grader", ""),
        (actor, "token.issued", "token of account grader", ""),
    ]
    assert_no_secret_in_the_log(first, second)


def test_the_token_admin_audits_tokens_issued_and_revoked(staffer, django_user_model) -> None:
    account = django_user_model.objects.create_user("grader", is_staff=True)

    added = staffer.post("/admin/authtoken/tokenproxy/add/", {"user": account.pk})
    key = Token.objects.get(user=account).key
    deleted = staffer.post(f"/admin/authtoken/tokenproxy/{account.pk}/delete/", {"post": "yes"})

    assert (added.status_code, deleted.status_code) == (302, 302)
    assert not Token.objects.exists()
    assert entries() == [
        ("staff:alice", "token.issued", "token of account grader", ""),
        ("staff:alice", "token.revoked", "token of account grader", ""),
    ]
    assert_no_secret_in_the_log(key)


def assert_no_secret_in_the_log(*secrets: str) -> None:
    for entry in entries():
        for secret in secrets:
            assert all(secret not in field for field in entry)


# --- Read-only in the admin -------------------------------------------------------------------


def test_staff_read_the_audit_log_in_the_admin(staffer) -> None:
    audit.record("staff:bob", "user.erased", "user 4: 2 scores, 5 attempts", "GDPR request 17")

    response = staffer.get(AUDIT_LIST)

    assert response.status_code == 200
    assert [str(entry) for entry in response.context["cl"].result_list] == [
        str(AuditEntry.objects.get())
    ]
    assert response.context["action_form"] is None  # no action: not even "delete selected"


def test_nobody_adds_changes_or_deletes_an_entry_in_the_admin(staffer) -> None:
    entry = audit.record("staff:bob", "user.erased", "user 4: 2 scores, 5 attempts")

    add = staffer.get(f"{AUDIT_LIST}add/")
    view = staffer.get(f"{AUDIT_LIST}{entry.id}/change/")
    change = staffer.post(f"{AUDIT_LIST}{entry.id}/change/", {"actor": "staff:eve"})
    delete = staffer.post(f"{AUDIT_LIST}{entry.id}/delete/", {"post": "yes"})

    assert (add.status_code, view.status_code, change.status_code, delete.status_code) == (
        403,
        200,
        403,
        403,
    )
    assert 'name="_save"' not in view.content.decode()
    assert entries() == [("staff:bob", "user.erased", "user 4: 2 scores, 5 attempts", "")]


# --- Append-only, by the database -----------------------------------------------------------


def execute(*statements: str) -> None:
    """Run ``statements`` in one transaction (a savepoint of the test's)."""
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET reason = 'rewritten'",
        "UPDATE audit_entries SET at = at",
        "DELETE FROM audit_entries",
        "DELETE FROM audit_entries WHERE id = -1",  # no row: refused all the same
    ],
)
def test_the_database_refuses_to_change_or_delete_an_entry(statement) -> None:
    audit.record("staff:bob", "user.erased", "user 4: 2 scores, 5 attempts", "Request 17")
    if connection.vendor != "postgresql" and "-1" in statement:
        pytest.skip("SQLite's triggers are per row: a statement touching none is harmless")

    with pytest.raises(DatabaseError, match="append-only"):
        execute(statement)

    assert entries() == [("staff:bob", "user.erased", "user 4: 2 scores, 5 attempts", "Request 17")]


def test_the_orm_cannot_change_or_delete_an_entry_either() -> None:
    entry = audit.record("staff:bob", "user.erased", "user 4")

    for change in (
        lambda: AuditEntry.objects.update(reason="rewritten"),
        lambda: AuditEntry.objects.all().delete(),
        entry.delete,
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            change()

    assert AuditEntry.objects.count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's catalogs and settings")
def test_only_a_transaction_with_the_retention_setting_may_delete() -> None:
    audit.record("staff:bob", "user.erased", "user 4")

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('evalsvc.audit_retention', 'on', true)")
        cursor.execute("DELETE FROM audit_entries")
        assert AuditEntry.objects.count() == 0
        transaction.set_rollback(True)

    with pytest.raises(DatabaseError, match="append-only"):  # an UPDATE never
        execute(
            "SELECT set_config('evalsvc.audit_retention', 'on', true)",
            "UPDATE audit_entries SET reason = 'rewritten'",
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger "
            "WHERE tgrelid = 'audit_entries'::regclass AND NOT tgisinternal"
        )
        assert cursor.fetchall() == [("audit_entries_append_only", "O")]
    assert AuditEntry.objects.count() == 1


def test_purge_audit_deletes_only_the_entries_past_the_retention_and_records_it() -> None:
    now = timezone.now()
    AuditEntry.objects.bulk_create(
        AuditEntry(
            at=now - timedelta(days=days),
            actor="staff:bob",
            action="score.deleted",
            target=f"score {days}",
        )
        for days in (400, 366, 364, 1)
    )
    out = io.StringIO()

    call_command("purge_audit", "--older-than-days", "365", stdout=out)

    assert out.getvalue() == "Deleted 2 audit entries older than 365 days.\n"
    remaining = entries()
    assert remaining[:2] == [
        ("staff:bob", "score.deleted", "score 364", ""),
        ("staff:bob", "score.deleted", "score 1", ""),
    ]
    actor, action, target, reason = remaining[2]
    assert (actor, action, reason) == (audit.command_actor("purge_audit"), "audit.purged", "")
    assert target.startswith("2 entries before ")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.all().delete()  # the guard is back once the purge committed


def test_purge_audit_in_batches(monkeypatch) -> None:
    monkeypatch.setattr(audit, "PURGE_BATCH", 2)
    old = timezone.now() - timedelta(days=30)
    AuditEntry.objects.bulk_create(
        AuditEntry(at=old, actor="staff:bob", action="score.deleted", target=f"score {n}")
        for n in range(5)
    )

    purged = audit.purge_audit(older_than=timedelta(days=7), actor="staff:ops")

    assert purged == 5
    assert [action for _, action, _, _ in entries()] == ["audit.purged"]


@pytest.mark.parametrize("days", ["0", "-3"])
def test_purge_audit_keeps_at_least_a_day(days) -> None:
    audit.record("staff:bob", "user.erased", "user 4")

    with pytest.raises(CommandError, match="--older-than-days must be 1 or more"):
        call_command("purge_audit", "--older-than-days", days, stdout=io.StringIO())

    assert AuditEntry.objects.count() == 1
