"""Benchmarks of score events (see bench/README.md, "Webhooks and the outbox"), on a scratch
PostgreSQL database, bounded to a few seconds each, loopback only:

1. **delivery**: events delivered per second by one delivery worker (``scores.delivery.Worker``
   in this process, production settings) to a receiver on 127.0.0.1 (a separate process
   answering 204 with keep-alive), from the first round to the last delivery: numbering,
   fan-out, claiming, signing, POSTing and recording included.
2. **outbox**: the cost of the outbox on the upsert. The statement the write service generates
   for one upsert (``scores.statements.score_statement``), and the same statement with its event
   CTE cut out (here only: the service always appends the event), run alternately on one
   connection in autocommit as the service runs it, each an update of a seeded score; the
   time of each (statement and commit) as the client sees it.

    .venv/bin/python bench/webhooks.py

Environment: EVENTS=3000 (delivered), UPSERTS=4000 (per variant), SCORES=10000 (seeded),
BATCH=20 (the worker's --batch), BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres (the
server; the database evalsvc_bench_webhooks is created there and dropped after, unless
KEEP_DB=1).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from scratch import database_url, free_port, scratch_database, wait_for_port

REPO = Path(__file__).resolve().parent.parent
DATABASE = "evalsvc_bench_webhooks"
EVENTS = int(os.environ.get("EVENTS", "3000"))
UPSERTS = int(os.environ.get("UPSERTS", "4000"))
SCORES = int(os.environ.get("SCORES", "10000"))
BATCH = int(os.environ.get("BATCH", "20"))
SERVER_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def receiver(port: int) -> None:
    """The subscriber: answers every POST 204, keeping the connection alive."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def setup_django() -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="evalsvc.settings.production",
        SECRET_KEY="bench-only-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        DATABASE_URL=database_url(SERVER_URL, DATABASE),
        ALLOWED_HOSTS="127.0.0.1",
        WEBHOOK_ALLOW_PRIVATE="true",
        LOG_LEVEL="ERROR",
    )
    sys.path.insert(0, str(REPO))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    import django

    django.setup()


def seed(count: int, user_offset: int) -> None:
    """``count`` scores written through the bulk write service (their events too)."""
    from scores.services import Write, scores_upsert_many

    for start in range(0, count, 1000):
        writes = [
            Write(user_id=user_offset + n // 100 + 1, exercise_id=n % 100 + 1, correct=True)
            for n in range(start, min(count, start + 1000))
        ]
        scores_upsert_many(writes=writes, recorded_by="bench")


def bench_delivery() -> dict[str, float]:
    from django.db import connection

    from scores.delivery import Worker
    from scores.events import sequence_events
    from scores.models import WebhookDelivery
    from scores.webhooks import subscription_create

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)])
    try:
        wait_for_port(port)
        subscription_create(actor="command:bench", url=f"http://127.0.0.1:{port}/hook")
        seed(EVENTS, user_offset=1_000_000)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) score_events")
        started = time.perf_counter()
        Worker(batch=BATCH, poll=0.1).run(once=True)
        elapsed = time.perf_counter() - started
        delivered = WebhookDelivery.objects.filter(status="delivered").count()
        sequence_events()
    finally:
        process.terminate()
        process.wait()
    assert delivered == EVENTS, f"{delivered} of {EVENTS} delivered"
    return {"events": delivered, "seconds": elapsed, "per_second": delivered / elapsed}


def bench_outbox() -> dict[str, Any]:
    from django.db import connection
    from django.utils import timezone

    from scores.services import Write
    from scores.statements import WriteMode, attempts_json, event_insert, score_statement

    with_outbox = score_statement("postgresql", WriteMode.UPSERT, "latest", log=True)
    change = "CASE WHEN applied.created THEN 'score.created' ELSE 'score.updated' END"
    event_cte = f", evented AS ({event_insert('applied', change)})"
    assert event_cte in with_outbox, "the generated statement no longer has this event CTE"
    without_outbox = with_outbox.replace(event_cte, "")
    seed(SCORES, user_offset=0)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")
    rng = random.Random(42)
    times: dict[str, list[float]] = {"with": [], "without": []}
    statements = {"with": with_outbox, "without": without_outbox}
    with connection.cursor() as cursor:
        for n in range(UPSERTS * 2 + 200):
            variant = ("with", "without")[n % 2]  # alternately: drifts of the machine cancel
            key = rng.randrange(SCORES)
            write = Write(user_id=key // 100 + 1, exercise_id=key % 100 + 1, correct=n % 2 == 0)
            now = timezone.now()
            params: dict[str, Any] = {
                "attempts": attempts_json([(0, write)], now),
                "now": now,
                "recorded_by": "bench",
            }
            started = time.perf_counter()
            cursor.execute(statements[variant], params)
            rows = cursor.fetchall()
            elapsed = time.perf_counter() - started
            assert len(rows) == 1
            if n >= 200:  # the first 200 warm the connection and its prepared statements
                times[variant].append(elapsed)
    result: dict[str, Any] = {}
    for variant, spent in times.items():
        result[variant] = {
            "count": len(spent),
            "median_us": statistics.median(spent) * 1e6,
            "mean_us": statistics.fmean(spent) * 1e6,
            "p90_us": statistics.quantiles(spent, n=10)[-1] * 1e6,
        }
    result["overhead_median"] = result["with"]["median_us"] / result["without"]["median_us"] - 1
    result["overhead_mean"] = result["with"]["mean_us"] / result["without"]["mean_us"] - 1
    return result


def main() -> None:
    scratch_database(SERVER_URL, DATABASE, create=True)
    try:
        setup_django()
        delivery = bench_delivery()
        outbox = bench_outbox()
    finally:
        from django.db import connections

        connections.close_all()
        if os.environ.get("KEEP_DB") != "1":
            scratch_database(SERVER_URL, DATABASE, create=False)
    print(f"webhook delivery, one worker (--batch {BATCH}), receiver on loopback:")
    print(
        f"  {delivery['events']:.0f} events in {delivery['seconds']:.2f} s: "
        f"{delivery['per_second']:.0f} events/s"
    )
    print(f"upsert statement (one connection, autocommit, {SCORES} scores, updates):")
    for variant in ("without", "with"):
        figures = outbox[variant]
        print(
            f"  {variant:>7} the event CTE: median {figures['median_us']:.0f} us, "
            f"mean {figures['mean_us']:.0f} us, p90 {figures['p90_us']:.0f} us "
            f"({figures['count']} statements)"
        )
    print(
        f"  the outbox costs {outbox['overhead_median'] * 100:+.1f} % (median), "
        f"{outbox['overhead_mean'] * 100:+.1f} % (mean)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--receiver"]:
        receiver(int(sys.argv[2]))
    else:
        main()
