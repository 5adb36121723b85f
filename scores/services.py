"""The write path. Every endpoint (and later the admin and the import command) that changes a
score calls these functions; each change is one atomic statement, race-free under concurrency.

The upsert is ``INSERT … ON CONFLICT (user_id, exercise_id) DO UPDATE``: any number of
concurrent upserts of one (user, exercise) leave exactly one row and raise no error.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.utils import timezone

from scores.models import Score
from scores.selectors import ScoreRow, score_row


class WriteMode(enum.Enum):
    UPSERT = "upsert"  # create or update
    CREATE = "create"  # create only: an existing score is a ScoreExists
    UPDATE = "update"  # update only: a missing score is a ScoreNotFound


class ScoreExists(Exception):
    """A create found the (user, exercise) score already stored."""


class ScoreNotFound(Exception):
    """An update found no score to change."""


@dataclass(frozen=True)
class ScoreWrite:
    """The stored score after a write, and whether the write created it."""

    score: ScoreRow
    created: bool


_COLUMNS = "id, user_id, exercise_id, correct, created_at, updated_at"
_UPDATE = (
    "UPDATE scores SET correct = %s, updated_at = %s WHERE user_id = %s AND exercise_id = %s "
    "RETURNING id, user_id, exercise_id, correct, created_at, updated_at, false"
)
_ON_CONFLICT = {
    WriteMode.CREATE: "DO NOTHING",
    WriteMode.UPSERT: "DO UPDATE SET correct = excluded.correct, updated_at = excluded.updated_at",
}


def _created_flag() -> str:
    """SQL telling whether a returned row was inserted by this statement.

    PostgreSQL: a freshly inserted row version has no deleting transaction (``xmax = 0``).
    SQLite (the zero-setup default) has no xmax; there a row was inserted iff both timestamps
    are this write's.
    """
    return "(xmax = 0)" if connection.vendor == "postgresql" else "(created_at = updated_at)"


def _insert(rows: int, mode: WriteMode, returning: str) -> str:
    """``INSERT … ON CONFLICT`` of ``rows`` scores; table and column names are constants and
    every value is a bound parameter (five per row)."""
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * rows)
    return (
        "INSERT INTO scores (user_id, exercise_id, correct, created_at, updated_at) "  # noqa: S608
        f"VALUES {values} ON CONFLICT (user_id, exercise_id) {_ON_CONFLICT[mode]} "
        f"RETURNING {returning}, {_created_flag()}"
    )


def score_write(
    *, user_id: int, exercise_id: int, correct: bool, mode: WriteMode = WriteMode.UPSERT
) -> ScoreWrite:
    """Create and/or update the score of ``user_id`` for ``exercise_id`` in one statement.

    ``created_at`` is set only when the row is inserted; ``updated_at`` on every write.

    Raises:
        ScoreExists: ``mode`` is CREATE and the score already exists.
        ScoreNotFound: ``mode`` is UPDATE and there is no such score.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        if mode is WriteMode.UPDATE:
            cursor.execute(_UPDATE, [correct, now, user_id, exercise_id])
        else:
            cursor.execute(_insert(1, mode, _COLUMNS), [user_id, exercise_id, correct, now, now])
        result = cursor.fetchone()
    if result is None:
        raise ScoreExists() if mode is WriteMode.CREATE else ScoreNotFound()
    return ScoreWrite(score=score_row(result[:-1]), created=bool(result[-1]))


@dataclass(frozen=True)
class BulkWrite:
    created: int
    updated: int


def scores_upsert_many(*, items: Sequence[tuple[int, int, bool]]) -> BulkWrite:
    """Upsert many (user_id, exercise_id, correct) in one statement: all or nothing.

    Items must name each (user, exercise) once (``parse_bulk`` checks it). They are written in
    key order, so concurrent batches lock rows in the same order and cannot deadlock.
    """
    if not items:
        return BulkWrite(created=0, updated=0)
    now = timezone.now()
    params: list[Any] = []
    for user_id, exercise_id, correct in sorted(items):
        params += (user_id, exercise_id, correct, now, now)
    with connection.cursor() as cursor:
        cursor.execute(_insert(len(items), WriteMode.UPSERT, "id"), params)
        created = sum(1 for _, inserted in cursor.fetchall() if inserted)
    return BulkWrite(created=created, updated=len(items) - created)


def score_delete(*, score_id: int) -> bool:
    """Delete one score; True if it existed."""
    deleted, _ = Score.objects.filter(id=score_id).delete()
    return deleted > 0
