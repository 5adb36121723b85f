"""The SQL of the write path, generated from one description of what an attempt writes.

An attempt reaches the database as one row of a JSON array (``attempts_json``), read as the
relation ``a`` (PostgreSQL: ``jsonb_to_recordset``; SQLite: ``json_each``). Its columns are the
fields of ``scores.writes.WRITE_FIELDS``, typed by the ``Attempt`` model. From it:

- ``SCORE_COLUMNS`` says what each column of ``scores`` becomes: its value in a new score
  (``insert``, over ``a``) and after an applied attempt (``apply``, over the stored row
  ``scores`` and ``{new.<column>}``, the value this attempt would insert). A write field that is
  also a column of ``scores`` is carried over as it is, without being described here.
- ``POLICIES`` says when an attempt applies to an existing score (``SCORE_POLICY``).
- Every attempt is logged in ``score_attempts`` with the write fields, who recorded it, when,
  and whether it applied.

So adding a field to score writes is one ``WriteField`` (plus its model fields and migration):
validation, the statements below, the attempt log and the schema follow from it.

The statements take named parameters: ``attempts`` (the JSON array), ``now`` and
``recorded_by``. On PostgreSQL an applied write is one statement (the score and its log rows in
one CTE, atomic on its own); attempts that did not apply are logged by a second one.
"""

from __future__ import annotations

import enum
import functools
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.db import connection, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

from scores.models import Attempt, Score, ScoreEvent
from scores.writes import WRITE_FIELDS, Write

# The score as the API shows it, in this order (selectors read the same columns).
SCORE_FIELDS = (
    "id",
    "user_id",
    "exercise_id",
    "correct",
    "created_at",
    "updated_at",
    "attempts",
    "first_correct_at",
    "points",
    "max_points",
)
IDENTITY = ("user_id", "exercise_id")  # the ON CONFLICT target: never changed by a write
# An event carries the score as the API shows it, its id as score_id (scores.models.ScoreEvent).
EVENT_FIELDS = {name: "score_id" if name == "id" else name for name in SCORE_FIELDS}


@dataclass(frozen=True)
class ScoreColumn:
    """A column of ``scores`` that a write sets beyond the write fields themselves."""

    name: str
    insert: str  # in a new score, over the attempt ``a`` and the parameter ``now``
    apply: str | None  # after an applied attempt; None: kept as it is


SCORE_COLUMNS = (
    ScoreColumn("created_at", "%(now)s", None),
    ScoreColumn("updated_at", "%(now)s", "{new.updated_at}"),
    ScoreColumn("attempts", "1", "scores.attempts + 1"),
    ScoreColumn("last_attempted_at", "a.attempted_at", "{new.last_attempted_at}"),
    ScoreColumn(
        "first_correct_at",
        "CASE WHEN a.correct THEN a.attempted_at END",
        "coalesce(scores.first_correct_at, {new.first_correct_at})",
    ),
    ScoreColumn("first_attempt_correct", "a.correct", None),
    ScoreColumn(
        "attempts_to_correct",
        "CASE WHEN a.correct THEN 1 END",
        "coalesce(scores.attempts_to_correct, "
        "CASE WHEN {new.correct} THEN scores.attempts + 1 END)",
    ),
)

# How much better the attempt is than the score's kept attempt: its sign. By the ratio
# points / max_points when both have points (compared exactly, in hundredths), else by correct.
_HUNDREDTHS = "CAST(round({x} * 100) AS BIGINT)"
_BETTER = (
    "CASE WHEN {new.points} IS NOT NULL AND scores.points IS NOT NULL THEN sign("
    + _HUNDREDTHS.format(x="{new.points}")
    + " * "
    + _HUNDREDTHS.format(x="scores.max_points")
    + " - "
    + _HUNDREDTHS.format(x="scores.points")
    + " * "
    + _HUNDREDTHS.format(x="{new.max_points}")
    + ") ELSE CAST({new.correct} AS INTEGER) - CAST(scores.correct AS INTEGER) END"
)

