"""Webhook subscriptions and their deliveries (scores.webhooks, scores.delivery): new tables,
so nothing here locks or rewrites a table the service writes to."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scores", "0007_privacy_and_audit"),
    ]

    operations = [
        migrations.CreateModel(
            name="WebhookSubscription",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "url",
                    models.CharField(
                        help_text="http or https; checked when saved.", max_length=2000
                    ),
                ),
                (
                    "event_types",
                    models.JSONField(
                        blank=True,
                        default=list,
                        help_text="Event types to deliver; empty: all of them.",
                    ),
                ),
                ("active", models.BooleanField(default=True)),
                (
                    "secret",
                    models.CharField(
                        help_text="whsec_ and the base64 signing key.", max_length=100
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(default=django.utils.timezone.now, editable=False),
                ),
                (
                    "cursor",
                    models.BigIntegerField(
                        default=0, help_text="Sequence of the last event turned into deliveries."
                    ),
                ),
                (
                    "retry_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="It did not answer: nothing is sent to it before this (its failed delivery's next attempt).",
                        null=True,
                    ),
                ),
            ],
            options={
                "db_table": "webhook_subscriptions",
                "ordering": ["id"],
            },
        ),
        migrations.CreateModel(
            name="WebhookDelivery",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("sequence", models.BigIntegerField()),
                ("user_id", models.IntegerField()),
                ("exercise_id", models.IntegerField()),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("delivered", "Delivered"),
                            ("failed", "Failed"),
                        ],
                        default="pending",
                        max_length=9,
                    ),
                ),
                ("attempts", models.IntegerField(default=0, help_text="Attempts made so far.")),
                (
                    "next_attempt_at",
                    models.DateTimeField(help_text="When a pending delivery is due."),
                ),
                (
                    "last_status",
                    models.IntegerField(
                        blank=True,
                        help_text="HTTP status of the last attempt, if it got one.",
                        null=True,
                    ),
                ),
                (
                    "last_error",
                    models.TextField(blank=True, help_text="Why the last attempt failed."),
                ),
                ("delivered_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "event",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="deliveries",
                        to="scores.scoreevent",
                    ),
                ),
                (
                    "subscription",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="scores.webhooksubscription",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "webhook deliveries",
                "db_table": "webhook_deliveries",
                "indexes": [
                    models.Index(
                        condition=models.Q(("status", "pending")),
                        fields=["subscription", "next_attempt_at", "sequence"],
                        name="webhook_deliveries_due",
                    ),
                    models.Index(
                        condition=models.Q(("status", "pending")),
                        fields=["subscription", "user_id", "exercise_id", "sequence"],
                        name="webhook_deliveries_order",
                    ),
                    models.Index(
                        condition=models.Q(("status", "pending")),
                        fields=["sequence"],
                        name="webhook_deliveries_backlog",
                    ),
                    models.Index(fields=["status", "id"], name="webhook_deliveries_status"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("subscription", "event"), name="webhook_deliveries_once"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("status__in", ["pending", "delivered", "failed"])),
                        name="webhook_deliveries_status_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("attempts__gte", 0)),
                        name="webhook_deliveries_attempts_valid",
                    ),
                ],
            },
        ),
    ]
