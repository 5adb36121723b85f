"""Partial credit: points and max_points on scores and attempts, their checks, and the counters
of the average points ratio (exercise_stats.scored, exercise_stats.points_ratio_sum).

Safe on tables of millions of rows with writes going on (PostgreSQL; measured in
docs/scaling.md): the columns are nullable without a default, so adding one changes the catalog
only; each check is added NOT VALID (new rows are checked from then on) and validated
afterwards, a scan under a lock that lets reads and writes through; every statement runs on
its own and waits at most 5 s for its lock (``scores.migration_operations``), and each is
idempotent, so the migration can simply be run again. Existing scores have no points: their
new counters start at 0.
"""

from django.db import migrations, models

from scores.migration_operations import OnSQLiteOnly, on_postgresql
from scores.triggers import Counter, drop_sqlite_triggers, install

COUNTERS = (
    Counter("attempted", "1"),
    Counter("correct", "CAST({t}.correct AS INTEGER)"),
    Counter("first_try_correct", "CAST({t}.first_attempt_correct AS INTEGER)"),
    Counter("solved", "CAST({t}.attempts_to_correct IS NOT NULL AS INTEGER)"),
    Counter("attempts_to_correct", "coalesce({t}.attempts_to_correct, 0)"),
    Counter("scored", "CAST({t}.points IS NOT NULL AS INTEGER)"),
    # * 1.0: SQLite stores whole points as integers, and would divide them as integers
    Counter("points_ratio_sum", "coalesce({t}.points * 1.0 / {t}.max_points, 0)"),
)

POINTS_CHECK = (
    "(points IS NULL AND max_points IS NULL) OR (points >= 0 AND max_points > 0 "
    "AND max_points <= 1000000 AND points <= max_points)"
)


def points_valid() -> models.Q:
    return models.Q(points__isnull=True, max_points__isnull=True) | models.Q(
        points__gte=0,
        max_points__gt=0,
        max_points__lte=1_000_000,
        points__lte=models.F("max_points"),
    )


def points_field() -> models.DecimalField:
    return models.DecimalField(blank=True, decimal_places=2, max_digits=9, null=True)


def add_points(table: str, check: str) -> list[str]:
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS points numeric(9, 2) NULL, "
        "ADD COLUMN IF NOT EXISTS max_points numeric(9, 2) NULL",
        f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}",
        f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({POINTS_CHECK}) NOT VALID",
        f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}",
    ]


def drop_points(table: str, check: str) -> list[str]:
    return [
        f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}",
        f"ALTER TABLE {table} DROP COLUMN IF EXISTS points, DROP COLUMN IF EXISTS max_points",
    ]


def sqlite_drop_triggers(apps, schema_editor):
    drop_sqlite_triggers(schema_editor)  # SQLite rebuilds the table to add a column


def install_triggers(apps, schema_editor):
    install(schema_editor, COUNTERS)


def install_previous_triggers(apps, schema_editor):
    install(schema_editor, COUNTERS[:5])


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scores", "0004_attempt_id_per_user"),
    ]

    operations = [
        migrations.RunPython(sqlite_drop_triggers, install_previous_triggers, elidable=False),
        on_postgresql(
            forwards=[
                *add_points("scores", "scores_points_valid"),
                *add_points("score_attempts", "attempts_points_valid"),
                "ALTER TABLE exercise_stats "
                "ADD COLUMN IF NOT EXISTS scored bigint NOT NULL DEFAULT 0, "
                "ADD COLUMN IF NOT EXISTS points_ratio_sum numeric(38, 20) NOT NULL DEFAULT 0",
            ],
            backwards=[
                "ALTER TABLE exercise_stats DROP COLUMN IF EXISTS scored, "
                "DROP COLUMN IF EXISTS points_ratio_sum",
                *drop_points("score_attempts", "attempts_points_valid"),
                *drop_points("scores", "scores_points_valid"),
            ],
        ),
        OnSQLiteOnly(migrations.AddField("score", "points", points_field())),
        OnSQLiteOnly(migrations.AddField("score", "max_points", points_field())),
        OnSQLiteOnly(
            migrations.AddConstraint(
                "score",
                models.CheckConstraint(condition=points_valid(), name="scores_points_valid"),
            )
        ),
        OnSQLiteOnly(migrations.AddField("attempt", "points", points_field())),
        OnSQLiteOnly(migrations.AddField("attempt", "max_points", points_field())),
        OnSQLiteOnly(
            migrations.AddConstraint(
                "attempt",
                models.CheckConstraint(condition=points_valid(), name="attempts_points_valid"),
            )
        ),
        OnSQLiteOnly(
            migrations.AddField("exercisestats", "scored", models.BigIntegerField(default=0))
        ),
        OnSQLiteOnly(
            migrations.AddField(
                "exercisestats",
                "points_ratio_sum",
                models.DecimalField(decimal_places=20, default=0, max_digits=38),
            )
        ),
        migrations.RunPython(install_triggers, sqlite_drop_triggers, elidable=False),
    ]
