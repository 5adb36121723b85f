"""The write path. Every endpoint, the admin and the commands that change a score call these
functions: each write applies to the score and appends to its attempt log in one transaction.

- The upsert is ``INSERT … ON CONFLICT (user_id, exercise_id) DO UPDATE``: any number of
  concurrent upserts of one (user, exercise) leave exactly one row and raise no error.
- Ordering: an attempt whose ``attempted_at`` is older than the score's latest applied attempt
  is logged with ``applied = false`` and leaves the score as it is (the condition is part of
  the upsert statement, so it holds under concurrency). An equal timestamp is not older: the
  later write applies.
- Idempotency: a write carrying an ``attempt_id`` that is already logged changes nothing and
  is answered as the first one was; the same ``attempt_id`` with other content is an
  ``AttemptConflict``. The log's unique ``attempt_id`` settles concurrent replays.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scores.models import Attempt, Score
from scores.selectors import (
    SCORE_COLUMNS,
    ScoreRow,
    attempt_by_id,
    attempts_by_ids,
    score_row,
)
from scores.telemetry import SCORE_WRITES


class WriteMode(enum.Enum):
    UPSERT = "upsert"  # create or update
    CREATE = "create"  # create only: an existing score is a ScoreExists
    UPDATE = "update"  # update only: a missing score is a ScoreNotFound


class ScoreExists(Exception):
    """A create found the (user, exercise) score already stored."""


class ScoreNotFound(Exception):
    """An update found no score to change."""


class AttemptConflict(Exception):
    """An ``attempt_id`` already logged with other content."""

    def __init__(self, fields: list[str], index: int | None = None) -> None:
        super().__init__(f"attempt_id already recorded with other {', '.join(fields)}")
        self.fields = fields
        self.index = index  # the item of a bulk write


@dataclass(frozen=True)
class Write:
    """One attempt at a score, as a client sent it."""

    user_id: int
    exercise_id: int
    correct: bool
    attempt_id: uuid.UUID | None = None
    attempted_at: datetime | None = None

    def differences(self, recorded: dict[str, Any]) -> list[str]:
        """The fields in which this write differs from a logged attempt with its attempt_id."""
        fields = [
            name
            for name in ("user_id", "exercise_id", "correct")
            if getattr(self, name) != recorded[name]
        ]
        if self.attempted_at is not None and self.attempted_at != recorded["attempted_at"]:
            fields.append("attempted_at")
        return fields


@dataclass(frozen=True)
class ScoreWrite:
    """The score after a write, whether the write created it, and whether it applied."""

    score: ScoreRow
    created: bool
    applied: bool = True
    replayed: bool = False


@dataclass(frozen=True)
class BulkWrite:
    """How many items created a score; every other item wrote to an existing one (applied, or
    logged as older, or already logged under its attempt_id)."""

    created: int
    updated: int
    not_applied: int = 0  # of ``updated``: older than the score's latest attempt, only logged


# --- SQL: table and column names are constants; every value is a bound parameter -----------

_INSERT_COLUMNS = (
    "user_id, exercise_id, correct, created_at, updated_at, attempts, last_attempted_at, "
    "first_correct_at, first_attempt_correct, attempts_to_correct"
)
# The values of a new score: one applied attempt. Parameters: user_id, exercise_id, correct,
# now, now, attempted_at, first_correct_at (attempted_at if correct), correct,
# attempts_to_correct (1 if correct).
_VALUES_ROW = "(%s, %s, %s, %s, %s, 1, %s, %s, %s, %s)"
_APPLY = (
    "correct = excluded.correct, updated_at = excluded.updated_at, "
    "attempts = scores.attempts + 1, last_attempted_at = excluded.last_attempted_at, "
    "first_correct_at = coalesce(scores.first_correct_at, excluded.first_correct_at), "
    "attempts_to_correct = coalesce(scores.attempts_to_correct, "
    "CASE WHEN excluded.correct THEN scores.attempts + 1 END)"
)
_ON_CONFLICT = {
    WriteMode.CREATE: "DO NOTHING",
    WriteMode.UPSERT: (
        f"DO UPDATE SET {_APPLY} WHERE scores.last_attempted_at <= excluded.last_attempted_at"
    ),
}
_UPDATE = (
    "UPDATE scores SET correct = %s, updated_at = %s, attempts = attempts + 1, "
    "last_attempted_at = %s, first_correct_at = coalesce(first_correct_at, %s), "
    "attempts_to_correct = coalesce(attempts_to_correct, CASE WHEN %s THEN attempts + 1 END) "
    "WHERE user_id = %s AND exercise_id = %s AND last_attempted_at <= %s "
    f"RETURNING {SCORE_COLUMNS}, false AS created"
)
_CURRENT = f"SELECT {SCORE_COLUMNS}, false FROM scores WHERE user_id = %s AND exercise_id = %s"
_LOG_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
_LOG = (
    "INSERT INTO score_attempts (score_id, user_id, exercise_id, correct, attempted_at, "
    "recorded_at, recorded_by, attempt_id, applied, created_score) VALUES "
)

# PostgreSQL, one write: the score's statement and its log row in one statement (one round
# trip, atomic on its own: no BEGIN and COMMIT round trips). ``applied`` is the score statement
# returning the score and ``created``; it returns nothing when the attempt is older than the
# score's latest (or, for a create, when the score exists), and then nothing is logged here.
_PG_APPLY_AND_LOG = (
    "WITH applied AS ({statement}), logged AS ("
    "INSERT INTO score_attempts (score_id, user_id, exercise_id, correct, attempted_at, "
    "recorded_at, recorded_by, attempt_id, applied, created_score) "
    "SELECT id, user_id, exercise_id, correct, %s, %s, %s, %s, true, created FROM applied) "
    "SELECT * FROM applied"
)

# PostgreSQL, bulk: the rows travel as one array per column, unnested in key order. The
# statement text and its dozen placeholders are the same for every batch, so psycopg converts
# it once and caches it (ten placeholders per row made it re-parse ~60 kB of SQL per call).
_PG_UPSERT_MANY = (
    f"INSERT INTO scores ({_INSERT_COLUMNS}) "
    "SELECT u, e, c, %s, %s, 1, a, CASE WHEN c THEN a END, c, CASE WHEN c THEN 1 END "
    "FROM unnest(%s::integer[], %s::integer[], %s::boolean[], %s::timestamptz[]) AS t(u, e, c, a) "
    f"ORDER BY u, e ON CONFLICT (user_id, exercise_id) {_ON_CONFLICT[WriteMode.UPSERT]} "
    "RETURNING id, user_id, exercise_id, (xmax = 0)"
)
_PG_IDS_MANY = (
    "SELECT user_id, exercise_id, id FROM scores WHERE (user_id, exercise_id) IN "
    "(SELECT * FROM unnest(%s::integer[], %s::integer[]))"
)
_PG_LOG_MANY = (
    "INSERT INTO score_attempts (score_id, user_id, exercise_id, correct, attempted_at, "
    "recorded_at, recorded_by, attempt_id, applied, created_score) "
    "SELECT s, u, e, c, a, %s, %s, i, ap, cr FROM unnest(%s::bigint[], %s::integer[], "
    "%s::integer[], %s::boolean[], %s::timestamptz[], %s::uuid[], %s::boolean[], %s::boolean[]) "
    "AS t(s, u, e, c, a, i, ap, cr)"
)


def _pg_timestamps(moments: list[datetime]) -> str:
    """A ``timestamptz[]`` literal of aware datetimes in ISO 8601 (which needs no quoting in an
    array): psycopg quotes and escapes a list's datetimes one by one, four times slower."""
    return "{" + ",".join([moment.isoformat() for moment in moments]) + "}"


