"""The delivery worker (spec: "Score events", push): each event POSTed to each matching active
subscription, signed (Standard Webhooks), retried with backoff, failed after the last retry,
in order per (user, exercise), never twice at once, never on the write path. The subscribers
are real HTTP servers on 127.0.0.1 (``receivers.py``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from scores.delivery import Sender, Worker, deliver_due, event_body, fan_out
from scores.events import sequence_events
from scores.models import ScoreEvent, WebhookDelivery, WebhookSubscription
from scores.services import Write, score_delete, score_write
from scores.tests.receivers import Received, Receiver, running
from scores.webhooks import (
    deliveries_send_again,
    new_secret,
    subscription_create,
    subscription_update,
)

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="concurrent workers, LISTEN and a second process need PostgreSQL (DATABASE_TEST_URL)",
)


@pytest.fixture(autouse=True)
def _delivery_settings(settings) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receivers are on loopback
    settings.WEBHOOK_TIMEOUT = 1
    settings.WEBHOOK_RETRY_DELAYS = [5, 30, 120, 600, 3600, 21600]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running() as started:
        yield started


def write(user_id: int, exercise_id: int, correct: bool = True) -> dict[str, Any]:
    return score_write(
        write=Write(user_id=user_id, exercise_id=exercise_id, correct=correct), recorded_by="g"
    ).score


def deliveries() -> list[dict[str, Any]]:
    return list(
        WebhookDelivery.objects.order_by("sequence").values(
            "sequence", "status", "attempts", "last_status", "last_error"
        )
    )


def due_now() -> None:
    """Bring every pending retry forward to now (and the subscribers waiting for one)."""
    WebhookDelivery.objects.filter(status="pending").update(next_attempt_at=timezone.now())
    WebhookSubscription.objects.update(retry_at=None)


def one_round(batch: int = 20) -> int:
    """What a worker does in one round, without waiting."""
    return Worker(batch=batch, poll=0.1).round()


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def subjects(received: list[Received]) -> list[tuple[str, str]]:
    return [(r.event["subject"], r.event["type"]) for r in received]


# --- One delivery ---------------------------------------------------------------------------


def test_an_event_is_posted_signed_as_the_feed_shows_it(
    admin, receiver, django_capture_on_commit_callbacks
) -> None:
    subscription = subscription_create(actor="staff:test", url=receiver.url())
    score = write(4, 7)
    delivered_before = sample("evalsvc_webhook_events_delivered_total")

    with django_capture_on_commit_callbacks(execute=True):
        assert one_round() == 1

    [request] = receiver.received
    [shown] = admin.get("/events").json()["results"]
    assert orjson.loads(request.body) == shown
    assert shown["data"] == admin.get(f"/scores/{score['id']}").json()
    assert Webhook(subscription.secret).verify(request.body, request.headers) == shown
    assert request.headers["webhook-id"] == shown["id"]
    assert request.headers["webhook-signature"].startswith("v1,")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.headers["content-type"] == "application/json"
    assert request.path == "/hook"
    assert deliveries() == [
        {
            "sequence": shown["sequence"],
            "status": "delivered",
            "attempts": 1,
            "last_status": 200,
            "last_error": "",
        }
    ]
    assert WebhookDelivery.objects.get().delivered_at is not None
    assert sample("evalsvc_webhook_events_delivered_total") == delivered_before + 1


def test_a_signature_with_another_secret_does_not_verify(receiver) -> None:
    subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)
    one_round()

    [request] = receiver.received
    other = subscription_create(actor="staff:test", url=receiver.url()).secret
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(other).verify(request.body, request.headers)


def test_each_matching_subscription_gets_the_event(receiver) -> None:
    with running() as second:
        subscription_create(actor="staff:test", url=receiver.url("/a"))
        subscription_create(actor="staff:test", url=second.url("/b"))
        write(4, 7)

        one_round()

        assert [r.path for r in receiver.received + second.received] == ["/a", "/b"]


def test_the_host_header_is_the_urls_host_name(receiver) -> None:
    subscription_create(actor="staff:test", url=receiver.url(host="localhost"))
    write(4, 7)

    one_round()

    [request] = receiver.received
    assert request.headers["host"] == f"localhost:{receiver.port}"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="makes its certificate with openssl")
def test_https_checks_the_certificate_of_the_urls_host_name(tmp_path) -> None:
    """A self-signed certificate is refused, and the TLS handshake asked for the URL's name
    (SNI), not the address the worker connected to."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with running(tls=context) as receiver:
        subscription_create(actor="staff:test", url=f"https://localhost:{receiver.port}/hook")
        write(4, 7)

        one_round()

    assert receiver.received == []
    assert receiver.server_names == ["localhost"]
    [delivery] = deliveries()
    assert delivery["status"] == "pending"
    assert "CERTIFICATE_VERIFY_FAILED" in delivery["last_error"]