# When an attempt applies to an existing score (SCORE_POLICY), over ``scores`` and
# ``{new.<column>}``; the attempt's attempted_at is ``{new.last_attempted_at}``.
POLICIES = {
    # The newest attempt by attempted_at is the score; an equal time is not older: it applies.
    "latest": "scores.last_attempted_at <= {new.last_attempted_at}",
    # The best attempt is the score: a better one applies whatever its time, an equally good
    # one if it is not older.
    "best": f"({_BETTER}, {{new.last_attempted_at}}) >= (0, scores.last_attempted_at)",
}
ALWAYS = "true"  # a privileged correction applies under every policy


class WriteMode(enum.Enum):
    UPSERT = "upsert"  # create or update
    CREATE = "create"  # create only: an existing score is left alone (nothing returned)
    UPDATE = "update"  # update only: a missing score is left alone (nothing returned)


def _attempt_field(name: str) -> models.Field[Any, Any]:
    return cast("models.Field[Any, Any]", Attempt._meta.get_field(name))


def _carried() -> list[str]:
    """Write fields stored on the score as they are (``correct``, the ids, ...)."""
    columns = {field.name for field in Score._meta.concrete_fields}
    return [name for name in WRITE_FIELDS if name in columns]


def _columns() -> list[tuple[str, str, str | None]]:
    """Every column a write sets: ``(name, insert, apply)``."""
    carried = [
        (name, f"a.{name}", None if name in IDENTITY else f"{{new.{name}}}") for name in _carried()
    ]
    return carried + [(column.name, column.insert, column.apply) for column in SCORE_COLUMNS]


def _new(expression: str, new: dict[str, str]) -> str:
    """``expression`` with each ``{new.<column>}`` replaced by ``new[column]``."""
    for name, value in new.items():
        expression = expression.replace(f"{{new.{name}}}", value)
    return expression


OUTCOME = (("applied", "boolean"), ("created", "boolean"))  # of the log statement's rows


def _input(vendor: str, extra: tuple[tuple[str, str], ...] = ()) -> str:
    """The relation ``a``: one row per attempt of the ``attempts`` parameter, numbered by
    ``item`` (its place in the request), with the ``extra`` columns."""
    if vendor == "postgresql":
        types = ", ".join(
            f"{name} {_attempt_field(name).db_type(connection)}" for name in WRITE_FIELDS
        )
        more = "".join(f", {name} {sql_type}" for name, sql_type in extra)
        return f"jsonb_to_recordset(%(attempts)s::jsonb) AS a({types}, item integer{more})"
    names = (*WRITE_FIELDS, "item", *(name for name, _ in extra))
    values = ", ".join(f"json_extract(value, '$.{name}') AS {name}" for name in names)
    return f"(SELECT {values} FROM json_each(%(attempts)s)) AS a"


def _returning(vendor: str, mode: WriteMode) -> str:
    fields = ", ".join(f"scores.{name}" for name in SCORE_FIELDS)
    if mode is WriteMode.UPDATE:
        created = "false"
    elif vendor == "postgresql":
        created = "(scores.xmax = 0)"  # a row version this statement inserted
    else:  # SQLite has no xmax: a row is new iff both timestamps are this write's
        created = "(scores.created_at = scores.updated_at)"
    return f"{fields}, {created} AS created"