def _pg_ints(values: list[int]) -> str:
    """An ``integer[]``/``bigint[]`` literal: psycopg dumps a list element by element in Python,
    a quarter of a 1,000-score bulk write; one joined string is quoted once."""
    return "{" + ",".join(map(str, values)) + "}"


def _pg_bools(values: list[bool]) -> str:
    """A ``boolean[]`` literal (see ``_pg_ints``)."""
    return "{" + ",".join(["t" if value else "f" for value in values]) + "}"


def _pg_uuids(values: list[uuid.UUID | None]) -> str:
    """A ``uuid[]`` literal, NULL for None (see ``_pg_ints``)."""
    return "{" + ",".join(["NULL" if value is None else str(value) for value in values]) + "}"


def _created_flag() -> str:
    """SQL telling whether a returned row was inserted by this statement.

    PostgreSQL: a freshly inserted row version has no deleting transaction (``xmax = 0``).
    SQLite (the zero-setup default) has no xmax; there a row was inserted iff both timestamps
    are this write's.
    """
    return "(xmax = 0)" if connection.vendor == "postgresql" else "(created_at = updated_at)"


def _insert(rows: int, mode: WriteMode, returning: str) -> str:
    values = ", ".join([_VALUES_ROW] * rows)
    return (
        f"INSERT INTO scores ({_INSERT_COLUMNS}) VALUES {values} "
        f"ON CONFLICT (user_id, exercise_id) {_ON_CONFLICT[mode]} "
        f"RETURNING {returning}, {_created_flag()} AS created"
    )


