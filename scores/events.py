"""Score events for other services: numbered in commit order, read as CloudEvents, waited for.

**Numbering.** The write path appends events to the outbox (``scores.models.ScoreEvent``) in
the statement that changes a score; their ids are taken when they are inserted, which is not
the order their transactions commit. ``sequence_events`` numbers the committed events that
have no ``sequence`` yet, in id order, one sequencer at a time (a transaction-scoped advisory
lock): an event that commits later gets a larger number than every event already numbered, so
a reader that has read up to N never misses one that commits after it read. It runs before
every read of ``GET /events``, in the delivery worker, and in the bell below.

Writers do not ``NOTIFY``: PostgreSQL serializes the commits of notifying transactions on one
lock (measured: 8 clients upserting did 4,300 transactions/s with a NOTIFY each, 10,000
without; docs/scaling.md). A sequencer that numbered events notifies once for the batch.

**Waiting.** ``GET /events?wait=N`` waits on this process's ``bell``: one thread per process,
running only while some request waits, that listens on the ``score_events`` channel and
numbers events itself every ``POLL`` seconds (so a wait ends even where no worker runs), and
wakes every waiting request of the process at once. It listens on the ``listen`` database
(``DATABASE_LISTEN_URL``) when there is one: a direct connection to the primary where
``DATABASE_URL`` goes through a PgBouncer in transaction mode, which hands a LISTEN's session
back to its pool and never delivers the notifications (a bell then wakes only when it numbers
the events itself, and a request another process's sequencer beat waits its whole ``wait``).

**Reading.** The feed reads the primary, where the events are numbered: a replica behind it
would answer a request the bell woke with nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from scores.models import ScoreEvent, WebhookDelivery
from scores.selectors import score_row
from scores.statements import EVENT_FIELDS, SCORE_FIELDS

logger = logging.getLogger(__name__)

CHANNEL = "score_events"
SEQUENCER_LOCK = 0x65_76_73_71  # pg_advisory_xact_lock key: "evsq"
BATCH = 10_000
POLL = 0.2  # seconds between the bell's own numbering runs while requests wait
LISTEN_ALIAS = "listen"  # DATABASE_LISTEN_URL's database (evalsvc.settings.base.listen_databases)

# PostgreSQL: nextval in the target list is evaluated after ORDER BY and LIMIT (9.6+), so
# the numbers follow the ids.
_NUMBER = (
    "UPDATE score_events SET sequence = numbered.sequence FROM ("
    "SELECT id, nextval('score_events_sequence') AS sequence FROM score_events "
    "WHERE sequence IS NULL ORDER BY id LIMIT %s) AS numbered "
    "WHERE score_events.id = numbered.id"
)
# SQLite runs one write transaction at a time: ids are taken in commit order already.
_NUMBER_SQLITE = "UPDATE score_events SET sequence = id WHERE sequence IS NULL"


def sequence_events() -> int:
    """Number the committed events without a ``sequence``, in id order; how many it numbered
    (0 when another sequencer holds the lock: its numbers show once it commits)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_NUMBER_SQLITE)
            return max(cursor.rowcount, 0)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEQUENCER_LOCK])
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(_NUMBER, [BATCH])
        numbered = max(cursor.rowcount, 0)
        if numbered:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])  # delivered at commit
    return numbered


def events_after(sequence: int, limit: int) -> list[ScoreEvent]:
    """The numbered events after ``sequence``, oldest first, at most ``limit``."""
    numbered = ScoreEvent.objects.using("default").filter(sequence__gt=sequence)
    return list(numbered.order_by("sequence")[:limit])


_DELETED_DATA = ("score_id", "user_id", "exercise_id")