def test_the_query_string_is_kept(receiver) -> None:
    subscription_create(actor="staff:test", url=receiver.url("/hook?source=evalsvc&x=1"))
    write(4, 7)

    one_round()

    assert [r.path for r in receiver.received] == ["/hook?source=evalsvc&x=1"]


def test_only_the_event_types_subscribed_to_are_delivered(receiver) -> None:
    subscription = subscription_create(
        actor="staff:test", url=receiver.url(), event_types=["score.deleted"]
    )
    score = write(4, 7)
    write(4, 7, correct=False)
    score_delete(score_id=score["id"], actor="staff:test")

    one_round()

    assert subjects(receiver.received) == [("users/4/exercises/7", "score.deleted")]
    subscription.refresh_from_db()
    assert subscription.cursor == max(ScoreEvent.objects.values_list("sequence", flat=True))


def test_an_inactive_subscription_gets_nothing_until_it_is_active_again(receiver) -> None:
    subscription = subscription_create(actor="staff:test", url=receiver.url(), active=False)
    write(4, 7)
    write(4, 8)

    one_round()
    assert receiver.received == []
    assert not WebhookDelivery.objects.exists()

    subscription_update(actor="staff:test", subscription=subscription, changes={"active": True})
    one_round()

    assert subjects(receiver.received) == [
        ("users/4/exercises/7", "score.created"),
        ("users/4/exercises/8", "score.created"),
    ]


def test_a_pending_delivery_of_a_paused_subscription_waits(receiver) -> None:
    subscription = subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)
    sequence_events()
    fan_out()
    subscription_update(actor="staff:test", subscription=subscription, changes={"active": False})

    assert deliver_due(sender=Sender()) == 0
    assert receiver.received == []
    assert deliveries()[0]["status"] == "pending"


def test_fanning_out_twice_makes_one_delivery_per_event(receiver) -> None:
    subscription = subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)
    sequence_events()
    fan_out()
    WebhookSubscription.objects.filter(id=subscription.id).update(cursor=0)  # as if replayed

    fan_out()

    assert WebhookDelivery.objects.count() == 1


# --- Failures, retries, recovery -------------------------------------------------------------


def test_a_receiver_that_fails_then_hangs_then_recovers_gets_the_event_at_the_third_try(
    receiver, django_capture_on_commit_callbacks
) -> None:
    receiver.script = [500, receiver.hang(3), 200]
    subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)
    failed_before = sample("evalsvc_webhook_attempts_failed_total")

    with django_capture_on_commit_callbacks(execute=True):
        started = timezone.now()
        one_round()
        [first] = deliveries()
        first_due = WebhookDelivery.objects.get().next_attempt_at - started
        due_now()
        started = timezone.now()
        one_round()  # the receiver hangs past WEBHOOK_TIMEOUT (1 s)
        [second] = deliveries()
        second_due = WebhookDelivery.objects.get().next_attempt_at - started
        due_now()
        one_round()
        [third] = deliveries()

    assert (first["status"], first["attempts"], first["last_status"]) == ("pending", 1, 500)
    assert first["last_error"] == "Answered 500: receiver says no"
    assert timedelta(seconds=4) <= first_due <= timedelta(seconds=6.5)  # 5 s +-20 %
    assert (second["status"], second["attempts"], second["last_status"]) == ("pending", 2, None)
    assert second["last_error"] == "No answer within 1 s."
    assert timedelta(seconds=24) <= second_due <= timedelta(seconds=37)  # 30 s +-20 %
    assert (third["status"], third["attempts"], third["last_status"]) == ("delivered", 3, 200)
    requests = receiver.received
    assert len(requests) == 3
    assert len({r.body for r in requests}) == 1  # the same event each time
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert sample("evalsvc_webhook_attempts_failed_total") == failed_before + 2


