"""The outbox of score events (scores.models.ScoreEvent), and on PostgreSQL the sequence that
numbers them in commit order (scores.events.sequence_events)."""

from django.db import migrations, models


def create_sequence(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("CREATE SEQUENCE IF NOT EXISTS score_events_sequence")


def drop_sequence(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP SEQUENCE IF EXISTS score_events_sequence")


class Migration(migrations.Migration):
    dependencies = [
        ("scores", "0005_partial_credit"),
    ]

    operations = [
        migrations.CreateModel(
            name="ScoreEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("event_id", models.UUIDField(help_text="The CloudEvents id.", unique=True)),
                ("sequence", models.BigIntegerField(blank=True, null=True, unique=True)),
                (
                    "type",
                    models.CharField(
                        choices=[
                            ("score.created", "score.created"),
                            ("score.updated", "score.updated"),
                            ("score.deleted", "score.deleted"),
                        ],
                        max_length=16,
                    ),
                ),
                ("time", models.DateTimeField()),
                ("score_id", models.BigIntegerField()),
                ("user_id", models.IntegerField()),
                ("exercise_id", models.IntegerField()),
                ("correct", models.BooleanField(blank=True, null=True)),
                ("created_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(blank=True, null=True)),
                ("attempts", models.IntegerField(blank=True, null=True)),
                ("first_correct_at", models.DateTimeField(blank=True, null=True)),
                (
                    "points",
                    models.DecimalField(blank=True, decimal_places=2, max_digits=9, null=True),
                ),
                (
                    "max_points",
                    models.DecimalField(blank=True, decimal_places=2, max_digits=9, null=True),
                ),
            ],
            options={
                "db_table": "score_events",
                "indexes": [
                    models.Index(
                        condition=models.Q(("sequence__isnull", True)),
                        fields=["id"],
                        name="events_unsequenced",
                    ),
                    models.Index(fields=["time"], name="events_time_idx"),
                ],
            },
        ),
        migrations.RunPython(create_sequence, drop_sequence, elidable=False),
    ]
