"""Migration operations for tables of millions of rows that are written to all the time.

On PostgreSQL a migration step must not rewrite such a table nor hold a lock that queues the
service's queries: ``on_postgresql`` runs raw SQL written for that (nullable columns without a
default, checks added ``NOT VALID`` and validated apart), each statement on its own with a
bounded lock wait, while ``OnSQLiteOnly`` gives SQLite (the zero-setup default, small tables)
Django's ordinary operations and keeps the migration state the same for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import migrations
from django.db.migrations.operations.base import Operation

LOCK_WAIT = "5s"  # a DDL statement that cannot get its lock by then fails instead of queueing


class OnSQLiteOnly(Operation):
    """``operation`` as it is on SQLite; on PostgreSQL only its effect on the migration state
    (the database change is made by a ``RunPython`` of ``on_postgresql``)."""

    reversible = True

    def __init__(self, operation: Operation) -> None:
        self.operation = operation

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (f"{__name__}.{type(self).__name__}", [self.operation], {})

    def state_forwards(self, app_label: str, state: Any) -> None:
        self.operation.state_forwards(app_label, state)

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            self.operation.database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            self.operation.database_backwards(app_label, schema_editor, from_state, to_state)

    def describe(self) -> str:
        return f"{self.operation.describe()} (SQLite; PostgreSQL by raw SQL)"


def on_postgresql(forwards: Sequence[str], backwards: Sequence[str] = ()) -> migrations.RunPython:
    """A step running ``forwards`` (and, reversed, ``backwards``) on PostgreSQL only, statement
    by statement outside a transaction (the migration must be ``atomic = False``), each waiting
    at most ``LOCK_WAIT`` for its lock and without the service's statement timeout (a
    validation scans the whole table)."""

    def run(statements: Sequence[str]) -> Any:
        def step(apps: Any, schema_editor: Any) -> None:
            if schema_editor.connection.vendor != "postgresql":
                return
            schema_editor.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
            schema_editor.execute("SET statement_timeout = 0")
            try:
                for statement in statements:
                    schema_editor.execute(statement)
            finally:
                schema_editor.execute("RESET lock_timeout")
                schema_editor.execute("RESET statement_timeout")

        return step

    return migrations.RunPython(run(forwards), run(backwards), elidable=False)