def test_after_the_last_retry_the_delivery_is_failed_with_its_last_error(
    settings, receiver, django_capture_on_commit_callbacks
) -> None:
    settings.WEBHOOK_RETRY_DELAYS = [0, 0]
    receiver.default = 503
    subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)
    failed_before = sample("evalsvc_webhook_deliveries_failed_total")

    with django_capture_on_commit_callbacks(execute=True):
        call_command("deliver_events", "--once")

    assert len(receiver.received) == 3  # the first attempt and two retries
    assert [
        (d["status"], d["attempts"], d["last_status"], d["last_error"]) for d in deliveries()
    ] == [("failed", 3, 503, "Answered 503: receiver says no")]
    assert sample("evalsvc_webhook_deliveries_failed_total") == failed_before + 1
    assert deliver_due(sender=Sender()) == 0  # failed: not tried again


def test_retry_delays_grow_and_are_jittered(settings) -> None:
    from scores.delivery import retry_delay

    settings.WEBHOOK_RETRY_DELAYS = [5, 30, 120, 600, 3600, 21600]

    delays = [[retry_delay(attempt) for _ in range(50)] for attempt in range(1, 7)]

    for nominal, seen in zip(settings.WEBHOOK_RETRY_DELAYS, delays, strict=True):
        assert all(nominal * 0.8 <= delay <= nominal * 1.2 for delay in seen)
        assert len(set(seen)) > 1
    assert retry_delay(7) is None


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (302, "Answered 302: receiver says no"),  # a redirect is not followed
        (404, "Answered 404: receiver says no"),
        (400, "Answered 400: receiver says no"),
    ],
)
def test_an_answer_other_than_2xx_is_a_failed_attempt(receiver, answer, error) -> None:
    receiver.script = [answer]
    subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)

    one_round()

    assert deliveries()[0]["last_error"] == error
    assert len(receiver.received) == 1


def test_a_refused_connection_is_a_failed_attempt() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    subscription_create(actor="staff:test", url=f"http://127.0.0.1:{port}/hook")
    write(4, 7)

    one_round()

    [delivery] = deliveries()
    assert delivery["status"] == "pending"
    assert delivery["last_error"].startswith("Could not connect: 127.0.0.1: ")
    assert "refused" in delivery["last_error"]


def test_an_address_refused_at_delivery_time_is_not_contacted(settings, receiver) -> None:
    subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)
    settings.WEBHOOK_ALLOW_PRIVATE = False  # as if the name now resolved to a private address

    one_round()

    assert receiver.received == []
    assert deliveries()[0]["last_error"] == (
        "Not sent: Must not reach 127.0.0.1: a loopback address (WEBHOOK_ALLOW_PRIVATE is off)."
    )


def test_a_subscriber_that_does_not_answer_waits_and_the_others_go_on(receiver) -> None:
    receiver.default = receiver.hang(5)
    hanging = subscription_create(actor="staff:test", url=receiver.url())
    with running() as healthy:
        subscription_create(actor="staff:test", url=healthy.url())
        for exercise_id in (1, 2, 3):
            write(4, exercise_id)

        Worker(poll=0.1).run(once=True)

        assert len(healthy.received) == 3
    assert len(receiver.received) == 1  # one timeout, not three
    hanging.refresh_from_db()
    first = WebhookDelivery.objects.filter(subscription=hanging).order_by("sequence").first()
    assert first is not None
    assert hanging.retry_at == first.next_attempt_at > timezone.now()
    assert [
        d["attempts"]
        for d in WebhookDelivery.objects.filter(subscription=hanging)
        .order_by("sequence")
        .values("attempts")
    ] == [1, 0, 0]


def test_a_subscriber_that_answers_again_is_no_longer_waited_for(receiver) -> None:
    receiver.script = [receiver.hang(5)]
    subscription = subscription_create(actor="staff:test", url=receiver.url())
    write(4, 1)
    write(4, 2)
    one_round()
    subscription.refresh_from_db()
    assert subscription.retry_at is not None

    WebhookDelivery.objects.update(next_attempt_at=timezone.now())
    WebhookSubscription.objects.update(retry_at=timezone.now())
    one_round()

    subscription.refresh_from_db()
    assert subscription.retry_at is None
    assert [d["status"] for d in deliveries()] == ["delivered", "delivered"]


# --- Order per (subscription, user, exercise) -------------------------------------------------