def _db_time(moment: datetime) -> Any:
    """A timestamp as the database stores it: as is on PostgreSQL, Django's text form on SQLite
    (so raw-SQL and ORM rows compare alike)."""
    return connection.ops.adapt_datetimefield_value(moment)


def _insert_params(write: Write, now: datetime) -> list[Any]:
    at = _db_time(write.attempted_at or now)
    return [
        write.user_id,
        write.exercise_id,
        write.correct,
        _db_time(now),
        _db_time(now),
        at,
        at if write.correct else None,
        write.correct,
        1 if write.correct else None,
    ]


_ATTEMPT_ID = Attempt._meta.get_field("attempt_id")


def _log_params(
    write: Write, score_id: int, now: datetime, by: str, applied: bool, created: bool
) -> list[Any]:
    return [
        score_id,
        write.user_id,
        write.exercise_id,
        write.correct,
        _db_time(write.attempted_at or now),
        _db_time(now),
        by,
        _ATTEMPT_ID.get_db_prep_value(write.attempt_id, connection),  # uuid, or hex on SQLite
        applied,
        created,
    ]


# --- Single writes ------------------------------------------------------------------------


def score_write(
    *, write: Write, recorded_by: str, mode: WriteMode = WriteMode.UPSERT
) -> ScoreWrite:
    """Apply one attempt to its score and log it, in one transaction.

    ``created_at`` is set only when the row is inserted; ``updated_at`` on every applied write.

    Raises:
        ScoreExists: ``mode`` is CREATE and the score already exists.
        ScoreNotFound: ``mode`` is UPDATE and there is no such score (or a replayed attempt's
            score has been deleted).
        AttemptConflict: the ``attempt_id`` is logged with other content.
    """
    result = _write_retrying(write, recorded_by, mode)
    outcome = (
        "replayed"
        if result.replayed
        else "not_applied"
        if not result.applied
        else "created"
        if result.created
        else "updated"
    )
    SCORE_WRITES.labels(outcome).inc()
    return result


def _write_retrying(write: Write, recorded_by: str, mode: WriteMode) -> ScoreWrite:
    for _ in range(3):
        if write.attempt_id is not None:
            recorded = attempt_by_id(write.attempt_id)
            if recorded is not None:
                return _replay(write, recorded)
        try:
            if connection.vendor == "postgresql":
                # In autocommit the statement is a transaction of its own; inside a caller's
                # transaction a savepoint keeps a failure from spoiling it.
                with transaction.atomic() if connection.in_atomic_block else nullcontext():
                    return _apply_pg(write, recorded_by, mode)
            with transaction.atomic():
                return _apply(write, recorded_by, mode)
        except IntegrityError:
            if write.attempt_id is None or attempt_by_id(write.attempt_id) is None:
                raise
            # A concurrent write logged this attempt_id first: answer as its replay.
    raise RuntimeError("attempt_id kept conflicting")  # pragma: no cover


