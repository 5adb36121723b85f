"""The write path. Every endpoint, the admin and the commands that change a score call these
functions: each write applies to the score and appends to its attempt log atomically, with
the statements of ``scores.statements``.

- The upsert is ``INSERT … ON CONFLICT (user_id, exercise_id) DO UPDATE``: any number of
  concurrent upserts of one (user, exercise) leave exactly one row and raise no error.
- Ordering: whether an attempt applies to an existing score is part of that statement
  (``SCORE_POLICY``), so it holds under concurrency; an attempt that does not apply is logged
  with ``applied = false`` and leaves the score as it is.
- Idempotency: a write whose ``attempt_id`` is already logged for its user changes nothing and
  is answered as the first one was; the same ``attempt_id`` with other content is an
  ``AttemptConflict``. The log's unique (user_id, attempt_id) settles concurrent replays.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scores import audit
from scores.models import Attempt
from scores.selectors import ScoreRow, score_by_id, score_row
from scores.statements import (
    ALWAYS,
    DELETED_FIELDS,
    WriteMode,
    attempts_json,
    current_statement,
    delete_statement,
    events_json,
    log_statement,
    score_statement,
    sqlite_events_statement,
)
from scores.telemetry import EVENTS_APPENDED, SCORE_WRITES
from scores.writes import WRITE_FIELDS, Write

__all__ = [
    "AttemptConflict",
    "BulkWrite",
    "ScoreExists",
    "ScoreNotFound",
    "ScoreWrite",
    "Write",
    "WriteMode",
    "score_delete",
    "score_write",
    "scores_upsert_many",
]


class ScoreExists(Exception):
    """A create found the (user, exercise) score already stored."""


class ScoreNotFound(Exception):
    """An update found no score to change (or a replayed attempt's score is gone)."""


class AttemptConflict(Exception):
    """An ``attempt_id`` already logged for that user with other content."""

    def __init__(self, fields: list[str], index: int | None = None) -> None:
        super().__init__(f"attempt_id already recorded with other {', '.join(fields)}")
        self.fields = fields
        self.index = index  # the item of a bulk write


@dataclass(frozen=True)
class ScoreWrite:
    """The score after a write, whether the write created it, and whether it applied."""

    score: ScoreRow
    created: bool
    applied: bool = True
    replayed: bool = False

    @property
    def outcome(self) -> str:
        if self.replayed:
            return "replayed"
        if not self.applied:
            return "not_applied"
        return "created" if self.created else "updated"


@dataclass(frozen=True)
class BulkWrite:
    """How many items created a score; every other item wrote to an existing one (applied,
    logged as not applied, or already logged under its attempt_id)."""

    created: int
    updated: int
    not_applied: int = 0  # of ``updated``: did not apply, only logged
    applied: int = 0  # items that changed a score (created or updated it)


_ATTEMPTS = 3  # a concurrent replay's unique-key violation is answered by reading again


class _ScoreVanished(Exception):
    """An upsert's score was deleted (or erased) between its two statements: write again."""


def score_write(
    *,
    write: Write,
    recorded_by: str,
    mode: WriteMode = WriteMode.UPSERT,
    correction: bool = False,
) -> ScoreWrite:
    """Apply one attempt to its score and log it, atomically.

    ``created_at`` is set only when the row is inserted; ``updated_at`` on every applied write.
    A ``correction`` (a privileged caller's update by id, a staff edit) applies whatever the
    policy says.

    Raises:
        ScoreExists: ``mode`` is CREATE and the score already exists.
        ScoreNotFound: ``mode`` is UPDATE and there is no such score (or a replayed attempt's
            score has been deleted).
        AttemptConflict: the ``attempt_id`` is logged for this user with other content.
    """
    policy = ALWAYS if correction else settings.SCORE_POLICY
    result = _write_retrying(write, recorded_by, mode, policy)
    SCORE_WRITES.labels(result.outcome).inc()
    if result.applied and not result.replayed:
        EVENTS_APPENDED.inc()
    return result


def _write_retrying(write: Write, recorded_by: str, mode: WriteMode, policy: str) -> ScoreWrite:
    for _ in range(_ATTEMPTS):
        if write.attempt_id is not None:
            recorded = _recorded([write]).get((write.user_id, write.attempt_id))
            if recorded is not None:
                return _replay(write, recorded)
        try:
            # In autocommit a PostgreSQL statement is a transaction of its own; inside a
            # caller's transaction a savepoint keeps a failure from spoiling it.
            atomic = connection.in_atomic_block or connection.vendor != "postgresql"
            with transaction.atomic() if atomic else nullcontext():
                return _write_one(write, recorded_by, mode, policy)
        except IntegrityError:
            if write.attempt_id is None:
                raise
            # A concurrent write logged this attempt_id first: answer as its replay.
        except _ScoreVanished:
            pass  # the upsert now finds no score: it creates one
    raise RuntimeError("the write kept meeting concurrent changes")  # pragma: no cover


def _write_one(write: Write, recorded_by: str, mode: WriteMode, policy: str) -> ScoreWrite:
    applied, current = _execute([write], recorded_by, mode, policy)
    if applied:
        score, created = applied[0]
        return ScoreWrite(score=score, created=created)
    if mode is WriteMode.CREATE:
        raise ScoreExists()
    if not current:
        if mode is WriteMode.UPSERT:
            raise _ScoreVanished()
        raise ScoreNotFound()
    return ScoreWrite(score=current[0], created=False, applied=False)


def _execute(
    writes: Sequence[Write], recorded_by: str, mode: WriteMode, policy: str
) -> tuple[list[tuple[ScoreRow, bool]], list[ScoreRow]]:
    """Run the write statements for ``writes`` (each (user, exercise) once): the scores the
    attempts applied to, with ``created``, in the order of ``writes``; and for a single write
    that did not apply, its score as it is. Every attempt is logged, in the order of
    ``writes`` (in CREATE mode only those that created a score). The caller holds the
    transaction where more than one statement must be atomic.

    A single write on PostgreSQL, the common case, is one statement when it applies (the
    score and its log row in one CTE).
    """
    vendor = connection.vendor
    now = timezone.now()
    params: dict[str, Any] = {
        "attempts": attempts_json(enumerate(writes), now),
        "now": connection.ops.adapt_datetimefield_value(now),
        "recorded_by": recorded_by,
    }
    one_statement = vendor == "postgresql" and len(writes) == 1
    with connection.cursor() as cursor:
        cursor.execute(score_statement(vendor, mode, policy, log=one_statement), params)
        applied = {(row[1], row[2]): (score_row(row[:-1]), bool(row[-1])) for row in cursor}
        if vendor != "postgresql":
            _append_events(
                [
                    (score, "score.created" if created else "score.updated")
                    for score, created in applied.values()
                ],
                now,
            )
        if one_statement and applied:
            return list(applied.values()), []
        current: list[ScoreRow] = []
        if len(writes) == 1 and not applied and mode is not WriteMode.CREATE:
            cursor.execute(current_statement(vendor, log=one_statement), params)
            current = [score_row(row[:-1]) for row in cursor]
        if not one_statement:
            logged = [
                (index, write)
                for index, write in enumerate(writes)
                if mode is not WriteMode.CREATE or (write.user_id, write.exercise_id) in applied
            ]
            outcomes = [
                {
                    "applied": (key := (write.user_id, write.exercise_id)) in applied,
                    "created": key in applied and applied[key][1],
                }
                for _, write in logged
            ]
            if logged:
                rows = attempts_json(logged, now, outcomes)
                cursor.execute(log_statement(vendor), {**params, "attempts": rows})
    ordered = [
        applied[(write.user_id, write.exercise_id)]
        for write in writes
        if (write.user_id, write.exercise_id) in applied
    ]
    return ordered, current


def _replay(write: Write, recorded: dict[str, Any]) -> ScoreWrite:
    differing = write.differences(recorded)
    if differing:
        raise AttemptConflict(differing)
    score = score_by_id(recorded["score_id"], primary=True)
    if score is None:
        raise ScoreNotFound()
    return ScoreWrite(
        score=score,
        created=recorded["created_score"],
        applied=recorded["applied"],
        replayed=True,
    )


_REPLAY_FIELDS = ("user_id", "attempt_id", "score_id", "applied", "created_score")


def _recorded(writes: Sequence[Write]) -> dict[tuple[int, uuid.UUID], dict[str, Any]]:
    """The logged attempts with the writes' (user_id, attempt_id), read on the primary (a
    replay must see what the first write logged)."""
    keys = {(write.user_id, write.attempt_id) for write in writes if write.attempt_id is not None}
    if not keys:
        return {}
    rows = (
        Attempt.objects.using("default")
        .filter(
            user_id__in={user_id for user_id, _ in keys},
            attempt_id__in={attempt_id for _, attempt_id in keys},
        )
        .values(*{*_REPLAY_FIELDS, *WRITE_FIELDS})
    )  # the unique (user_id, attempt_id) index; pairs crossed from the two lists are dropped
    return {key: row for row in rows if (key := (row["user_id"], row["attempt_id"])) in keys}


# --- Bulk ---------------------------------------------------------------------------------


def scores_upsert_many(*, writes: Sequence[Write], recorded_by: str) -> BulkWrite:
    """Upsert many scores in one transaction, all or nothing: one statement for the scores and
    their log, one more for the attempts that did not apply.

    Each (user, exercise) must appear once (``scores.writes.parse_bulk`` checks it). Items whose
    attempt_id is already logged for their user with the same content are skipped (replayed);
    with other content the whole batch is refused. Rows are written in key order, so
    concurrent batches lock them in the same order and cannot deadlock.

    Raises:
        AttemptConflict: an item's attempt_id is logged with other content (``index`` names it).
    """
    result = _write_many_retrying(writes, recorded_by)
    SCORE_WRITES.labels("created").inc(result.created)
    SCORE_WRITES.labels("updated").inc(result.updated - result.not_applied)
    SCORE_WRITES.labels("not_applied").inc(result.not_applied)
    EVENTS_APPENDED.inc(result.applied)
    return result


def _write_many_retrying(writes: Sequence[Write], recorded_by: str) -> BulkWrite:
    for _ in range(_ATTEMPTS):
        try:
            with transaction.atomic():
                return _write_many(writes, recorded_by)
        except IntegrityError:
            if not any(write.attempt_id for write in writes):
                raise
            # A concurrent batch logged one of these attempt_ids first: read them again.
    raise RuntimeError("attempt_ids kept conflicting")  # pragma: no cover


def _write_many(writes: Sequence[Write], recorded_by: str) -> BulkWrite:
    lock_users({write.user_id for write in writes}, exclusive=False)
    recorded = _recorded(writes)
    todo = []
    for index, write in enumerate(writes):
        previous = recorded.get((write.user_id, write.attempt_id)) if write.attempt_id else None
        if previous is None:
            todo.append(write)
            continue
        differing = write.differences(previous)
        if differing:
            raise AttemptConflict(differing, index=index)
    if not todo:
        return BulkWrite(created=0, updated=len(writes))
    applied, _ = _execute(todo, recorded_by, WriteMode.UPSERT, settings.SCORE_POLICY)
    created = sum(1 for _, was_created in applied if was_created)
    not_applied = len(todo) - len(applied)
    return BulkWrite(
        created=created,
        updated=len(writes) - created,
        not_applied=not_applied,
        applied=len(applied),
    )


# --- Users' write locks ----------------------------------------------------------------------

USER_LOCKS = 0x75_73_72_73  # "usrs": the first key of the users' advisory locks
USER_LOCK_SLOTS = 64  # users share slots, so a batch of many users takes few locks


def lock_users(user_ids: Collection[int], *, exclusive: bool) -> None:
    """PostgreSQL: take, until the end of the caller's transaction, the advisory locks of the
    slots of these users (``user_id % USER_LOCK_SLOTS``), in slot order; nothing elsewhere
    (SQLite runs one write transaction at a time).

    A write of several scores in one transaction (bulk, CSV import batches) takes them shared
    before its first statement, an erasure exclusive: so an erasure sees all of such a write
    or none of it. (A write of one score needs none: its row lock settles the order.)
    """
    if connection.vendor != "postgresql" or not user_ids:
        return
    slots = sorted({user_id % USER_LOCK_SLOTS for user_id in user_ids})
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_SLOTS[exclusive], [USER_LOCKS, slots])