def test_a_retried_event_holds_back_the_later_events_of_its_user_and_exercise_only(
    receiver,
) -> None:
    receiver.script = [500]
    subscription_create(actor="staff:test", url=receiver.url())
    write(1, 1)
    write(1, 1, correct=False)
    write(2, 1)

    one_round()
    assert subjects(receiver.received) == [
        ("users/1/exercises/1", "score.created"),  # 500: retried later
        ("users/2/exercises/1", "score.created"),
    ]
    assert [d["status"] for d in deliveries()] == ["pending", "pending", "delivered"]

    due_now()
    Worker(poll=0.1).run(once=True)

    assert subjects(receiver.received)[2:] == [
        ("users/1/exercises/1", "score.created"),
        ("users/1/exercises/1", "score.updated"),
    ]
    assert [d["status"] for d in deliveries()] == ["delivered"] * 3


def test_a_failed_event_no_longer_holds_back_the_later_ones(settings, receiver) -> None:
    settings.WEBHOOK_RETRY_DELAYS = []
    receiver.script = [500]
    subscription_create(actor="staff:test", url=receiver.url())
    write(1, 1)
    write(1, 1, correct=False)

    Worker(poll=0.1).run(once=True)

    assert [d["status"] for d in deliveries()] == ["failed", "delivered"]


# --- Several workers ---------------------------------------------------------------------------


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_two_workers_never_send_one_event_to_one_subscription_at_once(settings) -> None:
    """40 events of 8 (user, exercise) pairs; every fifth one is refused once. Two workers run
    side by side: no event is ever in flight twice, each is delivered once, and each pair's
    requests come in sequence order."""
    settings.WEBHOOK_RETRY_DELAYS = [0, 0, 0]
    lock = threading.Lock()
    in_flight: Counter[str] = Counter()
    overlaps: list[str] = []
    refused: set[str] = set()

    def answer(request: Received) -> int:
        event_id = request.headers["webhook-id"]
        with lock:
            in_flight[event_id] += 1
            if in_flight[event_id] > 1:
                overlaps.append(event_id)
            refuse = request.event["sequence"] % 5 == 0 and event_id not in refused
            refused.add(event_id)
        time.sleep(0.005)
        with lock:
            in_flight[event_id] -= 1
        return 500 if refuse else 200

    with running(Receiver(default=answer)) as receiver:
        subscription_create(actor="staff:test", url=receiver.url())
        for round_ in range(5):
            for user_id in range(1, 5):
                for exercise_id in (1, 2):
                    write(user_id, exercise_id, correct=bool(round_ % 2))
        connections.close_all()
        stop = threading.Event()

        def work() -> None:
            try:
                Worker(batch=3, poll=0.05, stop=stop).run()
            finally:
                connections.close_all()

        workers = [threading.Thread(target=work) for _ in range(2)]
        for thread in workers:
            thread.start()
        try:
            deadline = time.monotonic() + 30
            while WebhookDelivery.objects.exclude(status="delivered").exists() or (
                WebhookDelivery.objects.count() < 40
            ):
                assert time.monotonic() < deadline, deliveries()
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in workers:
                thread.join(10)

    assert overlaps == []
    events = receiver.events()
    delivered = [e["id"] for e in events]
    assert sorted(set(delivered)) == sorted(
        str(event_id) for event_id in ScoreEvent.objects.values_list("event_id", flat=True)
    )
    assert len(events) == 40 + len(refused & {e["id"] for e in events if e["sequence"] % 5 == 0})
    per_pair: dict[str, list[int]] = {}
    for event in events:
        per_pair.setdefault(event["subject"], []).append(event["sequence"])
    assert len(per_pair) == 8
    assert all(sequences == sorted(sequences) for sequences in per_pair.values())


# --- Never on the write path ---------------------------------------------------------------------


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_writes_answer_alike_while_every_subscriber_hangs(admin) -> None:
    """The same write costs the same statements before any subscription exists and while a
    worker waits on subscribers that do not answer, and it is answered meanwhile."""

    def upsert(exercise_id: int) -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            response = admin.patch(
                "/scores",
                {"user_id": 4, "exercise_id": exercise_id, "correct": True},
                format="json",
            )
        return response.status_code, len(queries)

    upsert(1)  # the caller's token verdict is cached from here on
    before = upsert(2)
    stop = threading.Event()

    def work() -> None:
        try:
            Worker(poll=0.05, stop=stop).run()
        finally:
            connections.close_all()

    with running() as first, running() as second:
        first.default = first.hang(30)
        second.default = second.hang(30)
        subscription_create(actor="staff:test", url=first.url())
        subscription_create(actor="staff:test", url=second.url())
        write(9, 9)
        worker = threading.Thread(target=work)
        worker.start()
        try:
            first.wait_for(1)
            during = upsert(3)
            answered_while_hanging = first.received[0].answered == 0
        finally:
            stop.set()
            first.released.set()
            second.released.set()
            worker.join(15)

    assert during == before == (201, before[1])
    assert answered_while_hanging
    assert ScoreEvent.objects.filter(exercise_id=3).count() == 1