def cloudevent(event: ScoreEvent) -> dict[str, Any]:
    """An event as a CloudEvents 1.0 JSON object; ``data`` is the score as ``GET
    /scores/{id}`` showed it after the change, or its ids for ``score.deleted``."""
    if event.type == "score.deleted":
        data: dict[str, Any] = {
            "id": event.score_id,
            "user_id": event.user_id,
            "exercise_id": event.exercise_id,
        }
    else:
        data = dict(score_row([getattr(event, EVENT_FIELDS[name]) for name in SCORE_FIELDS]))
    return {
        "specversion": "1.0",
        "id": str(event.event_id),
        "source": "evalsvc",
        "type": event.type,
        "time": event.time,
        "subject": f"users/{event.user_id}/exercises/{event.exercise_id}",
        "datacontenttype": "application/json",
        "sequence": event.sequence,
        "data": data,
    }


def purge_events(*, older_than: timedelta | None = None) -> int:
    """Delete the events older than ``older_than`` (default ``EVENTS_RETENTION_DAYS``) with
    their deliveries; how many events went."""
    age = older_than or timedelta(days=settings.EVENTS_RETENTION_DAYS)
    return delete_events(ScoreEvent.objects.filter(time__lt=timezone.now() - age))


def delete_events(events: QuerySet[ScoreEvent]) -> int:
    """Delete ``events`` with their webhook deliveries, deliveries first (their key does not
    cascade: ``scores.models``), in two statements, no event loaded into Python; in the
    caller's transaction, or one of its own. How many events went."""
    with transaction.atomic():
        WebhookDelivery.objects.filter(event__in=events.values("id")).delete()
        _, per_model = events.delete()
    return int(per_model.get(ScoreEvent._meta.label, 0))


class Bell:
    """Wakes this process's requests waiting for events (see the module)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._waiters = 0
        self._generation = 0
        self._thread: threading.Thread | None = None

    @property
    def generation(self) -> int:
        """Increases each time new events are announced (read it before looking for events,
        then ``wait`` since it: an announcement in between is not missed)."""
        return self._generation

    def wait(self, since: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an announcement after generation ``since``."""
        with self._condition:
            self._waiters += 1
            generation = since
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._ring, name="events-bell", daemon=True)
                self._thread.start()
            try:
                return self._condition.wait_for(
                    lambda: self._generation != generation, timeout=timeout
                )
            finally:
                self._waiters -= 1

    def _announce(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def _ring(self) -> None:
        listener = None
        try:
            while True:
                with self._condition:
                    if not self._waiters:
                        self._thread = None
                        return
                if sequence_events():
                    self._announce()
                    continue
                if listener is None and connection.vendor == "postgresql":
                    listener = connections.create_connection(_listen_alias())
                    listener.ensure_connection()
                    listener.connection.autocommit = True
                    listener.connection.execute(f"LISTEN {CHANNEL}")
                if listener is not None and _notified(listener.connection, POLL):
                    self._announce()
                elif listener is None:
                    time.sleep(POLL)
        except Exception:
            logger.warning(
                "events bell failed; waiting requests end at their timeout", exc_info=True
            )
            with self._condition:
                self._thread = None
        finally:
            if listener is not None:
                listener.close()
            connection.close()


def _listen_alias() -> str:
    return LISTEN_ALIAS if LISTEN_ALIAS in settings.DATABASES else "default"


def _notified(listening: Any, timeout: float) -> bool:
    return any(True for _ in listening.notifies(timeout=timeout, stop_after=1))


bell = Bell()


def wait_for_events(after: int, limit: int, seconds: float) -> list[ScoreEvent]:
    """The events after ``after``, waiting up to ``seconds`` for some to arrive."""
    deadline = time.monotonic() + seconds
    sequence_events()
    while True:
        since = bell.generation
        events = events_after(after, limit)
        remaining = deadline - time.monotonic()
        if events or remaining <= 0:
            return events
        bell.wait(since, remaining)


def as_cloudevents(events: Iterable[ScoreEvent]) -> list[dict[str, Any]]:
    return [cloudevent(event) for event in events]