def _apply_pg(write: Write, recorded_by: str, mode: WriteMode) -> ScoreWrite:
    """``_apply`` in one statement when the write applies (the common case); an attempt that
    does not apply is logged by ``_apply`` in a transaction of its own (its statement changed
    nothing, so running it again there gives the same answer)."""
    now = timezone.now()
    statement, params = _score_statement(write, now, mode)
    with connection.cursor() as cursor:
        cursor.execute(
            _PG_APPLY_AND_LOG.format(statement=statement),
            [
                *params,
                write.attempted_at or now,
                now,
                recorded_by,
                write.attempt_id,
            ],
        )
        row = cursor.fetchone()
    if row is not None:
        return ScoreWrite(score=score_row(row[:-1]), created=bool(row[-1]))
    with transaction.atomic():
        return _apply(write, recorded_by, mode)


def _replay(write: Write, recorded: dict[str, Any]) -> ScoreWrite:
    differing = write.differences(recorded)
    if differing:
        raise AttemptConflict(differing)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {SCORE_COLUMNS} FROM scores WHERE id = %s", [recorded["score_id"]])
        row = cursor.fetchone()
    if row is None:
        raise ScoreNotFound()
    return ScoreWrite(
        score=score_row(row),
        created=recorded["created_score"],
        applied=recorded["applied"],
        replayed=True,
    )


def _score_statement(write: Write, now: datetime, mode: WriteMode) -> tuple[str, list[Any]]:
    """The statement applying ``write`` to its score, returning the score and ``created``."""
    if mode is WriteMode.UPDATE:
        at = _db_time(write.attempted_at or now)
        return _UPDATE, [
            write.correct,
            _db_time(now),
            at,
            at if write.correct else None,
            write.correct,
            write.user_id,
            write.exercise_id,
            at,
        ]
    return _insert(1, mode, SCORE_COLUMNS), _insert_params(write, now)


def _apply(write: Write, recorded_by: str, mode: WriteMode) -> ScoreWrite:
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(*_score_statement(write, now, mode))
        row = cursor.fetchone()
        applied = row is not None
        if row is None:
            if mode is WriteMode.CREATE:
                raise ScoreExists()
            cursor.execute(_CURRENT, [write.user_id, write.exercise_id])  # older: not applied
            row = cursor.fetchone()
            if row is None:
                raise ScoreNotFound()
        created = bool(row[-1])
        score = score_row(row[:-1])
        cursor.execute(
            _LOG + _LOG_ROW, _log_params(write, score["id"], now, recorded_by, applied, created)
        )
    return ScoreWrite(score=score, created=created, applied=applied)


# --- Bulk ---------------------------------------------------------------------------------


def scores_upsert_many(*, writes: Sequence[Write], recorded_by: str) -> BulkWrite:
    """Upsert many scores in one transaction, all or nothing: one statement for the scores, one
    for the log (plus one reading the scores an older attempt did not apply to).

    Each (user, exercise) must appear once (``parse_bulk`` checks it). Items whose attempt_id
    is already logged with the same content are skipped (``replayed``); with other content the
    whole batch is refused (``AttemptConflict`` naming the item). Rows are written in key order,
    so concurrent batches lock them in the same order and cannot deadlock.

    Raises:
        AttemptConflict: an item's attempt_id is logged with other content.
    """
    for _ in range(3):
        try:
            with transaction.atomic():
                result = _apply_many(writes, recorded_by)
            SCORE_WRITES.labels("created").inc(result.created)
            SCORE_WRITES.labels("updated").inc(result.updated - result.not_applied)
            SCORE_WRITES.labels("not_applied").inc(result.not_applied)
            return result
        except IntegrityError:
            if not any(write.attempt_id for write in writes):
                raise
            # A concurrent batch logged one of these attempt_ids first: read them again.
    raise RuntimeError("attempt_ids kept conflicting")  # pragma: no cover


