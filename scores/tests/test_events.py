"""Score events (spec: "Score events"): the outbox written with every applied change on every
write path, numbered in commit order, read at GET /events (also by long poll), kept for the
retention period."""

from __future__ import annotations

import io
import random
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.utils import timezone
from drf_orjson_renderer.renderers import ORJSONRenderer

from scores.events import cloudevent, events_after, sequence_events
from scores.models import ScoreEvent
from scores.services import Write, score_write
from scores.tests.conftest import USER_ID, bearer_client
from scores.tests.helpers import score_json

pytestmark = pytest.mark.django_db


def as_json(data: Any) -> Any:
    """``data`` as a client reads it: rendered by the API's renderer and parsed back."""
    return orjson.loads(ORJSONRenderer().render(data))


def events() -> list[tuple[str, int, int]]:
    """The outbox as (type, user_id, exercise_id), in the order appended."""
    return list(ScoreEvent.objects.order_by("id").values_list("type", "user_id", "exercise_id"))


# --- Every write path appends exactly its events ----------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("post", "/scores", {"exercise_id": 3, "correct": True}, "score.created"),
        ("patch", "/scores", {"exercise_id": 3, "correct": True}, "score.created"),
        ("put", "/scores/user/3", {"correct": True}, "score.created"),
    ],
)
def test_a_write_that_creates_a_score_appends_score_created(user, method, path, body, expected):
    getattr(user, method)(path, body, format="json")

    assert events() == [(expected, USER_ID, 3)]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("patch", "/scores", {"exercise_id": 3, "correct": False}),
        ("put", "/scores/user/3", {"correct": False}),
        ("put", "/scores/{id}", {"correct": False}),
        ("patch", "/scores/{id}", {"correct": False}),
    ],
)
def test_a_write_that_changes_a_score_appends_score_updated(user, method, path, body) -> None:
    score = user.patch("/scores", {"exercise_id": 3, "correct": True}, format="json").json()

    getattr(user, method)(path.format(id=score["id"]), body, format="json")

    assert events() == [("score.created", USER_ID, 3), ("score.updated", USER_ID, 3)]


def test_an_events_data_is_the_score_as_get_shows_it(user) -> None:
    created = user.patch("/scores", {"exercise_id": 3, "correct": True}, format="json").json()
    shown_created = user.get(f"/scores/{created['id']}").json()
    user.patch("/scores", {"exercise_id": 3, "points": 5, "max_points": 10}, format="json")
    shown_updated = user.get(f"/scores/{created['id']}").json()

    first, second = ScoreEvent.objects.order_by("id")

    assert as_json(cloudevent(first)["data"]) == shown_created
    assert as_json(cloudevent(second)["data"]) == shown_updated != shown_created


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            {"exercise_id": 3, "correct": True, "attempted_at": "2026-01-02T00:00:00Z"},
            {"exercise_id": 3, "correct": False, "attempted_at": "2026-01-01T00:00:00Z"},
        ),
        (
            {
                "exercise_id": 3,
                "correct": True,
                "attempt_id": "3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b",
            },
            {
                "exercise_id": 3,
                "correct": True,
                "attempt_id": "3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b",
            },
        ),
    ],
    ids=["an-older-attempt-not-applied", "a-replay"],
)
def test_a_write_that_changes_nothing_appends_nothing(user, first, second) -> None:
    user.patch("/scores", first, format="json")

    user.patch("/scores", second, format="json")

    assert events() == [("score.created", USER_ID, 3)]


def test_a_create_of_an_existing_score_appends_nothing(user) -> None:
    user.post("/scores", {"exercise_id": 3, "correct": True}, format="json")

    assert (
        user.post("/scores", {"exercise_id": 3, "correct": True}, format="json").status_code == 409
    )
    assert events() == [("score.created", USER_ID, 3)]


