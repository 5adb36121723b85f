"""The webhook delivery worker (``python manage.py deliver_events``): sends each score event to
each active subscription whose types match, signed, at least once, in order per (user,
exercise), with retries; never on the API's write path.

**Fan-out.** ``fan_out`` turns the numbered events after a subscription's ``cursor`` into
pending ``WebhookDelivery`` rows and moves the cursor, one subscription at a time under its
row lock (``FOR UPDATE SKIP LOCKED``: several workers share the work). The writers only append
to the outbox; nothing here touches their tables but ``score_events``' numbering
(``scores.events.sequence_events``).

**Claiming.** ``deliver_due`` takes the active subscriptions in turn and claims up to
``batch`` of each one's due deliveries with ``SELECT ... FOR UPDATE SKIP LOCKED``, holding
their row locks while it sends them, so no other worker sends one of them at the same time. A
delivery is due when it is pending, its ``next_attempt_at`` has come and no earlier event of
the same subscription, user and exercise is still pending (``NOT EXISTS``): a subscriber gets
each (user, exercise)'s events in ``sequence`` order, and a retried event holds back the later
ones of its (user, exercise) only. A subscriber that does not answer at all is sent nothing
more until that delivery's retry (``WebhookSubscription.retry_at``), so a hanging subscriber
costs a worker one timeout per retry, not one per event. A worker that dies mid-batch releases
its locks with its connection; what it had sent in that batch but not recorded is sent again
(at least once).

**Sending.** A POST of the CloudEvent (the bytes ``GET /events`` shows for it), signed with
the ``standardwebhooks`` library (``webhook-id`` the event's id, ``webhook-timestamp``,
``webhook-signature: v1,<base64>``), to an address ``scores.webhooks.resolve_target`` checked
at most ``TARGET_SECONDS`` before, with the URL's host name in ``Host`` and in TLS (SNI,
certificate check). A 2xx answered within ``WEBHOOK_TIMEOUT`` seconds is delivered; anything
else (another status, no answer in time, no connection, a refused address) is retried after
``WEBHOOK_RETRY_DELAYS[attempts - 1]`` seconds +-20 %, and after the last one the delivery is
failed, with its last error, until staff send it again from the admin.

**Waiting.** Between rounds the worker listens on the ``score_events`` channel (a sequencer
notifies when it numbers events: ``GET /events``, its bell, or this worker's own numbering)
and numbers events itself every ``WEBHOOK_POLL_SECONDS``; on SQLite it only polls.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import urllib3
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone
from drf_orjson_renderer.renderers import ORJSONRenderer
from prometheus_client import REGISTRY, Counter, make_wsgi_app
from standardwebhooks import Webhook

from scores.events import CHANNEL, cloudevent, sequence_events
from scores.models import ScoreEvent, WebhookDelivery, WebhookSubscription
from scores.validation import InvalidValue
from scores.webhooks import Target, resolve_target

logger = logging.getLogger(__name__)

PENDING = WebhookDelivery.Status.PENDING
DELIVERED = WebhookDelivery.Status.DELIVERED
FAILED = WebhookDelivery.Status.FAILED

BATCH = 20  # deliveries claimed (and locked) at once by a worker
FAN_OUT_BATCH = 1000  # events turned into deliveries per statement
JITTER = 0.2  # each retry delay is multiplied by a random factor in [0.8, 1.2]
BODY_READ = 65_536  # bytes of an answer read (the rest is not: the connection is closed)
ERROR_BODY_KEPT = 200  # characters of a failed answer's body kept in last_error
POOLS_KEPT = 64  # keep-alive connection pools (one per subscriber address) a worker keeps
USER_AGENT = "evalsvc-webhooks"
TARGET_SECONDS = 10.0  # a subscriber URL's checked addresses are used this long

EVENTS_DELIVERED = Counter(
    "evalsvc_webhook_events_delivered_total",
    "Score events delivered to webhook subscribers (a 2xx answer in time).",
)
ATTEMPTS_FAILED = Counter(
    "evalsvc_webhook_attempts_failed_total",
    "Webhook delivery attempts that failed (retried, or failed for good after the last).",
)
DELIVERIES_FAILED = Counter(
    "evalsvc_webhook_deliveries_failed_total",
    "Webhook deliveries failed for good after their last retry (shown in the admin).",
)


# --- Sending --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: ``status`` is the answer's HTTP status if there was one."""

    delivered: bool
    status: int | None = None
    error: str = ""


