"""Delete score events older than their retention (EVENTS_RETENTION_DAYS), with their webhook
deliveries. Run it daily (cron, a Kubernetes CronJob)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scores.events import purge_events


class Command(BaseCommand):
    help = (
        "Delete the score events older than EVENTS_RETENTION_DAYS (or --days), and their "
        "webhook deliveries. GET /events and the delivery worker no longer see them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            metavar="N",
            help=f"keep N days instead of EVENTS_RETENTION_DAYS ({settings.EVENTS_RETENTION_DAYS})",
        )

    def handle(self, *args: Any, days: int | None, **options: Any) -> None:
        keep = settings.EVENTS_RETENTION_DAYS if days is None else days
        if keep < 0:
            raise CommandError(f"--days must be 0 or more, not {keep}.")
        purged = purge_events(older_than=timedelta(days=keep))
        self.stdout.write(f"Deleted {purged} events older than {keep} days.")
