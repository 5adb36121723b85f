"""The webhook delivery worker: run one (or several, anywhere) next to the API."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scores.delivery import BATCH, Worker, serve_metrics

logger = logging.getLogger("scores.delivery")


class Command(BaseCommand):
    help = (
        "Deliver score events to the webhook subscriptions: number new events, turn them into "
        "deliveries, POST each one signed, retry with backoff. Several workers may run at "
        "once. SIGTERM or SIGINT: finish the delivery in progress, then exit 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="deliver what is due now, then exit (for cron and tests)",
        )
        parser.add_argument(
            "--batch",
            type=int,
            default=BATCH,
            metavar="N",
            help=f"deliveries claimed at once, 1 to 1000 (default {BATCH})",
        )
        parser.add_argument(
            "--poll",
            type=float,
            default=None,
            metavar="SECONDS",
            help="look for new events this often when no notification comes "
            f"(default WEBHOOK_POLL_SECONDS, {settings.WEBHOOK_POLL_SECONDS:g})",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.WEBHOOK_METRICS_PORT,
            metavar="PORT",
            help="serve this worker's Prometheus metrics on PORT "
            "(default WEBHOOK_METRICS_PORT; 0: none)",
        )
        parser.add_argument(
            "--metrics-address",
            default="127.0.0.1",
            metavar="ADDRESS",
            help="the address the metrics are served on (default 127.0.0.1)",
        )

    def handle(
        self,
        *args: Any,
        once: bool,
        batch: int,
        poll: float | None,
        metrics_port: int,
        metrics_address: str,
        **options: Any,
    ) -> None:
        if not 1 <= batch <= 1000:
            raise CommandError(f"--batch must be from 1 to 1000, not {batch}.")
        if poll is not None and not 0 < poll <= 3600:
            raise CommandError(f"--poll must be more than 0 and at most 3600, not {poll:g}.")
        stop = threading.Event()

        def graceful(signum: int, frame: FrameType | None) -> None:
            if not stop.is_set():
                logger.info(
                    "webhook worker: %s, stopping after the delivery in progress",
                    signal.Signals(signum).name,
                )
            stop.set()

        signal.signal(signal.SIGTERM, graceful)
        signal.signal(signal.SIGINT, graceful)
        if metrics_port:
            serve_metrics(metrics_port, metrics_address)
        logger.info("webhook worker: started")
        Worker(batch=batch, poll=poll, stop=stop).run(once=once)
        logger.info("webhook worker: stopped")