_LOCK_SLOTS = {
    True: "SELECT pg_advisory_xact_lock(%s, slot) FROM unnest(%s::integer[]) AS slot ORDER BY slot",
    False: "SELECT pg_advisory_xact_lock_shared(%s, slot) "
    "FROM unnest(%s::integer[]) AS slot ORDER BY slot",
}


def scores_delete(
    *, where: str, params: dict[str, Any], actor: str | None = None, reason: str | None = None
) -> list[dict[str, Any]]:
    """Delete the scores matching ``where`` (SQL over ``scores`` with named ``params``) and
    append their ``score.deleted`` events, atomically; the deleted scores' ids. With an
    ``actor``, each deletion is also an entry of the audit log (``score.deleted``, with the
    ``reason``), in the same transaction."""
    vendor = connection.vendor
    now = timezone.now()
    statement = delete_statement(vendor, where)
    sql_params = {**params, "now": connection.ops.adapt_datetimefield_value(now)}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, sql_params)
        deleted = [dict(zip(DELETED_FIELDS, row, strict=True)) for row in cursor]
        if vendor != "postgresql":
            _append_events([(row, "score.deleted") for row in deleted], now)
        if actor is not None:
            targets = (audit.score_target(row) for row in deleted)
            audit.record_each(actor, "score.deleted", targets, reason)
    EVENTS_APPENDED.inc(len(deleted))
    return deleted