def event_body(event: ScoreEvent) -> bytes:
    """The event as ``GET /events`` renders it: the bytes that are signed and sent."""
    return ORJSONRenderer().render(cloudevent(event))


class Sender:
    """POSTs signed events to subscribers, each within ``timeout`` seconds (default
    ``WEBHOOK_TIMEOUT``), keeping a keep-alive connection per subscriber address."""

    def __init__(self, *, timeout: float | None = None) -> None:
        self.timeout = settings.WEBHOOK_TIMEOUT if timeout is None else timeout
        self._pools: OrderedDict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = (
            OrderedDict()
        )
        self._targets: dict[str, tuple[Target, float]] = {}

    def send(self, *, url: str, secret: str, message_id: str, body: bytes) -> Outcome:
        """POST ``body`` to ``url`` signed with ``secret`` as message ``message_id``."""
        deadline = time.monotonic() + self.timeout
        try:
            target = self._target(url)
        except InvalidValue as exc:
            return Outcome(False, error=f"Not sent: {exc}")
        timestamp = int(time.time())
        signature = Webhook(secret).sign(
            message_id, datetime.fromtimestamp(timestamp, UTC), body.decode()
        )
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        failures = []
        for address in target.addresses:  # the next one only when one refuses connections
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                response = self._pool(target, address).urlopen(
                    "POST",
                    target.path,
                    body=body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                    release_conn=False,
                    timeout=urllib3.Timeout(total=remaining),
                )
            except urllib3.exceptions.NewConnectionError as exc:
                failures.append(f"{address}: {_reason(exc)}")
                continue
            except urllib3.exceptions.TimeoutError:
                return Outcome(False, error=f"No answer within {self.timeout:g} s.")
            except urllib3.exceptions.HTTPError as exc:
                return Outcome(False, error=f"The connection failed: {_reason(exc)}")
            return self._outcome(response, deadline)
        if failures:
            return Outcome(False, error="Could not connect: " + "; ".join(failures))
        return Outcome(False, error=f"No answer within {self.timeout:g} s.")

    def _target(self, url: str) -> Target:
        """``resolve_target(url)``, kept ``TARGET_SECONDS``: a busy subscriber's name is not
        resolved for every event (the addresses connected to are always ones checked)."""
        now = time.monotonic()
        kept = self._targets.get(url)
        if kept is not None and kept[1] > now:
            return kept[0]
        target = resolve_target(url)
        if len(self._targets) >= POOLS_KEPT:
            self._targets.clear()
        self._targets[url] = (target, now + TARGET_SECONDS)
        return target

    def _outcome(self, response: urllib3.BaseHTTPResponse, deadline: float) -> Outcome:
        status = response.status
        in_time = time.monotonic() <= deadline
        try:
            data = response.read(BODY_READ, decode_content=False)
            reusable = response.length_remaining == 0
        except (urllib3.exceptions.HTTPError, OSError):
            data, reusable = b"", False
        if reusable:
            response.release_conn()
        else:
            response.close()  # an unread body: the connection is not used again
        if not in_time:
            return Outcome(False, status, f"Answered {status} after {self.timeout:g} s.")
        if 200 <= status < 300:
            return Outcome(True, status)
        text = data[:ERROR_BODY_KEPT].decode("utf-8", "replace")
        return Outcome(False, status, f"Answered {status}: {text}".rstrip(": "))

    def _pool(self, target: Target, address: str) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, address, target.port, target.host)
        pool = self._pools.pop(key, None)
        if pool is None:
            if target.scheme == "https":
                pool = urllib3.HTTPSConnectionPool(
                    address,
                    target.port,
                    maxsize=1,
                    retries=False,
                    cert_reqs="CERT_REQUIRED",
                    server_hostname=target.host,  # SNI: the URL's name, not the address
                    assert_hostname=target.host,  # the certificate must be the name's
                )
            else:
                pool = urllib3.HTTPConnectionPool(address, target.port, maxsize=1, retries=False)
        self._pools[key] = pool
        while len(self._pools) > POOLS_KEPT:
            _, oldest = self._pools.popitem(last=False)
            oldest.close()
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _reason(exc: Exception) -> str:
    """A connection error without urllib3's description of its own objects."""
    return str(exc).rsplit("Failed to establish a new connection: ", 1)[-1]