# --- The worker process ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def worker_env(**extra: str) -> dict[str, str]:
    db = connection.settings_dict
    url = (
        f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db.get('HOST') or '127.0.0.1'}:"
        f"{db.get('PORT') or 5432}/{db['NAME']}"
    )
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evalsvc.settings.testing",
        "DATABASE_TEST_URL": url,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "LOG_LEVEL": "INFO",
        **extra,
    }


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_the_worker_after_the_delivery_in_progress() -> None:
    with running() as receiver:
        receiver.default = receiver.hang(2)
        subscription_create(actor="staff:test", url=receiver.url())
        write(4, 7)
        write(4, 8)
        metrics_port = free_port()
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "deliver_events", "--poll", "0.2",
             "--metrics-port", str(metrics_port)],
            cwd=REPO, env=worker_env(WEBHOOK_TIMEOUT="10"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            receiver.wait_for(1)
            with urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=5
            ) as scraped:
                metrics = scraped.read().decode()
            worker.send_signal(signal.SIGTERM)
            returncode = worker.wait(timeout=20)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        output = worker.stdout.read().decode() if worker.stdout else ""

    assert returncode == 0, output
    assert "SIGTERM, stopping after the delivery in progress" in output
    assert len(receiver.received) == 1  # the second was not started
    assert receiver.received[0].answered > 0
    assert [d["status"] for d in deliveries()] == ["delivered", "pending"]
    assert "evalsvc_webhook_events_delivered_total 0.0" in metrics
    assert "evalsvc_webhook_oldest_undelivered_event_age_seconds " in metrics


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_waiting_worker_wakes_up_when_events_are_numbered() -> None:
    """The worker listens: an event numbered by a reader of the feed reaches it long before
    its poll interval (30 s) is over."""
    with running() as receiver:
        subscription_create(actor="staff:test", url=receiver.url())
        stop = threading.Event()

        def work() -> None:
            try:
                Worker(poll=30, stop=stop).run()
            finally:
                connections.close_all()

        worker = threading.Thread(target=work)
        worker.start()
        try:
            time.sleep(0.5)  # it is waiting
            write(4, 7)
            sequence_events()  # as GET /events does; it notifies
            receiver.wait_for(1, timeout=10)
        finally:
            stop.set()
            worker.join(35)

    assert not worker.is_alive()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_asks_the_database_once_per_poll_interval_not_in_a_loop() -> None:
    subscription_create(actor="staff:test", url="http://127.0.0.1:9/hook")
    statements: list[str] = []
    stop = threading.Event()

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    def work() -> None:
        try:
            with connection.execute_wrapper(count):
                Worker(poll=0.25, stop=stop).run()
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(1.2)
    stop.set()
    worker.join(5)

    rounds = sum("pg_try_advisory_xact_lock" in sql for sql in statements)
    assert 2 <= rounds <= 7  # about one per 0.25 s
    assert len(statements) <= rounds * 10


def test_deliver_events_once_on_any_database(receiver) -> None:
    subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)

    call_command("deliver_events", "--once")

    assert subjects(receiver.received) == [("users/4/exercises/7", "score.created")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "0"], "--batch must be from 1 to 1000, not 0."),
        (["--poll", "0"], "--poll must be more than 0 and at most 3600, not 0."),
    ],
)
def test_deliver_events_refuses_bad_options(args, message) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message.replace(".", r"\.")):
        call_command("deliver_events", "--once", *args)


def test_event_body_is_the_feeds_json(admin) -> None:
    write(4, 7)
    sequence_events()

    [shown] = admin.get("/events").json()["results"]

    assert orjson.loads(event_body(ScoreEvent.objects.get())) == shown


