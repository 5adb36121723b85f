"""Personal data and audit: the reason of each attempt, indexes for one user's whole data (export
and erasure), and the append-only audit log.

Safe on tables of millions of rows with writes going on (PostgreSQL): ``score_attempts.reason``
is nullable without a default, so adding it changes the catalog only (waiting at most 5 s for
its lock: ``scores.migration_operations``); the two indexes are built with CREATE INDEX
CONCURRENTLY, so writes go on while they are built (hence a non-atomic migration; a build
interrupted by a failure leaves an invalid index, dropped and built again when the migration is
run again). ``audit_entries`` is a new table; its guard refuses UPDATE and DELETE
(``scores.audit``).
"""

from django.db import migrations, models
from django.db.models.functions import Now
from django.utils import timezone

from scores.audit import install_guard, remove_guard
from scores.migration_operations import OnSQLiteOnly, on_postgresql

INDEXES = {
    "attempts_user_idx": "score_attempts (user_id, id)",
    "events_user_idx": "score_events (user_id)",
}


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("SET statement_timeout = 0")  # a build reads the whole table
    for name, columns in INDEXES.items():
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY {name} ON {columns}")
    schema_editor.execute("RESET statement_timeout")


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in INDEXES:
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def guard(apps, schema_editor):
    install_guard(schema_editor)


def unguard(apps, schema_editor):
    remove_guard(schema_editor)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scores", "0006_score_events"),
    ]

    operations = [
        on_postgresql(
            forwards=[
                "ALTER TABLE score_attempts ADD COLUMN IF NOT EXISTS reason varchar(500) NULL"
            ],
            backwards=["ALTER TABLE score_attempts DROP COLUMN IF EXISTS reason"],
        ),
        OnSQLiteOnly(
            migrations.AddField(
                model_name="attempt",
                name="reason",
                field=models.CharField(blank=True, max_length=500, null=True),
            )
        ),
        migrations.RunPython(create_indexes, drop_indexes, elidable=False),
        OnSQLiteOnly(
            migrations.AddIndex(
                model_name="attempt",
                index=models.Index(fields=["user_id", "id"], name="attempts_user_idx"),
            )
        ),
        OnSQLiteOnly(
            migrations.AddIndex(
                model_name="scoreevent",
                index=models.Index(fields=["user_id"], name="events_user_idx"),
            )
        ),
        migrations.CreateModel(
            name="AuditEntry",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("at", models.DateTimeField(db_default=Now(), default=timezone.now)),
                (
                    "actor",
                    models.CharField(
                        help_text="Who: user:<id>, staff:<username>, ...", max_length=200
                    ),
                ),
                (
                    "action",
                    models.CharField(
                        help_text="What, e.g. score.deleted, user.erased.", max_length=32
                    ),
                ),
                (
                    "target",
                    models.CharField(help_text="What it was done to, by ids.", max_length=200),
                ),
                ("reason", models.CharField(blank=True, default="", max_length=500)),
            ],
            options={
                "verbose_name_plural": "audit entries",
                "db_table": "audit_entries",
                "ordering": ["-id"],
                "indexes": [models.Index(fields=["at"], name="audit_at_idx")],
            },
        ),
        migrations.RunPython(guard, unguard, elidable=False),
    ]