def test_a_bulk_write_appends_one_event_per_changed_score(staff) -> None:
    staff.post(
        "/scores/bulk",
        {"scores": [{"user_id": 1, "exercise_id": 1, "correct": True}]},
        format="json",
    )
    items = [
        {"user_id": 1, "exercise_id": 1, "correct": False},
        {"user_id": 2, "exercise_id": 1, "correct": True},
        {"user_id": 3, "exercise_id": 1, "correct": True, "attempted_at": "2020-01-01T00:00:00Z"},
    ]

    staff.post("/scores/bulk", {"scores": items}, format="json")

    assert sorted(events()) == sorted(
        [
            ("score.created", 1, 1),
            ("score.updated", 1, 1),
            ("score.created", 2, 1),
            ("score.created", 3, 1),
        ]
    )


def test_a_csv_import_appends_its_events(tmp_path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("user_id,exercise_id,correct\n4,3,true\n5,3,false\n")

    call_command("import_scores", str(path), stdout=io.StringIO(), stderr=io.StringIO())

    assert events() == [("score.created", 4, 3), ("score.created", 5, 3)]


def test_a_delete_appends_score_deleted_with_the_ids(admin, user) -> None:
    score = user.patch("/scores", {"exercise_id": 3, "correct": True}, format="json").json()

    admin.delete(f"/scores/{score['id']}")

    deleted = ScoreEvent.objects.order_by("id").last()
    assert deleted is not None
    assert (deleted.type, deleted.score_id, deleted.user_id, deleted.exercise_id) == (
        "score.deleted",
        score["id"],
        USER_ID,
        3,
    )
    from scores.events import cloudevent

    assert cloudevent(deleted)["data"] == {"id": score["id"], "user_id": USER_ID, "exercise_id": 3}


@pytest.fixture
def staffer(client: Any, django_user_model: Any) -> Any:
    client.force_login(
        django_user_model.objects.create_user("staffer", is_staff=True, is_superuser=True)
    )
    return client


def test_the_admins_change_and_deletes_append_their_events(staffer) -> None:
    scores = [
        score_write(write=Write(user_id=u, exercise_id=1, correct=False), recorded_by="g").score
        for u in (1, 2, 3)
    ]
    staffer.post(
        f"/admin/scores/score/{scores[0]['id']}/change/", {"correct": "on", "reason": "Regrade"}
    )
    staffer.post(f"/admin/scores/score/{scores[1]['id']}/delete/", {"post": "yes", "reason": "X"})
    staffer.post(
        "/admin/scores/score/",
        {
            "action": "delete_selected",
            "_selected_action": [scores[2]["id"]],
            "post": "yes",
            "reason": "Duplicate account",
        },
    )

    assert events()[3:] == [
        ("score.updated", 1, 1),
        ("score.deleted", 2, 1),
        ("score.deleted", 3, 1),
    ]


def test_a_rolled_back_transaction_appends_no_event() -> None:
    def write_then_fail() -> None:
        with transaction.atomic():
            score_write(write=Write(user_id=1, exercise_id=1, correct=True), recorded_by="g")
            raise RuntimeError("the caller's transaction fails after the write")

    with pytest.raises(RuntimeError):
        write_then_fail()

    assert events() == []


# --- The feed -----------------------------------------------------------------------------------


@pytest.fixture
def written(admin: Any) -> list[dict[str, Any]]:
    scores = []
    for user_id, exercise_id in ((1, 1), (2, 1), (1, 2)):
        body = {"user_id": user_id, "exercise_id": exercise_id, "correct": True}
        scores.append(admin.patch("/scores", body, format="json").json())
    admin.patch("/scores", {"user_id": 1, "exercise_id": 1, "correct": False}, format="json")
    return scores


def test_the_feed_pages_through_the_events_in_sequence_order(admin, written) -> None:
    first = admin.get("/events?limit=2").json()
    second = admin.get(f"/events?after={first['next_after']}&limit=2").json()
    third = admin.get(f"/events?after={second['next_after']}").json()

    feed = first["results"] + second["results"]
    assert [event["type"] for event in feed] == ["score.created"] * 3 + ["score.updated"]
    assert [event["sequence"] for event in feed] == sorted(event["sequence"] for event in feed)
    assert len({event["sequence"] for event in feed}) == 4
    assert third == {"results": [], "next_after": second["next_after"]}
    assert feed[0] == {
        "specversion": "1.0",
        "id": feed[0]["id"],
        "source": "evalsvc",
        "type": "score.created",
        "time": feed[0]["time"],
        "subject": "users/1/exercises/1",
        "datacontenttype": "application/json",
        "sequence": feed[0]["sequence"],
        "data": written[0],
    }
    assert uuid.UUID(feed[0]["id"])
    assert feed[0]["time"] == written[0]["updated_at"]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("after=1%00", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("wait=31", "wait"),
        ("wait=-1", "wait"),
        ("wait=soon", "wait"),
    ],
)
def test_a_bad_feed_parameter_is_a_400_naming_it(admin, query, name) -> None:
    response = admin.get(f"/events?{query}")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [name]