# --- Fan-out: events into deliveries -------------------------------------------------------


def fan_out(*, batch: int = FAN_OUT_BATCH) -> int:
    """Turn the numbered events after each active subscription's cursor into pending
    deliveries (those of its types), moving the cursor past them; how many deliveries it
    made. A subscription another worker is fanning out is left to it."""
    made = 0
    active = WebhookSubscription.objects.filter(active=True).values_list("id", flat=True)
    for subscription_id in list(active):
        while True:
            count, more = _fan_out_batch(subscription_id, batch)
            made += count
            if not more:
                break
    return made


def _fan_out_batch(subscription_id: int, batch: int) -> tuple[int, bool]:
    """One batch of one subscription's events: (deliveries made, whether more may follow)."""
    with transaction.atomic():
        subscription = (
            WebhookSubscription.objects.select_for_update(skip_locked=True)
            .filter(id=subscription_id, active=True)
            .first()
        )
        if subscription is None:
            return 0, False
        events = list(
            ScoreEvent.objects.filter(sequence__gt=subscription.cursor)
            .order_by("sequence")
            .values_list("id", "sequence", "type", "user_id", "exercise_id")[:batch]
        )
        if not events:
            return 0, False
        now = timezone.now()
        wanted = set(subscription.event_types)
        deliveries = [
            WebhookDelivery(
                subscription_id=subscription.id,
                event_id=event_id,
                sequence=sequence or 0,  # numbered: after the cursor
                user_id=user_id,
                exercise_id=exercise_id,
                next_attempt_at=now,
                created_at=now,
            )
            for event_id, sequence, event_type, user_id, exercise_id in events
            if not wanted or event_type in wanted
        ]
        WebhookDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
        WebhookSubscription.objects.filter(id=subscription.id).update(cursor=events[-1][1])
    return len(deliveries), len(events) == batch


# --- Claiming, sending, recording -----------------------------------------------------------


def due_deliveries(subscription: WebhookSubscription, now: datetime) -> QuerySet[WebhookDelivery]:
    """``subscription``'s deliveries that may be sent at ``now``: pending, due, and no earlier
    event of the same user and exercise still pending; soonest due first (the order of the
    index ``webhook_deliveries_due``, so that a claim reads few rows however long the queue)."""
    earlier = WebhookDelivery.objects.filter(
        subscription=OuterRef("subscription"),
        user_id=OuterRef("user_id"),
        exercise_id=OuterRef("exercise_id"),
        sequence__lt=OuterRef("sequence"),
        status=PENDING,
    )
    return (
        WebhookDelivery.objects.filter(
            subscription=subscription, status=PENDING, next_attempt_at__lte=now
        )
        .filter(~Exists(earlier))
        .order_by("next_attempt_at", "sequence")
    )


def ready_subscriptions(now: datetime) -> list[WebhookSubscription]:
    """The active subscriptions that may be sent to at ``now`` (not waiting after a delivery
    they did not answer)."""
    return list(
        WebhookSubscription.objects.filter(active=True)
        .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
        .order_by("id")
    )


def deliver_due(
    *, sender: Sender, batch: int = BATCH, stopping: Callable[[], bool] = lambda: False
) -> int:
    """One pass over the ready subscriptions: from each, claim up to ``batch`` due deliveries,
    send them one by one while their rows stay locked, and record each outcome; how many it
    sent. Stops before the next one once ``stopping()`` (the claimed ones not sent stay as
    they were).

    A subscriber that does not answer (no connection, no answer in time, an address refused)
    is sent nothing more until that delivery's retry: one subscriber that hangs costs a worker
    one ``WEBHOOK_TIMEOUT`` per retry, not one per event, and the others go on meanwhile."""
    sent = 0
    for subscription in ready_subscriptions(timezone.now()):
        if stopping():
            break
        sent += _deliver_batch(subscription, sender, batch, stopping)
    return sent


