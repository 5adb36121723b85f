"""The triggers that keep ``exercise_stats`` (per-exercise counters, 16 shards per exercise: see
``scores.models.ExerciseStats``) in the statement that changes ``scores``, defined once.

A counter is a SQL expression over one row of ``scores`` (``{t}``): what that score adds to
its exercise's counter. The triggers add a new row's values and subtract an old row's, so an
insert counts, a delete uncounts and an update moves the difference. PostgreSQL runs one
statement-level trigger per statement over its transition tables (one counter upsert per
(exercise, shard) a statement touches, whatever its number of rows; rows whose counted values
did not change touch nothing); SQLite, the zero-setup default, row-level triggers.

A migration that changes the counters passes its own list to ``install``, so that each
migration keeps installing what it installed when it was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TRIGGER_EVENTS = (
    ("exercise_stats_insert", "INSERT"),
    ("exercise_stats_update", "UPDATE"),
    ("exercise_stats_delete", "DELETE"),
)


@dataclass(frozen=True)
class Counter:
    """A column of ``exercise_stats`` and what one score row ``{t}`` adds to it."""

    name: str
    value: str


def _sums(counters: Sequence[Counter]) -> str:
    return ", ".join(f"sum({counter.name})" for counter in counters)


def _rows(counters: Sequence[Counter], table: str, sign: str) -> str:
    values = ", ".join(
        f"{sign}({counter.value.format(t=table)}) AS {counter.name}" for counter in counters
    )
    return f"SELECT {table}.exercise_id, {table}.user_id % 16 AS shard, {values} FROM {table}"


def _upsert(counters: Sequence[Counter], rows: str) -> str:
    names = ", ".join(counter.name for counter in counters)
    changed = " OR ".join(f"sum({counter.name}) <> 0" for counter in counters)
    assignments = ", ".join(
        f"{counter.name} = s.{counter.name} + excluded.{counter.name}" for counter in counters
    )
    return (
        f"INSERT INTO exercise_stats AS s (exercise_id, shard, {names}) "
        f"SELECT exercise_id, shard, {_sums(counters)} FROM ({rows}) AS delta "
        f"GROUP BY 1, 2 HAVING {changed} ORDER BY 1, 2 "
        f"ON CONFLICT (exercise_id, shard) DO UPDATE SET {assignments};"
    )


def postgresql_functions(counters: Sequence[Counter]) -> str:
    """The three trigger functions (CREATE OR REPLACE) over transition tables."""
    bodies = {
        "exercise_stats_add": _upsert(counters, _rows(counters, "new_rows", "")),
        "exercise_stats_change": _upsert(
            counters,
            _rows(counters, "new_rows", "") + " UNION ALL " + _rows(counters, "old_rows", "-"),
        ),
        "exercise_stats_remove": _upsert(counters, _rows(counters, "old_rows", "-")),
    }
    return "\n".join(
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n    {body}\n    RETURN NULL;\nEND $$;"
        for name, body in bodies.items()
    )


def sqlite_triggers(counters: Sequence[Counter]) -> list[str]:
    """The three row-level triggers (an update one only when a counted value changed)."""
    names = ", ".join(counter.name for counter in counters)
    assignments = ", ".join(
        f"{counter.name} = {counter.name} + excluded.{counter.name}" for counter in counters
    )

    def bump(row: str, sign: str) -> str:
        values = ", ".join(f"{sign}({counter.value.format(t=row)})" for counter in counters)
        return (
            f"INSERT INTO exercise_stats (exercise_id, shard, {names}) "
            f"VALUES ({row}.exercise_id, {row}.user_id % 16, {values}) "
            f"ON CONFLICT (exercise_id, shard) DO UPDATE SET {assignments};"
        )

    counted_new = ", ".join(counter.value.format(t="NEW") for counter in counters)
    counted_old = ", ".join(counter.value.format(t="OLD") for counter in counters)
    return [
        f"CREATE TRIGGER exercise_stats_insert AFTER INSERT ON scores BEGIN {bump('NEW', '')} END",
        "CREATE TRIGGER exercise_stats_update AFTER UPDATE ON scores WHEN "
        f"(NEW.user_id, NEW.exercise_id, {counted_new}) IS NOT "
        f"(OLD.user_id, OLD.exercise_id, {counted_old}) "
        f"BEGIN {bump('OLD', '-')} {bump('NEW', '')} END",
        f"CREATE TRIGGER exercise_stats_delete AFTER DELETE ON scores BEGIN {bump('OLD', '-')} END",
    ]


def drop_sqlite_triggers(schema_editor: Any) -> None:
    """SQLite drops a table's triggers when it rebuilds the table (to add a column): drop them
    first, ``install`` them again after."""
    if schema_editor.connection.vendor == "sqlite":
        for name, _ in TRIGGER_EVENTS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


def install(schema_editor: Any, counters: Sequence[Counter]) -> None:
    """(Re)define the triggers for ``counters``. On PostgreSQL the functions are replaced in
    place (the triggers of migration 0002 call them by name). (Executed without parameters:
    the SQL's own ``%`` is not a placeholder.)"""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(postgresql_functions(counters), params=None)
        return
    drop_sqlite_triggers(schema_editor)
    for statement in sqlite_triggers(counters):
        schema_editor.execute(statement, params=None)


def recount(schema_editor: Any, counters: Sequence[Counter]) -> None:
    """Recompute every counter from ``scores`` (a scan: for migrations of counters that
    existing rows change)."""
    names = ", ".join(counter.name for counter in counters)
    values = ", ".join(f"sum({counter.value.format(t='scores')})" for counter in counters)
    schema_editor.execute("DELETE FROM exercise_stats")
    schema_editor.execute(
        f"INSERT INTO exercise_stats (exercise_id, shard, {names}) "
        f"SELECT exercise_id, user_id % 16, {values} FROM scores GROUP BY 1, 2",
        params=None,  # the SQL's own % is not a placeholder
    )