@pytest.mark.parametrize(("caller", "status"), [("anon", 401), ("user", 403), ("staff", 200)])
def test_the_feed_is_for_privileged_callers(request, caller, status) -> None:
    assert request.getfixturevalue(caller).get("/events").status_code == status


def test_a_long_poll_without_events_answers_empty_when_its_wait_is_over(admin) -> None:
    response = admin.get("/events?wait=0.3")

    assert response.json() == {"results": [], "next_after": 0}


@pytest.mark.django_db(transaction=True)
def test_a_long_poll_answers_the_event_that_arrives_while_it_waits(admin) -> None:
    answers: list[Any] = []

    def poll() -> None:
        try:
            answers.append(admin.get("/events?wait=20").json())
        finally:
            connections.close_all()

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)  # the poll is waiting
    score_write(write=Write(user_id=1, exercise_id=1, correct=True), recorded_by="g")
    poller.join(25)

    assert not poller.is_alive()
    [answer] = answers
    assert [event["subject"] for event in answer["results"]] == ["users/1/exercises/1"]
    assert answer["next_after"] == answer["results"][0]["sequence"]


# --- Commit order ---------------------------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrency is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_reader_misses_nothing_of_8_writers_committing_out_of_order() -> None:
    """Each writer holds its transaction open a random while after its event is appended, so
    events commit out of id order; a reader polling all the while must see every event once,
    in strictly increasing sequence."""
    stop = threading.Event()
    seen: list[tuple[int, uuid.UUID]] = []

    def write(writer: int) -> None:
        rng = random.Random(writer)
        try:
            for n in range(25):
                with transaction.atomic():
                    score_write(
                        write=Write(user_id=writer + 1, exercise_id=n + 1, correct=True),
                        recorded_by="g",
                    )
                    time.sleep(rng.uniform(0, 0.02))
        finally:
            connections.close_all()

    def read() -> None:
        after = 0
        try:
            while True:
                done = stop.is_set()
                sequence_events()
                page = events_after(after, 50)
                seen.extend((event.sequence or 0, event.event_id) for event in page)
                after = page[-1].sequence or after if page else after
                if done and not page:
                    return
        finally:
            connections.close_all()

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join(30)

    stored = set(ScoreEvent.objects.values_list("event_id", flat=True))
    assert len(stored) == 200
    assert [event_id for _, event_id in seen if event_id in stored] == [e for _, e in seen]
    assert sorted(event_id for _, event_id in seen) == sorted(stored)  # each once, none missed
    sequences = [sequence for sequence, _ in seen]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences)
    out_of_order = ScoreEvent.objects.order_by("id").values_list("sequence", flat=True)
    assert list(out_of_order) != sorted(out_of_order)  # commits did come out of id order


# --- Retention ------------------------------------------------------------------------------------


def test_purge_events_deletes_what_is_older_than_the_retention(admin, written, settings) -> None:
    settings.EVENTS_RETENTION_DAYS = 7
    ScoreEvent.objects.filter(user_id=2).update(time=timezone.now() - timedelta(days=8))
    out = io.StringIO()

    call_command("purge_events", stdout=out)

    assert out.getvalue() == "Deleted 1 events older than 7 days.\n"
    assert {user for _, user, _ in events()} == {1}


def test_another_users_reads_show_nothing_of_the_feed(user, written) -> None:
    assert bearer_client  # callers of the feed: privileged only (above)
    assert score_json  # the feed's data is the score's JSON (above)
    assert user.get("/events").status_code == 403