@functools.cache
def score_statement(vendor: str, mode: WriteMode, policy: str, *, log: bool) -> str:
    """The statement applying every attempt of ``a`` to its score, returning each score it
    changed (``SCORE_FIELDS`` and ``created``); an attempt that does not apply returns nothing.
    With ``log`` (PostgreSQL only) the same statement logs the attempts it applied."""
    columns = _columns()
    condition = ALWAYS if policy == ALWAYS else POLICIES[policy]
    if mode is WriteMode.UPDATE:
        new = {name: insert for name, insert, _ in columns}
        assignments = ", ".join(
            f"{name} = {_new(apply, new)}" for name, _, apply in columns if apply is not None
        )
        statement = (
            f"UPDATE scores SET {assignments} FROM {_input(vendor)} "
            "WHERE scores.user_id = a.user_id AND scores.exercise_id = a.exercise_id "
            f"AND {_new(condition, new)} RETURNING {_returning(vendor, mode)}"
        )
    else:
        new = {name: f"excluded.{name}" for name, _, _ in columns}
        if mode is WriteMode.CREATE:
            on_conflict = "DO NOTHING"
        else:
            assignments = ", ".join(
                f"{name} = {_new(apply, new)}" for name, _, apply in columns if apply is not None
            )
            on_conflict = f"DO UPDATE SET {assignments} WHERE {_new(condition, new)}"
        statement = (
            f"INSERT INTO scores AS scores ({', '.join(name for name, _, _ in columns)}) "
            f"SELECT {', '.join(insert for _, insert, _ in columns)} FROM {_input(vendor)} "
            # key order: concurrent batches lock rows in the same order and cannot deadlock
            # (SQLite needs the WHERE to read ON CONFLICT as the upsert's)
            "WHERE true ORDER BY a.user_id, a.exercise_id "
            f"ON CONFLICT (user_id, exercise_id) {on_conflict} "
            f"RETURNING {_returning(vendor, mode)}"
        )
    if vendor != "postgresql":
        return statement  # SQLite: the log rows and events in statements of their own
    logged = ""
    if log:
        log_applied = _log("applied.id", "true", "applied.created")
        logged = (
            f", logged AS ({log_applied} "
            f"FROM {_input(vendor)} JOIN applied USING (user_id, exercise_id))"
        )
    change = "CASE WHEN applied.created THEN 'score.created' ELSE 'score.updated' END"
    return (
        f"WITH applied AS ({statement}){logged}, evented AS ({event_insert('applied', change)}) "
        f"SELECT {', '.join(SCORE_FIELDS)}, created FROM applied"
    )


def event_insert(source: str, type_sql: str, fields: tuple[str, ...] = SCORE_FIELDS) -> str:
    """PostgreSQL: append to the outbox one event per row of ``source`` (a CTE returning the
    score's ``fields``), of type ``type_sql``, at the parameter ``now``."""
    columns = ", ".join(EVENT_FIELDS[name] for name in fields)
    values = ", ".join(f"{source}.{name}" for name in fields)
    return (
        f"INSERT INTO score_events (event_id, type, time, {columns}) "
        f"SELECT gen_random_uuid(), {type_sql}, %(now)s, {values} FROM {source}"
    )


@functools.cache
def sqlite_events_statement() -> str:
    """SQLite: append the events of the ``events`` parameter (a JSON array of objects with
    ``event_id``, ``type`` and the score's fields) at ``now``."""
    names = ("event_id", "type", *EVENT_FIELDS.values())
    return (
        f"INSERT INTO score_events ({', '.join(names)}, time) SELECT "
        + ", ".join(f"json_extract(value, '$.{name}')" for name in names)
        + ", %(now)s FROM json_each(%(events)s)"
    )


def events_json(changes: Iterable[tuple[dict[str, Any], str]], db: BaseDatabaseWrapper) -> str:
    """The ``events`` parameter of ``sqlite_events_statement``: each (score's fields, type)."""
    rows = []
    for score, event_type in changes:
        row: dict[str, Any] = {"event_id": uuid.uuid4().hex, "type": event_type}
        for name, value in score.items():
            column = EVENT_FIELDS[name]
            row[column] = _event_field(column).get_db_prep_value(value, db)
        rows.append(row)
    return json.dumps(rows, default=_json_default, separators=(",", ":"))


def _event_field(name: str) -> models.Field[Any, Any]:
    return cast("models.Field[Any, Any]", ScoreEvent._meta.get_field(name))