def score_delete(*, score_id: int, actor: str, reason: str | None = None) -> bool:
    """Delete one score, append its ``score.deleted`` event and its audit entry (``actor``
    deleted it, for ``reason``); its attempt log stays. True if it existed."""
    deleted = scores_delete(
        where="id = %(score_id)s", params={"score_id": score_id}, actor=actor, reason=reason
    )
    return bool(deleted)


def scores_delete_by_ids(*, ids: Sequence[int], actor: str, reason: str | None = None) -> int:
    """Delete the scores with these ids, append their events and audit entries; how many
    there were."""
    value: list[int] | str
    if connection.vendor == "postgresql":
        where, value = "id = ANY(%(ids)s)", list(ids)
    else:
        where, value = "id IN (SELECT value FROM json_each(%(ids)s))", json.dumps(list(ids))
    return len(scores_delete(where=where, params={"ids": value}, actor=actor, reason=reason))


def _append_events(changes: Sequence[tuple[Mapping[str, Any], str]], now: datetime) -> None:
    """SQLite: the outbox rows the PostgreSQL statements append themselves, in the caller's
    transaction, in one statement. Each change is (the score's fields, the event type)."""
    if not changes:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            sqlite_events_statement(),
            {
                "events": events_json([(dict(score), kind) for score, kind in changes], connection),
                "now": connection.ops.adapt_datetimefield_value(now),
            },
        )