def _deliver_batch(
    subscription: WebhookSubscription,
    sender: Sender,
    batch: int,
    stopping: Callable[[], bool],
) -> int:
    done: list[WebhookDelivery] = []
    counters: list[Counter] = []
    waiting = subscription.retry_at is not None
    with _claiming():
        claimed = (
            due_deliveries(subscription, timezone.now())
            .select_related("event")
            .select_for_update(skip_locked=True, of=("self",))[:batch]
        )
        for delivery in claimed:
            if stopping():
                break
            outcome = sender.send(
                url=subscription.url,
                secret=subscription.secret,
                message_id=str(delivery.event.event_id),
                body=event_body(delivery.event),
            )
            counters += record_outcome(delivery, outcome)
            done.append(delivery)
            if outcome.status is None:  # no answer: nothing more to it until this retry
                break
        save_outcomes(done)
        transaction.on_commit(lambda: _count(counters))
    # After the claim's transaction: the subscription's row is not held while sending.
    if done and done[-1].last_status is None:
        retry_at = _subscription_retry(done[-1])
        WebhookSubscription.objects.filter(id=subscription.id).update(retry_at=retry_at)
    elif done and waiting:
        WebhookSubscription.objects.filter(id=subscription.id).update(retry_at=None)
    return len(done)


def _subscription_retry(delivery: WebhookDelivery) -> datetime:
    """When a subscriber that did not answer ``delivery`` is tried again: at its retry, or
    after the first delay if it has failed for good."""
    if delivery.status == PENDING:
        return delivery.next_attempt_at
    first = settings.WEBHOOK_RETRY_DELAYS[0] if settings.WEBHOOK_RETRY_DELAYS else 0
    return timezone.now() + timedelta(seconds=float(first))


def _claiming() -> AbstractContextManager[Any]:
    """The transaction that holds the claimed rows' locks while they are sent. SQLite has no
    row locks (one worker only there) and its open transaction would block the API's writes
    while a subscriber is slow: there each delivery is recorded on its own instead."""
    if connection.features.has_select_for_update_skip_locked:
        return transaction.atomic()
    return nullcontext()


def retry_delay(attempts: int) -> float | None:
    """Seconds to wait after the ``attempts``-th failed attempt (jittered), or None when it
    was the last."""
    delays = settings.WEBHOOK_RETRY_DELAYS
    if attempts > len(delays):
        return None
    return float(delays[attempts - 1]) * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311


RECORDED = ["attempts", "last_status", "last_error", "status", "delivered_at", "next_attempt_at"]


def record_outcome(delivery: WebhookDelivery, outcome: Outcome) -> list[Counter]:
    """Note on ``delivery`` what an attempt did (``save_outcomes`` saves it): delivered, due
    again later, or failed; the counters it adds to."""
    now = timezone.now()
    delivery.attempts += 1
    delivery.last_status = outcome.status
    delivery.last_error = outcome.error
    counters = [EVENTS_DELIVERED] if outcome.delivered else [ATTEMPTS_FAILED]
    if outcome.delivered:
        delivery.status = DELIVERED
        delivery.delivered_at = now
        return counters
    delay = retry_delay(delivery.attempts)
    if delay is None:
        delivery.status = FAILED
        counters.append(DELIVERIES_FAILED)
    else:
        delivery.next_attempt_at = now + timedelta(seconds=delay)
    logger.warning(
        "webhook %s: event %s not delivered (attempt %s, %s): %s",
        delivery.subscription_id,
        delivery.sequence,
        delivery.attempts,
        "failed for good" if delay is None else f"again in {delay:.0f} s",
        outcome.error,
    )
    return counters