def _apply_many(writes: Sequence[Write], recorded_by: str) -> BulkWrite:
    replayed = _replayed_items(writes)
    todo = sorted(
        (write for index, write in enumerate(writes) if index not in replayed),
        key=lambda write: (write.user_id, write.exercise_id),
    )
    if not todo:
        return BulkWrite(created=0, updated=len(writes))
    now = timezone.now()
    arrays = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        if arrays:
            cursor.execute(
                _PG_UPSERT_MANY,
                [
                    now,
                    now,
                    _pg_ints([write.user_id for write in todo]),
                    _pg_ints([write.exercise_id for write in todo]),
                    _pg_bools([write.correct for write in todo]),
                    _pg_timestamps([write.attempted_at or now for write in todo]),
                ],
            )
        else:
            params: list[Any] = []
            for write in todo:
                params += _insert_params(write, now)
            cursor.execute(_insert(len(todo), WriteMode.UPSERT, "id, user_id, exercise_id"), params)
        applied = {(user, exercise): (id_, bool(new)) for id_, user, exercise, new in cursor}
        stale = [write for write in todo if (write.user_id, write.exercise_id) not in applied]
        ids = {key: id_ for key, (id_, _) in applied.items()}
        if stale:  # older attempts: the scores they did not change
            ids.update(_score_ids(cursor, stale, arrays))
        logged = [
            (write, ids[key], key in applied, applied.get(key, (0, False))[1])
            for write in todo
            if (key := (write.user_id, write.exercise_id)) in ids
        ]  # (a score deleted meanwhile has nothing to log against)
        if logged:
            _log_many(cursor, logged, now, recorded_by, arrays)
    created = sum(1 for _, inserted in applied.values() if inserted)
    return BulkWrite(created=created, updated=len(writes) - created, not_applied=len(stale))


def _score_ids(cursor: Any, writes: list[Write], arrays: bool) -> dict[tuple[int, int], int]:
    """The ids of the scores of ``writes`` (which exist unless deleted meanwhile)."""
    if arrays:
        cursor.execute(
            _PG_IDS_MANY,
            [
                _pg_ints([write.user_id for write in writes]),
                _pg_ints([write.exercise_id for write in writes]),
            ],
        )
    else:
        pairs = ", ".join(["(%s, %s)"] * len(writes))
        cursor.execute(
            "SELECT user_id, exercise_id, id FROM scores "
            f"WHERE (user_id, exercise_id) IN (VALUES {pairs})",
            [value for write in writes for value in (write.user_id, write.exercise_id)],
        )
    return {(user, exercise): id_ for user, exercise, id_ in cursor}


def _log_many(
    cursor: Any,
    logged: list[tuple[Write, int, bool, bool]],
    now: datetime,
    recorded_by: str,
    arrays: bool,
) -> None:
    """Append one attempt per (write, score id, applied, created) to the log."""
    if arrays:
        cursor.execute(
            _PG_LOG_MANY,
            [
                now,
                recorded_by,
                _pg_ints([score_id for _, score_id, _, _ in logged]),
                _pg_ints([write.user_id for write, _, _, _ in logged]),
                _pg_ints([write.exercise_id for write, _, _, _ in logged]),
                _pg_bools([write.correct for write, _, _, _ in logged]),
                _pg_timestamps([write.attempted_at or now for write, _, _, _ in logged]),
                _pg_uuids([write.attempt_id for write, _, _, _ in logged]),
                _pg_bools([applied for _, _, applied, _ in logged]),
                _pg_bools([created for _, _, _, created in logged]),
            ],
        )
        return
    params: list[Any] = []
    for write, score_id, applied, created in logged:
        params += _log_params(write, score_id, now, recorded_by, applied, created)
    cursor.execute(_LOG + ", ".join([_LOG_ROW] * len(logged)), params)


def _replayed_items(writes: Sequence[Write]) -> set[int]:
    """Indexes of items whose attempt_id is logged with the same content.

    Raises:
        AttemptConflict: one is logged with other content.
    """
    ids = [write.attempt_id for write in writes if write.attempt_id is not None]
    if not ids:
        return set()
    recorded = attempts_by_ids(ids)
    replayed = set()
    for index, write in enumerate(writes):
        if write.attempt_id in recorded:
            differing = write.differences(recorded[write.attempt_id])
            if differing:
                raise AttemptConflict(differing, index=index)
            replayed.add(index)
    return replayed


def score_delete(*, score_id: int) -> bool:
    """Delete one score (its attempt log stays); True if it existed."""
    deleted, _ = Score.objects.filter(id=score_id).delete()
    return deleted > 0
