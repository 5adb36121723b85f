"""A user's personal data (spec: "Personal data and audit"): the export, streamed, of everything
stored about them; the erasure of it all in one transaction, with its events, the statistics
kept right, idempotent, and under concurrent writes of the same user; the commands doing the
same."""

from __future__ import annotations

import importlib
import io
import json
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scores import audit, privacy
from scores.models import Attempt, AuditEntry, ExerciseStats, Score, ScoreEvent
from scores.privacy import user_erase
from scores.services import Write, score_delete, score_write, scores_upsert_many
from scores.statements import attempts_json, current_statement
from scores.tests.conftest import OTHER_ID, USER_ID
from scores.tests.test_history import attempt_json

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="server-side cursors and concurrency: PostgreSQL's"
)
URL = "/privacy/users/{}"
COUNTERS = importlib.import_module("scores.migrations.0005_partial_credit").COUNTERS


def body(response: Any) -> Any:
    assert response.streaming
    return json.loads(b"".join(response.streaming_content))


def write(user_id: int, exercise_id: int, **fields: Any) -> dict[str, Any]:
    result = score_write(
        write=Write(user_id=user_id, exercise_id=exercise_id, **fields), recorded_by="grader"
    )
    return dict(result.score)


@pytest.fixture
def history() -> dict[str, Any]:
    """User 4: exercise 3 graded twice with points and a regrade reason, exercise 7 once, a
    score of exercise 9 deleted since (its log kept), and a staff edit in the admin's history;
    user 5 alike, for exercise 3."""
    day = timezone.now() - timedelta(days=1)
    write(USER_ID, 3, correct=False, points=Decimal(5), max_points=Decimal(10), attempted_at=day)
    write(
        USER_ID,
        3,
        correct=True,
        points=Decimal("9.5"),
        max_points=Decimal(10),
        reason="Regraded after the test fix",
        attempt_id=uuid.UUID("3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b"),
    )
    write(USER_ID, 3, correct=False, attempted_at=day - timedelta(hours=1))  # not applied
    seven = write(USER_ID, 7, correct=False)
    nine = write(USER_ID, 9, correct=True)
    score_delete(score_id=nine["id"], actor="staff:alice", reason="Duplicate")
    write(OTHER_ID, 3, correct=True, points=Decimal(7), max_points=Decimal(10))
    write(OTHER_ID, 3, correct=False, reason="Appeal lost")
    LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(Score),
        object_id=str(seven["id"]),
        object_repr="user 4 / exercise 7: incorrect",
        action_flag=CHANGE,
        user=_staff_account(),
    )
    return {"seven": seven, "nine": nine}


def _staff_account() -> Any:
    account, _ = get_user_model().objects.get_or_create(
        username="alice", defaults={"is_staff": True}
    )
    return account