def save_outcomes(deliveries: Iterable[WebhookDelivery]) -> None:
    """Save ``record_outcome``'s notes: the delivered ones in one statement per HTTP status
    (Django's ``bulk_update`` builds a CASE per row and field: milliseconds of Python per
    delivery), the others one by one."""
    delivered: dict[int | None, list[int]] = {}
    for delivery in deliveries:
        if delivery.status == DELIVERED:
            delivered.setdefault(delivery.last_status, []).append(delivery.id)
        else:
            WebhookDelivery.objects.filter(id=delivery.id).update(
                **{field: getattr(delivery, field) for field in RECORDED}
            )
    now = timezone.now()
    for status, ids in delivered.items():
        WebhookDelivery.objects.filter(id__in=ids).update(
            status=DELIVERED,
            attempts=F("attempts") + 1,
            last_status=status,
            last_error="",
            delivered_at=now,
        )


def _count(counters: Iterable[Counter]) -> None:
    for counter in counters:
        counter.inc()


# --- The worker -----------------------------------------------------------------------------

# The claim's status is a bound parameter: a generic plan of the prepared statement
# (PREPARED_STATEMENTS) could not use the indexes on pending deliveries, whose condition is
# status = 'pending', and would read every delivery for every claimed one. Plans made for the
# values given use them.
CUSTOM_PLANS = "SET plan_cache_mode = force_custom_plan"


class Worker:
    """The loop of ``manage.py deliver_events``: number new events, fan them out, deliver what
    is due; then wait for a notification or ``poll`` seconds. ``stop`` ends it after the
    delivery in progress."""

    def __init__(
        self,
        *,
        batch: int = BATCH,
        poll: float | None = None,
        sender: Sender | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.batch = batch
        self.poll = settings.WEBHOOK_POLL_SECONDS if poll is None else poll
        self.sender = sender or Sender()
        self.stop = stop or threading.Event()
        self._listener: BaseDatabaseWrapper | None = None

    def round(self) -> int:
        """Number and fan out new events, then deliver until nothing is due (or ``stop``);
        how many deliveries it sent."""
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(CUSTOM_PLANS)
        sequence_events()
        fan_out()
        sent = 0
        while not self.stop.is_set():
            count = deliver_due(sender=self.sender, batch=self.batch, stopping=self.stop.is_set)
            sent += count
            if not count:
                break
        return sent

    def run(self, *, once: bool = False) -> None:
        """Work until ``stop`` (with ``once``: until nothing is due)."""
        try:
            while not self.stop.is_set():
                try:
                    sent = self.round()
                except Exception:
                    if once:
                        raise
                    logger.exception("webhook worker: a round failed; trying again")
                    self._close_listener()
                    connection.close()  # a new one next round (the database may be back)
                    self.stop.wait(max(self.poll, 1.0))
                    continue
                if once and not sent:
                    return
                if not sent:
                    self._wait()
        finally:
            self._close_listener()
            self.sender.close()

    def _wait(self) -> None:
        if connection.vendor != "postgresql":
            self.stop.wait(self.poll)
            return
        try:
            if self._listener is None:
                listener = connections.create_connection("default")
                listener.ensure_connection()
                listener.connection.autocommit = True
                listener.connection.execute(f"LISTEN {CHANNEL}")
                self._listener = listener
            _notified(self._listener.connection, self.poll)
        except Exception:
            logger.warning("webhook worker: listening failed; polling", exc_info=True)
            self._close_listener()
            self.stop.wait(self.poll)

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def _notified(listening: Any, timeout: float) -> bool:
    return any(True for _ in listening.notifies(timeout=timeout, stop_after=1))


# --- The worker's own /metrics ---------------------------------------------------------------


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def serve_metrics(port: int, address: str = "127.0.0.1") -> WSGIServer:
    """Serve this process's Prometheus metrics (the counters above and the backlog gauge) at
    ``http://address:port/metrics`` from a background thread."""
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            return metrics(environ, start_response)
        finally:
            connections.close_all()  # this scrape's thread's connection (the backlog query)

    server = make_server(address, port, app, _MetricsServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="webhook-metrics", daemon=True).start()
    return server
