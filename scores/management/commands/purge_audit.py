"""The audit log's retention: delete the entries older than N days, the one deletion the
database lets through (SECURITY.md). Run it on a schedule (cron, a Kubernetes CronJob)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scores import audit


class Command(BaseCommand):
    help = (
        "Delete the audit entries older than N days (at least 1), in batches, and record the "
        "purge itself in the audit log. Nothing else may delete or change an entry."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-days",
            type=int,
            required=True,
            metavar="N",
            help="delete the entries older than N days (N >= 1)",
        )

    def handle(self, *args: Any, older_than_days: int, **options: Any) -> None:
        if older_than_days < 1:
            raise CommandError(f"--older-than-days must be 1 or more, not {older_than_days}.")
        purged = audit.purge_audit(
            older_than=timedelta(days=older_than_days),
            actor=audit.command_actor("purge_audit"),
        )
        self.stdout.write(f"Deleted {purged} audit entries older than {older_than_days} days.")
