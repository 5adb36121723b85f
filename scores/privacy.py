"""Personal data of one user: everything stored about them as one JSON document, streamed
(``user_export``), and its erasure (``user_erase``). ``GET`` and ``DELETE
/privacy/users/{user_id}`` and the ``export_user`` and ``erase_user`` commands call these.

**What an erasure removes**, in one transaction: the user's scores (their ``score.deleted``
events appended to the outbox, the statistics kept right by the triggers of ``scores``, as for
any deletion), their whole attempt log (also the log of scores deleted earlier, which a plain
deletion keeps), their earlier events still in the outbox (``score.created`` and
``score.updated`` carry the score's values; the ``score.deleted`` ones carry only ids, and tell
consumers what to forget), and the admin's change history of their scores (Django's
``LogEntry`` names a score by its value). It records one audit entry (``user.erased``, by ids
and counts only).

**Writes of the user racing with an erasure** are each either erased whole or kept whole, never
half: a write that finished before the erasure began is erased; one that begins after the
erasure committed is kept (the user is still using the platform: an erasure erases what is
stored, it does not ban anyone). In between, the order the database gives them decides:

- a write of several scores in one transaction (bulk, an import batch) and an erasure of one
  of its users exclude each other (``scores.services.lock_users``): the erasure sees all of it
  or none of it;
- the scores are deleted first, by one statement that locks them, so a write of an existing
  score waits for the erasure (and then creates the score again, as a new one) or the erasure
  waits for it (and then deletes the score and the write's log row);
- a write that does not apply locks its score (``FOR KEY SHARE``) while it logs the attempt, so
  that row is erased with the score or the score is gone and nothing is logged (an upsert then
  writes again and creates the score);
- the attempt log and the events are deleted only where their score no longer exists, so a
  score created meanwhile, which the erasure did not see, keeps its log and its event.

On SQLite one write transaction runs at a time, so an erasure is simply before or after a write.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from drf_orjson_renderer.renderers import ORJSONRenderer

from scores import audit
from scores.events import delete_events
from scores.models import Attempt, Score, ScoreEvent
from scores.selectors import ATTEMPT_FIELDS, in_id_order
from scores.services import lock_users, scores_delete
from scores.statements import SCORE_FIELDS

__all__ = ["Erasure", "user_erase", "user_export"]

READ_BATCH = 2000  # rows fetched from the database at a time
ROWS_PER_CHUNK = 500  # rows rendered into one chunk of the answer
LOG_ENTRIES_BATCH = 500  # score ids per query of the admin's change history


def user_export(*, user_id: int, using: str = "default") -> Iterator[bytes]:
    """Everything stored about ``user_id`` as the UTF-8 JSON document ``{"user_id": <id>,
    "scores": [<score as GET /scores/{id} shows it>, ...], "attempts": [<attempt as GET
    /scores/{id}/attempts shows it>, ...]}``, scores and attempts in id order, in chunks of
    ``ROWS_PER_CHUNK`` rows, read from the database ``using`` as the chunks are consumed (a
    server-side cursor, or keyset batches: ``scores.selectors.in_id_order``), so memory does
    not grow with the number of rows.

    The scores and the attempts are two reads: a write of the user made while the document
    streams may show in one and not the other.
    """
    renderer = ORJSONRenderer()
    scores = Score.objects.using(using).filter(user_id=user_id).values(*SCORE_FIELDS)
    attempts = Attempt.objects.using(using).filter(user_id=user_id).values(*ATTEMPT_FIELDS)
    yield b'{"user_id":' + str(user_id).encode() + b',"scores":['
    yield from _json_items(in_id_order(scores, key=_id, batch=READ_BATCH), renderer)
    yield b'],"attempts":['
    yield from _json_items(in_id_order(attempts, key=_id, batch=READ_BATCH), renderer)
    yield b"]}"


def _id(row: dict[str, Any]) -> int:
    return int(row["id"])


def _json_items(rows: Iterable[dict[str, Any]], renderer: ORJSONRenderer) -> Iterator[bytes]:
    """The rows as the items of a JSON array (without its brackets), rendered as the API
    renders every answer, ``ROWS_PER_CHUNK`` a chunk."""
    iterator = iter(rows)
    separator = b""
    while chunk := list(islice(iterator, ROWS_PER_CHUNK)):
        yield separator + renderer.render(chunk)[1:-1]
        separator = b","


@dataclass(frozen=True)
class Erasure:
    """What an erasure removed: ``scores_deleted`` scores and ``attempts_deleted`` entries of
    the attempt log (0 and 0: there was nothing)."""

    user_id: int
    scores_deleted: int
    attempts_deleted: int


_ERASE_ATTEMPTS = (
    "DELETE FROM score_attempts WHERE user_id = %(user_id)s AND NOT EXISTS "
    "(SELECT 1 FROM scores WHERE scores.id = score_attempts.score_id) RETURNING score_id"
)


def user_erase(*, user_id: int, actor: str, reason: str | None = None) -> Erasure:
    """Erase everything stored about ``user_id`` (see the module), in one transaction, and
    record it in the audit log as done by ``actor`` for ``reason``. Idempotent: erasing a user
    with nothing stored answers zeros (and is recorded too).

    Raises:
        DatabaseError: the database failed or missed its deadline; nothing was erased.
    """
    with transaction.atomic():
        lock_users([user_id], exclusive=True)  # a multi-score write is before or after, whole
        deleted = scores_delete(where="user_id = %(user_id)s", params={"user_id": user_id})
        with connection.cursor() as cursor:
            cursor.execute(_ERASE_ATTEMPTS, {"user_id": user_id})
            logged = [row[0] for row in cursor.fetchall()]
        score_ids = {row["id"] for row in deleted} | set(logged)
        _erase_events(user_id)
        _erase_change_history(score_ids)
        erasure = Erasure(
            user_id=user_id, scores_deleted=len(deleted), attempts_deleted=len(logged)
        )
        audit.record(
            actor,
            "user.erased",
            f"{audit.user_target(user_id)}: {erasure.scores_deleted} scores, "
            f"{erasure.attempts_deleted} attempts",
            reason,
        )
    return erasure


def _erase_events(user_id: int) -> None:
    """The user's earlier events, but for the ``score.deleted`` ones (ids only) and those of
    scores that still exist (created after the erasure's deletion: kept whole)."""
    events = (
        ScoreEvent.objects.filter(user_id=user_id)
        .exclude(type="score.deleted")
        .exclude(Exists(Score.objects.filter(id=OuterRef("score_id"))))
    )
    delete_events(events)  # with their webhook deliveries, sent or not


def _erase_change_history(score_ids: set[int]) -> None:
    """The admin's ``LogEntry`` rows of these scores (their ``object_repr`` shows the value)."""
    content_type = ContentType.objects.get_for_model(Score)
    ids = sorted(str(score_id) for score_id in score_ids)
    for start in range(0, len(ids), LOG_ENTRIES_BATCH):
        LogEntry.objects.filter(
            content_type=content_type, object_id__in=ids[start : start + LOG_ENTRIES_BATCH]
        ).delete()
