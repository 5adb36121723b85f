"""Fill an empty database with demo scores (users x exercises), through the write service; and
subscribe bin/run's demo webhook subscriber."""

from __future__ import annotations

import random
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scores.audit import command_actor
from scores.models import Score, WebhookSubscription
from scores.services import Write, score_write
from scores.webhooks import (
    WebhookInvalid,
    parse_subscription,
    subscription_create,
    subscription_delete,
)


class Command(BaseCommand):
    help = "Seed demo scores for USERS users x EXERCISES exercises; does nothing if scores exist."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=20, help="number of users (default 20)")
        parser.add_argument(
            "--exercises", type=int, default=10, help="number of exercises (default 10)"
        )
        parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
        parser.add_argument(
            "--webhook",
            metavar="URL",
            help="also subscribe URL to the score events (replacing a subscription to the same "
            "URL), signed with --webhook-secret: bin/run's demo subscriber",
        )
        parser.add_argument("--webhook-secret", metavar="SECRET", help="whsec_... for --webhook")

    def handle(
        self,
        *args: Any,
        users: int,
        exercises: int,
        seed: int,
        webhook: str | None,
        webhook_secret: str | None,
        **options: Any,
    ) -> None:
        if webhook:
            self.subscribe(webhook, webhook_secret)
        if Score.objects.exists():
            self.stdout.write("Scores exist already; demo data left as it is.")
            return
        rng = random.Random(seed)  # noqa: S311 (demo data, not security)
        written = 0
        for user_id in range(1, users + 1):
            skill = rng.random()
            for exercise_id in range(1, exercises + 1):
                if rng.random() < 0.8:  # not everyone attempted everything
                    score_write(
                        write=Write(
                            user_id=user_id,
                            exercise_id=exercise_id,
                            correct=rng.random() < skill,
                        ),
                        recorded_by="seed_demo",
                    )
                    written += 1
        self.stdout.write(self.style.SUCCESS(f"Seeded {written} demo scores."))

    def subscribe(self, url: str, secret: str | None) -> None:
        try:
            values = parse_subscription({"url": url, "secret": secret}, creating=True)
        except WebhookInvalid as exc:
            raise CommandError(f"--webhook / --webhook-secret: {exc.errors}") from exc
        for old in WebhookSubscription.objects.filter(url=url):
            subscription_delete(actor=command_actor("seed_demo"), subscription=old)
        subscription = subscription_create(actor=command_actor("seed_demo"), **values)
        self.stdout.write(f"Webhook subscription {subscription.id}: {url}")
