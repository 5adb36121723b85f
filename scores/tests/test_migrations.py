"""The migrations build the ``scores`` table the model describes, and can be undone and redone.

The schema is read from PostgreSQL's own catalogs, so these tests run on PostgreSQL only (set
DATABASE_TEST_URL); the check for missing migrations runs on any database.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="reads PostgreSQL's catalogs; set DATABASE_TEST_URL to a PostgreSQL database",
)

COLUMNS = [
    # (name, data type, nullable, default, identity)
    ("id", "bigint", "NO", None, "YES"),
    ("user_id", "integer", "NO", None, "NO"),
    ("exercise_id", "integer", "NO", None, "NO"),
    ("correct", "boolean", "NO", None, "NO"),
    ("created_at", "timestamp with time zone", "NO", "statement_timestamp()", "NO"),
    ("updated_at", "timestamp with time zone", "NO", "statement_timestamp()", "NO"),
    # the attempt history (migration 0003, columns in the order it adds them)
    ("attempts", "integer", "NO", "1", "NO"),
    ("attempts_to_correct", "integer", "YES", None, "NO"),
    ("first_attempt_correct", "boolean", "NO", "false", "NO"),
    ("first_correct_at", "timestamp with time zone", "YES", None, "NO"),
    ("last_attempted_at", "timestamp with time zone", "NO", "statement_timestamp()", "NO"),
    # partial credit (migration 0005): nullable, no default (added without a rewrite)
    ("points", "numeric", "YES", None, "NO"),
    ("max_points", "numeric", "YES", None, "NO"),
]

CONSTRAINTS = {
    # name: (type: p primary key, u unique, c check; definition)
    "scores_pkey": ("p", "PRIMARY KEY (id)"),
    "scores_user_exercise_uniq": ("u", "UNIQUE (user_id, exercise_id)"),
    "scores_user_id_positive": ("c", "CHECK ((user_id > 0))"),
    "scores_exercise_id_positive": ("c", "CHECK ((exercise_id > 0))"),
    "scores_attempts_positive": ("c", "CHECK ((attempts > 0))"),
    "scores_points_valid": (
        "c",
        "CHECK ((((points IS NULL) AND (max_points IS NULL)) OR ((points >= (0)::numeric) AND "
        "(max_points > (0)::numeric) AND (max_points <= (1000000)::numeric) AND "
        "(points <= max_points))))",
    ),
}

INDEXES = {
    # name: (columns, unique)
    "scores_pkey": (["id"], True),
    "scores_user_exercise_uniq": (["user_id", "exercise_id"], True),
    "scores_exercise_id_id_idx": (["exercise_id", "id"], False),
    "scores_updated_at_idx": (["updated_at"], False),
}


def fetch(sql: str) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def columns() -> list[tuple[Any, ...]]:
    return fetch(
        "SELECT column_name, data_type, is_nullable, column_default, is_identity "
        "FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'scores' "
        "ORDER BY ordinal_position"
    )


def constraints() -> dict[str, tuple[str, str]]:
    rows = fetch(
        "SELECT conname, contype, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE conrelid = 'scores'::regclass"
    )
    return {name: (kind, definition) for name, kind, definition in rows}


def indexes() -> dict[str, tuple[list[str], bool]]:
    rows = fetch(
        "SELECT index.relname, array_agg(attribute.attname ORDER BY key.position), "
        "pg_index.indisunique "
        "FROM pg_index "
        "JOIN pg_class AS index ON index.oid = pg_index.indexrelid "
        "CROSS JOIN LATERAL unnest(pg_index.indkey) WITH ORDINALITY AS key(attnum, position) "
        "JOIN pg_attribute AS attribute "
        "ON attribute.attrelid = pg_index.indrelid AND attribute.attnum = key.attnum "
        "WHERE pg_index.indrelid = 'scores'::regclass "
        "GROUP BY index.relname, pg_index.indisunique"
    )
    return {name: (list(names), unique) for name, names, unique in rows}


def scores_table_exists() -> bool:
    return fetch("SELECT to_regclass('scores') IS NOT NULL")[0][0]


@postgresql_only
@pytest.mark.django_db
def test_the_scores_table_has_exactly_the_model_columns_all_not_null() -> None:
    assert columns() == COLUMNS


@postgresql_only
@pytest.mark.django_db
def test_the_scores_table_has_exactly_the_key_uniqueness_and_positive_id_constraints() -> None:
    assert constraints() == CONSTRAINTS


@postgresql_only
@pytest.mark.django_db
def test_the_scores_table_has_exactly_the_chosen_indexes() -> None:
    assert indexes() == INDEXES


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_migrating_scores_to_zero_and_forward_again_recreates_the_same_table() -> None:
    try:
        call_command("migrate", "scores", "zero", verbosity=0)
        dropped = scores_table_exists()
    finally:
        call_command("migrate", "scores", verbosity=0)  # never leave the suite without the table

    assert dropped is False
    assert (columns(), constraints(), indexes()) == (COLUMNS, CONSTRAINTS, INDEXES)


@pytest.mark.django_db
def test_the_models_have_no_change_that_a_migration_is_missing_for() -> None:
    output = io.StringIO()

    call_command("makemigrations", "--check", "--dry-run", stdout=output)  # SystemExit if any

    assert output.getvalue() == "No changes detected\n"