# --- The consumer example of docs/events.md --------------------------------------------------


def load_consumer_example() -> Any:
    path = REPO / "docs" / "examples" / "webhook_consumer.py"
    spec = importlib.util.spec_from_file_location("webhook_consumer", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def consumer_example() -> Iterator[tuple[Any, str, list[dict[str, Any]]]]:
    """The docs' consumer on a free loopback port: (server, its secret, the events handled)."""
    example = load_consumer_example()
    secret = new_secret()
    handled: list[dict[str, Any]] = []
    server = example.make_server(secret, 0, on_event=handled.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, secret, handled
    finally:
        server.shutdown()
        server.server_close()


def test_the_docs_consumer_verifies_and_handles_each_event_once(admin, consumer_example) -> None:
    server, secret, handled = consumer_example
    url = f"http://127.0.0.1:{server.server_address[1]}/evalsvc"
    subscription_create(actor="staff:test", url=url, secret=secret)
    score = write(4, 7)
    write(4, 7, correct=False)
    score_delete(score_id=score["id"], actor="staff:test")

    one_round()
    Worker(poll=0.1).run(once=True)

    assert handled == admin.get("/events").json()["results"]
    assert [d["last_status"] for d in deliveries()] == [204, 204, 204]

    WebhookDelivery.objects.update(status="failed")  # staff send the first one again
    deliveries_send_again(ids=WebhookDelivery.objects.values_list("id", flat=True)[:1])
    one_round()

    assert len(handled) == 3  # acknowledged, not handled twice
    assert deliveries()[0]["status"] == "delivered"


def test_the_docs_consumer_refuses_a_delivery_signed_with_another_secret(
    consumer_example,
) -> None:
    server, _, handled = consumer_example
    subscription_create(
        actor="staff:test", url=f"http://127.0.0.1:{server.server_address[1]}/", secret=new_secret()
    )
    write(4, 7)

    one_round()

    assert handled == []
    assert deliveries()[0]["last_error"] == "Answered 400"


# --- The backlog metric --------------------------------------------------------------------------

AGE = "evalsvc_webhook_oldest_undelivered_event_age_seconds"


def scraped_age(client: Any) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200
    [value] = [
        sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name == AGE
    ]
    return float(value)


def events_aged(seconds: int) -> None:
    ScoreEvent.objects.update(time=timezone.now() - timedelta(seconds=seconds))


def test_the_backlog_age_is_zero_without_subscriptions(anon) -> None:
    write(4, 7)
    events_aged(600)

    assert scraped_age(anon) == 0


@pytest.mark.parametrize(
    "stage",
    ["not numbered yet", "numbered, not fanned out", "pending delivery"],
)
def test_the_backlog_age_is_the_oldest_event_a_subscription_has_not_received(
    anon, receiver, stage
) -> None:
    subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)
    if stage != "not numbered yet":
        sequence_events()
    if stage == "pending delivery":
        fan_out()
    events_aged(90)

    assert 90 <= scraped_age(anon) < 150


def test_the_backlog_age_falls_to_zero_once_delivered(anon, receiver) -> None:
    subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)
    events_aged(90)
    one_round()

    assert scraped_age(anon) == 0


def test_a_paused_subscription_does_not_count_in_the_backlog(anon, receiver) -> None:
    subscription = subscription_create(actor="staff:test", url=receiver.url())
    write(4, 7)
    sequence_events()
    fan_out()
    events_aged(90)
    subscription_update(actor="staff:test", subscription=subscription, changes={"active": False})

    assert scraped_age(anon) == 0


# --- Retention --------------------------------------------------------------------------------


def test_purging_old_events_deletes_their_deliveries_in_a_few_statements(receiver) -> None:
    from scores.events import purge_events

    subscription_create(actor="staff:test", url=receiver.url())
    for exercise_id in range(1, 6):
        write(4, exercise_id)
    sequence_events()
    fan_out()
    ScoreEvent.objects.filter(exercise_id__lte=3).update(time=timezone.now() - timedelta(days=30))

    with CaptureQueriesContext(connection) as queries:
        purged = purge_events(older_than=timedelta(days=7))

    assert purged == 3
    assert sorted(WebhookDelivery.objects.values_list("exercise_id", flat=True)) == [4, 5]
    assert sorted(ScoreEvent.objects.values_list("exercise_id", flat=True)) == [4, 5]
    assert len([q for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]) == 2
