"""An attempt_id is unique per user, not across users (two users may choose the same UUID).

On PostgreSQL the new unique index is built with CREATE INDEX CONCURRENTLY, so writes to a log
of millions of attempts go on while it is built (hence a non-atomic migration); the old
constraint is then dropped, which takes its lock only for a moment.
"""

from django.db import migrations, models

INDEX = "attempts_user_attempt_id_uniq"
COLUMNS = "score_attempts (user_id, attempt_id) WHERE attempt_id IS NOT NULL"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {INDEX} ON {COLUMNS}")
        return
    schema_editor.execute("SET statement_timeout = 0")  # the build reads the whole log
    # A build interrupted by a failure leaves an invalid index, which IF NOT EXISTS would keep.
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    schema_editor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON {COLUMNS}")
    schema_editor.execute("RESET statement_timeout")


def drop_index(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("scores", "0003_attempt_history"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create_index, drop_index)],
            state_operations=[
                migrations.AddConstraint(
                    model_name="attempt",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("attempt_id__isnull", False)),
                        fields=("user_id", "attempt_id"),
                        name=INDEX,
                    ),
                ),
            ],
        ),
        migrations.AlterField(
            model_name="attempt",
            name="attempt_id",
            field=models.UUIDField(blank=True, null=True),
        ),
    ]