DELETED_FIELDS = ("id", "user_id", "exercise_id")


@functools.cache
def delete_statement(vendor: str, where: str) -> str:
    """Delete the scores matching ``where`` (over ``scores``, with its own named parameters),
    returning ``DELETED_FIELDS``; on PostgreSQL the same statement appends their
    ``score.deleted`` events."""
    fields = ", ".join(DELETED_FIELDS)
    statement = f"DELETE FROM scores WHERE {where} RETURNING {fields}"
    if vendor != "postgresql":
        return statement
    evented = event_insert("deleted", "'score.deleted'", DELETED_FIELDS)
    return f"WITH deleted AS ({statement}), evented AS ({evented}) SELECT {fields} FROM deleted"


def _log(score_id: str, applied: str, created: str) -> str:
    names = ", ".join(WRITE_FIELDS)
    values = ", ".join(f"a.{name}" for name in WRITE_FIELDS)
    return (
        f"INSERT INTO score_attempts (score_id, {names}, recorded_at, recorded_by, applied, "
        f"created_score) SELECT {score_id}, {values}, %(now)s, %(recorded_by)s, {applied}, "
        f"{created}"
    )


@functools.cache
def current_statement(vendor: str, *, log: bool) -> str:
    """The scores of the attempts of ``a`` as they are (``SCORE_FIELDS`` and ``item``); with
    ``log`` (PostgreSQL only) the same statement logs those attempts as not applied.

    On PostgreSQL the scores are locked (``FOR KEY SHARE``) until the log rows commit, so a
    concurrent deletion or erasure of the score either waits for them (and erases them too)
    or has committed first (and the score is not found)."""
    fields = ", ".join(f"scores.{name}" for name in SCORE_FIELDS)
    current = (
        f"SELECT {fields}, a.item FROM {_input(vendor)} JOIN scores "
        "ON scores.user_id = a.user_id AND scores.exercise_id = a.exercise_id"
    )
    if vendor == "postgresql":
        current += " FOR KEY SHARE OF scores"
    if not log:
        return current
    return (
        f"WITH current AS ({current}), logged AS ({_log('current.id', 'false', 'false')} "
        f"FROM {_input(vendor)} JOIN current USING (item)) "
        f"SELECT {', '.join(SCORE_FIELDS)}, item FROM current"
    )


@functools.cache
def log_statement(vendor: str) -> str:
    """Log every attempt of ``a`` against its score, in the order of ``item``; ``a`` also
    carries ``applied`` and ``created``. (An attempt whose score was deleted meanwhile has
    nothing to be logged against.)"""
    return (
        f"{_log('scores.id', 'a.applied', 'a.created')} FROM {_input(vendor, OUTCOME)} "
        "JOIN scores ON scores.user_id = a.user_id AND scores.exercise_id = a.exercise_id "
        "ORDER BY a.item"
    )


def attempts_json(
    writes: Iterable[tuple[int, Write]],
    now: datetime,
    extra: Sequence[dict[str, Any]] | None = None,
    db: BaseDatabaseWrapper = connection,
) -> str:
    """The ``attempts`` parameter: each ``(item, write)`` as one JSON object of the write
    fields, ``attempted_at`` defaulting to ``now``, values in the database's own forms (SQLite:
    Django's text forms), plus ``extra[i]`` for the i-th."""
    db = connections[db.alias]  # the wrapper itself: the default proxy looks it up per access
    prepare = [(name, _attempt_field(name).get_db_prep_value) for name in WRITE_FIELDS]
    rows = []
    for position, (item, write) in enumerate(writes):
        row: dict[str, Any] = {"item": item}
        for name, prep in prepare:
            value = getattr(write, name)
            if name == "attempted_at" and value is None:
                value = now
            row[name] = prep(value, db)
        if extra is not None:
            row.update(extra[position])
        rows.append(row)
    return json.dumps(rows, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # UUID, Decimal