def everything_of(user_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every row stored about ``user_id``, whole."""
    return {
        "scores": list(Score.objects.filter(user_id=user_id).order_by("id").values()),
        "attempts": list(Attempt.objects.filter(user_id=user_id).order_by("id").values()),
        "events": list(ScoreEvent.objects.filter(user_id=user_id).order_by("id").values()),
    }


# --- The export ---------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["user", "admin", "staff"])
def test_the_export_is_everything_stored_about_the_user(request, history, caller) -> None:
    client = request.getfixturevalue(caller)
    owner = request.getfixturevalue("user")

    response = client.get(URL.format(USER_ID))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    scores = Score.objects.filter(user_id=USER_ID).order_by("id")
    assert body(response) == {
        "user_id": USER_ID,
        "scores": [owner.get(f"/scores/{score.id}").json() for score in scores],
        "attempts": [
            attempt_json(attempt)
            for attempt in Attempt.objects.filter(user_id=USER_ID).order_by("id")
        ],
    }


def test_the_export_holds_points_reasons_and_the_log_of_deleted_scores(user, history) -> None:
    exported = body(user.get(URL.format(USER_ID)))

    assert [(s["exercise_id"], s["points"], s["max_points"]) for s in exported["scores"]] == [
        (3, 9.5, 10.0),
        (7, None, None),
    ]
    assert [
        (a["exercise_id"], a["points"], a["reason"], a["applied"], a["recorded_by"])
        for a in exported["attempts"]
    ] == [
        (3, 5.0, None, True, "grader"),
        (3, 9.5, "Regraded after the test fix", True, "grader"),
        (3, None, None, False, "grader"),
        (7, None, None, True, "grader"),
        (9, None, None, True, "grader"),  # its score is deleted: the log is still theirs
    ]
    assert exported["attempts"][1]["attempt_id"] == "3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b"


def test_a_user_with_nothing_stored_exports_empty_lists(admin) -> None:
    response = admin.get(URL.format(77))

    assert response.status_code == 200
    assert body(response) == {"user_id": 77, "scores": [], "attempts": []}


def test_another_users_export_is_a_404_whether_or_not_they_have_data(other, history) -> None:
    with_data = other.get(URL.format(USER_ID))
    without = other.get(URL.format(77))

    assert with_data.status_code == without.status_code == 404
    assert with_data.json() == without.json() == {"detail": "Not found."}


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ("abc", "Must be an integer."),
        ("4.0", "Must be an integer."),
        ("-4", "Must be an integer."),
        ("0", "Must be an integer from 1 to 2147483647."),
        ("2147483648", "Must be an integer from 1 to 2147483647."),
        ("%C2%B2", "Must be an integer."),  # a superscript two: a digit to int(), not to us
    ],
)
@pytest.mark.parametrize("method", ["get", "delete"])
def test_a_path_that_names_no_user_is_a_400_naming_user_id(admin, method, segment, message):
    response = getattr(admin, method)(URL.format(segment))

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid input.", "errors": {"user_id": [message]}}


def bulk_history(scores: int, attempts: int) -> None:
    """``scores`` scores of user 4 and ``attempts`` log rows, inserted in a few statements."""
    now = timezone.now()
    Score.objects.bulk_create(
        Score(user_id=USER_ID, exercise_id=n, correct=n % 2 == 0) for n in range(1, scores + 1)
    )
    Attempt.objects.bulk_create(
        Attempt(
            score_id=n,
            user_id=USER_ID,
            exercise_id=1 + n % scores,
            correct=True,
            attempted_at=now,
            recorded_at=now,
            recorded_by="grader",
            applied=True,
            created_score=False,
            reason=f"attempt {n}",
        )
        for n in range(1, attempts + 1)
    )


def expected_document(user_id: int = USER_ID) -> dict[str, Any]:
    scores = list(Score.objects.filter(user_id=user_id).order_by("id"))
    return {
        "user_id": user_id,
        "scores": [
            {
                "id": s.id,
                "user_id": s.user_id,
                "exercise_id": s.exercise_id,
                "correct": s.correct,
                "created_at": s.created_at.isoformat().replace("+00:00", "Z"),
                "updated_at": s.updated_at.isoformat().replace("+00:00", "Z"),
                "attempts": s.attempts,
                "first_correct_at": None,
                "points": None,
                "max_points": None,
            }
            for s in scores
        ],
        "attempts": [
            attempt_json(a) for a in Attempt.objects.filter(user_id=user_id).order_by("id")
        ],
    }


def test_the_export_streams_in_chunks_of_rows(user) -> None:
    bulk_history(scores=600, attempts=1200)

    response = user.get(URL.format(USER_ID))

    chunks = list(response.streaming_content)
    per_chunk = privacy.ROWS_PER_CHUNK
    # the opening, the scores' chunks, the middle, the attempts' chunks, the end
    assert len(chunks) == 3 + math.ceil(600 / per_chunk) + math.ceil(1200 / per_chunk)
    assert json.loads(b"".join(chunks)) == expected_document()


def test_the_export_in_keyset_batches_is_the_same_document(user, monkeypatch) -> None:
    bulk_history(scores=30, attempts=70)
    monkeypatch.setattr(privacy, "READ_BATCH", 25)
    user.get("/scores/summary")  # the token's verdict cached: no query of its own below
    streamed = body(user.get(URL.format(USER_ID)))
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)

    with CaptureQueriesContext(connection) as captured:
        batched = body(user.get(URL.format(USER_ID)))

    assert batched == streamed == expected_document()
    # scores: 2 batches and the empty read; attempts: 3 and the empty read
    assert len(captured) == 2 + 1 + 3 + 1
    assert all("LIMIT 25" in query["sql"] for query in captured.captured_queries)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_export_reads_through_a_server_side_cursor_as_it_streams(users_service) -> None:
    """As in production: autocommit, the rows fetched while the answer is iterated, never all
    at once."""
    from scores.tests.conftest import bearer_client

    client = bearer_client(users_service.user(USER_ID))
    bulk_history(scores=10, attempts=3 * privacy.READ_BATCH)

    chunks = iter(client.get(URL.format(USER_ID)).streaming_content)
    read = [next(chunks) for _ in range(4)]  # the opening, the scores, the middle, 1 chunk
    open_while_streaming = server_side_cursors()
    read += list(chunks)

    assert read[2] == b'],"attempts":['
    assert open_while_streaming == 1
    assert server_side_cursors() == 0
    assert json.loads(b"".join(read)) == expected_document()


def server_side_cursors() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_cursors WHERE name LIKE '_django_curs_%%'")
        return int(cursor.fetchone()[0])


# --- The erasure ----------------------------------------------------------------------------------


def recount() -> dict[tuple[int, int], tuple[Any, ...]]:
    """Every counter of ``exercise_stats`` computed from ``scores`` (the counters' own
    definitions), per (exercise, shard) that counts anything."""
    sums = ", ".join(f"sum({counter.value.format(t='scores')})" for counter in COUNTERS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT exercise_id, user_id % 16, {sums} FROM scores GROUP BY 1, 2",  # noqa: S608
            None,
        )
        rows = cursor.fetchall()
    return {(row[0], row[1]): _counted(row[2:]) for row in rows}


def _counted(values: Any) -> tuple[Any, ...]:
    return tuple(round(Decimal(str(value)), 10) for value in values)


def stored_counters() -> dict[tuple[int, int], tuple[Any, ...]]:
    names = [counter.name for counter in COUNTERS]
    rows = ExerciseStats.objects.values_list("exercise_id", "shard", *names)
    return {
        (exercise_id, shard): _counted(values)
        for exercise_id, shard, *values in rows
        if any(values)
    }


def test_an_erasure_removes_everything_of_the_user_and_nothing_of_others(admin, history):
    others = everything_of(OTHER_ID)
    seven = history["seven"]
    scores = list(Score.objects.filter(user_id=USER_ID).order_by("id").values_list("id", flat=True))
    attempts = Attempt.objects.filter(user_id=USER_ID).count()

    response = admin.delete(URL.format(USER_ID) + "?reason=Erasure%20request%2042")

    assert response.status_code == 200
    assert response.json() == {
        "user_id": USER_ID,
        "scores_deleted": 2,
        "attempts_deleted": attempts,
    }
    assert attempts == 5
    left = everything_of(USER_ID)
    assert left["scores"] == left["attempts"] == []
    # Of their events only score.deleted ones (ids only) are left: the earlier deletion's, and
    # one per score erased now.
    assert [(e["type"], e["score_id"]) for e in left["events"]] == [
        ("score.deleted", history["nine"]["id"]),
        *[("score.deleted", score_id) for score_id in scores],
    ]
    assert all(e["correct"] is None and e["points"] is None for e in left["events"])
    assert not LogEntry.objects.filter(object_id=str(seven["id"])).exists()
    assert everything_of(OTHER_ID) == others
    assert stored_counters() == recount()
    assert list(
        AuditEntry.objects.order_by("id").values_list("actor", "action", "target", "reason")
    )[-1] == (
        "user:1",
        "user.erased",
        "user 4: 2 scores, 5 attempts",
        "Erasure request 42",
    )


def test_an_erased_user_exports_nothing_and_an_erasure_again_answers_zeros(admin, history):
    admin.delete(URL.format(USER_ID))

    again = admin.delete(URL.format(USER_ID))

    assert again.status_code == 200
    assert again.json() == {"user_id": USER_ID, "scores_deleted": 0, "attempts_deleted": 0}
    assert body(admin.get(URL.format(USER_ID))) == {
        "user_id": USER_ID,
        "scores": [],
        "attempts": [],
    }
    assert [
        target for _, target in AuditEntry.objects.order_by("id").values_list("action", "target")
    ][-2:] == [
        "user 4: 2 scores, 5 attempts",
        "user 4: 0 scores, 0 attempts",
    ]


def test_a_user_with_nothing_stored_is_erased_with_zeros(staff) -> None:
    response = staff.delete(URL.format(77))

    assert response.status_code == 200
    assert response.json() == {"user_id": 77, "scores_deleted": 0, "attempts_deleted": 0}


@pytest.mark.parametrize(
    ("caller", "status"), [("user", 403), ("other", 404)], ids=["themself", "another-user"]
)
def test_a_non_privileged_caller_erases_nothing(request, history, caller, status) -> None:
    before = everything_of(USER_ID)

    response = request.getfixturevalue(caller).delete(URL.format(USER_ID))

    assert response.status_code == status
    assert everything_of(USER_ID) == before


@pytest.mark.parametrize("reason", ["%0A", "x" * 501], ids=["line-feed", "501-characters"])
def test_an_erasure_with_a_bad_reason_is_a_400_and_erases_nothing(admin, history, reason):
    before = everything_of(USER_ID)

    response = admin.delete(URL.format(USER_ID) + f"?reason={reason}")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["reason"]
    assert everything_of(USER_ID) == before


def test_an_erasure_is_one_transaction(admin, history, monkeypatch) -> None:
    before = everything_of(USER_ID)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the audit log is unavailable")

    monkeypatch.setattr(audit, "record", fail)
    with pytest.raises(RuntimeError):
        user_erase(user_id=USER_ID, actor="staff:alice")

    assert everything_of(USER_ID) == before


def test_the_statistics_follow_an_erasure(admin, staff) -> None:
    items = [
        {"user_id": u, "exercise_id": e, "correct": (u + e) % 3 == 0, "points": e, "max_points": 9}
        for u in (USER_ID, OTHER_ID, 20)
        for e in (1, 2, 3)
    ]
    staff.post("/scores/bulk", {"scores": items}, format="json")
    before = admin.get("/scores/stats/exercises").json()["results"]

    admin.delete(URL.format(USER_ID))

    after = admin.get("/scores/stats/exercises").json()["results"]
    assert [row["attempted"] for row in before] == [3, 3, 3]
    assert [row["attempted"] for row in after] == [2, 2, 2]
    assert stored_counters() == recount()


# --- The commands -----------------------------------------------------------------------------


def run(command: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_erase_user_erases_as_the_api_does(history) -> None:
    out, _ = run("erase_user", str(USER_ID), "--reason", "Ticket 1234")

    assert out == "Erased user 4: 2 scores, 5 attempts.\n"
    assert everything_of(USER_ID)["scores"] == everything_of(USER_ID)["attempts"] == []
    assert list(
        AuditEntry.objects.order_by("id").values_list("actor", "action", "target", "reason")
    )[-1] == (
        audit.command_actor("erase_user"),
        "user.erased",
        "user 4: 2 scores, 5 attempts",
        "Ticket 1234",
    )
    assert run("erase_user", str(USER_ID), "--reason", "Again")[0] == (
        "Erased user 4: 0 scores, 0 attempts.\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["4"], "the following arguments are required: --reason"),
        (["4", "--reason", ""], "--reason: give one"),
        (["4", "--reason", "two\nlines"], "--reason: Must not contain control characters"),
        (["four", "--reason", "x"], "user_id: Must be an integer."),
        (["0", "--reason", "x"], "user_id: Must be an integer from 1 to 2147483647."),
    ],
)
def test_erase_user_refuses_bad_arguments_and_erases_nothing(history, args, message) -> None:
    before = everything_of(USER_ID)

    with pytest.raises(CommandError, match=message):
        run("erase_user", *args)

    assert everything_of(USER_ID) == before


def test_export_user_writes_the_apis_document_to_stdout(user, history) -> None:
    out, _ = run("export_user", str(USER_ID))

    assert out.endswith("}\n")
    assert json.loads(out) == body(user.get(URL.format(USER_ID)))


def test_export_user_writes_a_file_whole(user, history, tmp_path: Path) -> None:
    path = tmp_path / "user-4.json"

    out, err = run("export_user", str(USER_ID), "--output", str(path))

    assert (out, err) == ("", f"Exported user 4 to {path}.\n")
    assert json.loads(path.read_bytes()) == body(user.get(URL.format(USER_ID)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user-4.json"]


def test_export_user_to_a_directory_that_does_not_exist_is_an_error(tmp_path) -> None:
    with pytest.raises(CommandError, match="No such file or directory"):
        run("export_user", "4", "--output", str(tmp_path / "missing" / "user-4.json"))


# --- Erasure racing with writes of the same user (PostgreSQL) -----------------------------------


@dataclass
class Timed:
    """One write, or an erasure: when it began and returned, its attempt ids, what it raised."""

    start: float
    end: float = 0.0
    attempt_ids: list[uuid.UUID] = field(default_factory=list)
    error: BaseException | None = None


EXERCISES = 30  # writes to exercises the user has no score of yet race with the erasures too
ERASURES = 5


def writer(user_id: int, seed: int, erased: threading.Event, done: list[Timed]) -> None:
    """Writes of ``user_id`` until the erasures are over, each of a kind that takes its own
    path: an upsert that applies (creating or changing a score: one statement), one that does
    not (older than its score: logged against it by a second statement), a bulk write of two
    items (one transaction)."""
    rng = random.Random(seed)
    old = timezone.now() - timedelta(days=1)
    try:
        while not erased.is_set():
            kind = rng.choice(["applied", "older", "bulk"])
            exercise = rng.randint(1, EXERCISES)
            timed = Timed(start=time.monotonic())
            try:
                if kind == "bulk":
                    items = [
                        Write(
                            user_id=user_id,
                            exercise_id=e,
                            correct=rng.random() < 0.5,
                            attempt_id=uuid.uuid4(),
                        )
                        for e in (exercise, exercise % EXERCISES + 1)
                    ]
                    scores_upsert_many(writes=items, recorded_by="grader")
                    timed.attempt_ids = [item.attempt_id for item in items if item.attempt_id]
                else:
                    attempt_id = uuid.uuid4()
                    score_write(
                        write=Write(
                            user_id=user_id,
                            exercise_id=exercise,
                            correct=rng.random() < 0.5,
                            attempt_id=attempt_id,
                            attempted_at=old if kind == "older" else None,
                        ),
                        recorded_by="grader",
                    )
                    timed.attempt_ids = [attempt_id]
            except BaseException as exc:
                timed.error = exc
            timed.end = time.monotonic()
            done.append(timed)
    finally:
        connections.close_all()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_an_erasure_racing_with_writes_of_the_user_erases_or_keeps_each_write_whole() -> None:
    """Writers of the erased user and of another user run in real threads while erasures run.
    A write that returned before an erasure began is erased; one that began after the last
    erasure returned is kept; every write racing with an erasure is erased or kept whole (each
    kept score with its complete log and its creation event; no log row or event of a score
    that is gone); nothing of the other user is touched; the statistics equal a recount."""
    for user_id in (USER_ID, OTHER_ID):
        for exercise in range(1, 9):
            write(user_id, exercise, correct=exercise % 2 == 0, attempt_id=uuid.uuid4())
    seeded = set(Attempt.objects.filter(user_id=USER_ID).values_list("attempt_id", flat=True))
    erased = threading.Event()
    done: dict[str, list[Timed]] = {name: [] for name in ("w0", "w1", "w2", "other")}
    erasures: list[Timed] = []

    def erase() -> None:
        try:
            for round_ in range(1, ERASURES + 1):
                while sum(len(done[f"w{i}"]) for i in range(3)) < 12 * round_:
                    time.sleep(0.005)  # some writes between erasures
                timed = Timed(start=time.monotonic())
                try:
                    user_erase(user_id=USER_ID, actor="staff:alice")
                except BaseException as exc:
                    timed.error = exc
                timed.end = time.monotonic()
                erasures.append(timed)
            time.sleep(0.1)  # writes after the last erasure
        finally:
            erased.set()
            connections.close_all()

    threads = [
        *[
            threading.Thread(target=writer, args=(USER_ID, i, erased, done[f"w{i}"]))
            for i in range(3)
        ],
        threading.Thread(target=writer, args=(OTHER_ID, 99, erased, done["other"])),
        threading.Thread(target=erase),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert [timed.error for timed in erasures] == [None] * ERASURES
    writes = [timed for i in range(3) for timed in done[f"w{i}"]]
    assert [timed.error for timed in writes + done["other"] if timed.error] == []
    kept = set(Attempt.objects.filter(user_id=USER_ID).values_list("attempt_id", flat=True))
    erased_later = [w for w in writes if any(e.start > w.end for e in erasures)]
    after = [w for w in writes if w.start > erasures[-1].end]
    racing = [w for w in writes if w not in erased_later and w not in after]
    assert seeded.isdisjoint(kept)
    assert all(kept.isdisjoint(w.attempt_ids) for w in erased_later)
    assert all(kept.issuperset(w.attempt_ids) for w in after)
    assert erased_later, "no write before an erasure: the test proves less than it says"
    assert after, "no write after the erasures: the test proves less than it says"
    for w in racing:  # a bulk write's items are erased or kept together
        assert kept.issuperset(w.attempt_ids) or kept.isdisjoint(w.attempt_ids)
    # Whole: each kept score has its complete log and its creation event; nothing is left of a
    # score that is gone.
    scores = {s.id: s for s in Score.objects.filter(user_id=USER_ID)}
    for score in scores.values():
        applied = Attempt.objects.filter(score_id=score.id, applied=True).count()
        assert applied == score.attempts
        assert ScoreEvent.objects.filter(score_id=score.id, type="score.created").count() == 1
    logged_against = set(Attempt.objects.filter(user_id=USER_ID).values_list("score_id", flat=True))
    assert logged_against <= set(scores)
    evented = set(
        ScoreEvent.objects.filter(user_id=USER_ID)
        .exclude(type="score.deleted")
        .values_list("score_id", flat=True)
    )
    assert evented <= set(scores)
    # The other user's writes are all there, each logged once.
    other_ids = {a for timed in done["other"] for a in timed.attempt_ids}
    logged = set(Attempt.objects.filter(user_id=OTHER_ID).values_list("attempt_id", flat=True))
    assert other_ids < logged
    assert len(logged) == 8 + len(other_ids)
    assert stored_counters() == recount()


# --- The interleavings that matter, one by one (PostgreSQL) -------------------------------------


def in_a_thread(function: Any) -> tuple[threading.Thread, list[Any]]:
    """Start ``function`` in a thread (with Django connections of its own); the list gets its
    result or what it raised."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(function())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_for_lock_waiters(count: int) -> None:
    """Until ``count`` backends of this database wait for a lock (10 s at most)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= count:
                return
        time.sleep(0.01)
    raise AssertionError(f"{count} backend(s) never waited for a lock")


def joined(thread: threading.Thread, outcome: list[Any]) -> Any:
    thread.join(timeout=30)
    assert not thread.is_alive()
    [result] = outcome
    if isinstance(result, BaseException):
        raise result
    return result


def erasing(user_id: int) -> tuple[threading.Thread, list[Any]]:
    return in_a_thread(lambda: user_erase(user_id=user_id, actor="staff:alice"))


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_score_created_while_the_erasure_deletes_is_kept_with_its_log(held) -> None:
    """The erasure's deletion of the scores waits on a locked one; meanwhile a write creates
    a new score of the user and commits. The erasure did not see it: it is kept with its log
    and its event, not left without them."""
    write(USER_ID, 1, correct=True)
    write(USER_ID, 2, correct=True)
    holder = held()
    holder.execute("SELECT 1 FROM scores WHERE user_id = %s AND exercise_id = 2 FOR UPDATE", [4])
    erasure = erasing(USER_ID)
    wait_for_lock_waiters(1)

    created = write(USER_ID, 9, correct=False, reason="Written during the erasure")
    holder.rollback()

    assert joined(*erasure) == privacy.Erasure(USER_ID, scores_deleted=2, attempts_deleted=2)
    assert list(Score.objects.filter(user_id=USER_ID).values_list("id", "attempts")) == [
        (created["id"], 1)
    ]
    assert list(Attempt.objects.filter(user_id=USER_ID).values_list("score_id", "reason")) == [
        (created["id"], "Written during the erasure")
    ]
    assert ScoreEvent.objects.filter(score_id=created["id"], type="score.created").exists()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_an_attempt_logged_against_a_score_being_erased_waits_and_logs_nothing(held) -> None:
    """An attempt that did not apply is logged against its score by a statement of its own.
    Run while the erasure has deleted that score but not yet committed, that statement waits
    for the erasure and then finds no score: no log row is left behind for a score that is
    gone."""
    write(USER_ID, 1, correct=True)
    write(USER_ID, 2, correct=True)
    holder = held()
    holder.execute("SELECT 1 FROM scores WHERE user_id = %s AND exercise_id = 2 FOR UPDATE", [4])
    erasure = erasing(USER_ID)  # deletes exercise 1's score, then waits for exercise 2's
    wait_for_lock_waiters(1)
    logger = held()
    older = Write(user_id=USER_ID, exercise_id=1, correct=False, attempt_id=uuid.uuid4())
    now = timezone.now()
    params = {
        "attempts": attempts_json([(0, older)], now - timedelta(days=1)),
        "now": now,
        "recorded_by": "grader",
    }
    logging = in_a_thread(
        lambda: logger.execute(current_statement("postgresql", log=True), params).fetchall()
    )
    wait_for_lock_waiters(2)

    holder.rollback()
    erased = joined(*erasure)
    logged = joined(*logging)
    logger.commit()

    assert erased == privacy.Erasure(USER_ID, scores_deleted=2, attempts_deleted=2)
    assert logged == []
    assert not Attempt.objects.filter(user_id=USER_ID).exists()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_an_erasure_waits_for_a_bulk_write_of_the_user_and_erases_all_of_it(held) -> None:
    """A bulk write changing one score of the user and creating another is open when the
    erasure begins: the erasure waits for it and erases both, never one of the two."""
    write(USER_ID, 1, correct=True)
    written = threading.Event()
    release = threading.Event()

    def bulk_in_an_open_transaction() -> Any:
        with transaction.atomic():
            result = scores_upsert_many(
                writes=[
                    Write(user_id=USER_ID, exercise_id=1, correct=False),
                    Write(user_id=USER_ID, exercise_id=9, correct=True),
                ],
                recorded_by="grader",
            )
            written.set()
            release.wait(timeout=10)  # committed when the test says
        return result

    bulk = in_a_thread(bulk_in_an_open_transaction)
    assert written.wait(timeout=10)
    erasure = erasing(USER_ID)
    wait_for_lock_waiters(1)

    release.set()

    assert joined(*bulk).created == 1
    assert joined(*erasure) == privacy.Erasure(USER_ID, scores_deleted=2, attempts_deleted=3)
    assert not Score.objects.filter(user_id=USER_ID).exists()
    assert not Attempt.objects.filter(user_id=USER_ID).exists()


# --- The schema -----------------------------------------------------------------------------------


def test_the_schema_describes_the_privacy_routes(anon) -> None:
    schema = anon.get("/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    route = schema["paths"]["/privacy/users/{user_id}"]

    assert sorted(route) == ["delete", "get"]
    export, erase = route["get"], route["delete"]
    assert (export["operationId"], export["tags"]) == ("privacy_export", ["privacy"])
    assert (erase["operationId"], erase["tags"]) == ("privacy_erase", ["privacy"])
    assert [p["name"] for p in export["parameters"]] == ["user_id"]
    assert [p["name"] for p in erase["parameters"]] == ["reason", "user_id"]
    assert sorted(export["responses"]) == ["200", "400", "401", "404", "405", "414", "429", "503"]
    assert sorted(erase["responses"]) == [
        *("200", "400", "401", "403", "404", "405", "414", "429", "503")
    ]
    components = schema["components"]["schemas"]
    assert sorted(components["PrivacyExport"]["properties"]) == ["attempts", "scores", "user_id"]
    assert sorted(components["Erasure"]["required"]) == [
        "attempts_deleted",
        "scores_deleted",
        "user_id",
    ]
