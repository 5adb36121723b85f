#!/usr/bin/env python3
"""How long each migration after 0004 takes on a large table, and how long it holds up the
writes that go on meanwhile.

    .venv/bin/python bench/migrations.py [--scores 1000000] [--attempts-per-score 5]
        [--pg postgres://postgres@127.0.0.1:5432]

On a scratch PostgreSQL database (created and dropped here): migrates to 0004, fills
``scores`` with SCORES rows (bench/seed.sql's layout) and ``score_attempts`` with
ATTEMPTS_PER_SCORE attempts per score, then applies each later migration with
``manage.py migrate scores NAME`` while two threads keep writing and reading: a writer that
updates a random score and logs an attempt (one short transaction, as the API's write does)
and a reader of one random score. Prints, per migration, its wall time and the writer's and
reader's worst and 99th-percentile latency during it; exits 1 if a statement of the load
waited more than 5 s (the migrations' lock_timeout: they must give way, not the load).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
LATER = ["0005_partial_credit", "0006_score_events"]


def load(conninfo: str, stop: threading.Event, latencies: dict[str, list[float]]) -> None:
    """The writer and the reader, until ``stop``; latencies in seconds, by kind."""

    def writer() -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SET statement_timeout = '10s'")
            while not stop.is_set():
                score = random.randint(1, args.scores)
                started = time.monotonic()
                with conn.transaction():
                    conn.execute(
                        "UPDATE scores SET correct = NOT correct, updated_at = now(), "
                        "attempts = attempts + 1 WHERE id = %s",
                        [score],
                    )
                    conn.execute(
                        "INSERT INTO score_attempts (score_id, user_id, exercise_id, correct, "
                        "attempted_at, recorded_at, recorded_by, applied, created_score) "
                        "SELECT id, user_id, exercise_id, correct, now(), now(), 'bench', "
                        "true, false FROM scores WHERE id = %s",
                        [score],
                    )
                latencies["write"].append(time.monotonic() - started)

    def reader() -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SET statement_timeout = '10s'")
            while not stop.is_set():
                started = time.monotonic()
                conn.execute(
                    "SELECT id, user_id, exercise_id, correct, updated_at FROM scores "
                    "WHERE id = %s",
                    [random.randint(1, args.scores)],
                ).fetchall()
                latencies["read"].append(time.monotonic() - started)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join()


def manage(env: dict[str, str], *arguments: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *arguments], cwd=REPO, env=env, check=True,
        capture_output=True,
    )  # fmt: skip


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else max(values, default=0)


def main() -> int:
    server = args.pg.rstrip("/")
    database = f"evalsvc_migrations_{os.getpid()}"
    conninfo = f"{server}/{database}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evalsvc.settings.production",
        "SECRET_KEY": "bench-only-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": conninfo,
    }
    failed = False
    try:
        manage(env, "migrate", "scores", "0004", "--noinput")
        started = time.monotonic()
        subprocess.run(
            ["psql", "-X", "-q", "-d", conninfo, "-f", str(REPO / "bench/seed.sql")],
            check=True, capture_output=True,
        )  # fmt: skip
        with psycopg.connect(conninfo, autocommit=True) as conn:
            if args.scores != 1_000_000:
                conn.execute("DELETE FROM score_attempts WHERE score_id > %s", [args.scores])
                conn.execute("DELETE FROM scores WHERE id > %s", [args.scores])
            conn.execute(
                "INSERT INTO score_attempts (score_id, user_id, exercise_id, correct, "
                "attempted_at, recorded_at, recorded_by, applied, created_score) "
                "SELECT s.id, s.user_id, s.exercise_id, random() < 0.5, "
                "s.updated_at - n * interval '1 day', s.updated_at, 'bench-seed', false, false "
                "FROM scores s CROSS JOIN generate_series(1, %s) AS n",
                [args.attempts_per_score - 1],
            )
            conn.execute("VACUUM ANALYZE")
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM scores), (SELECT count(*) FROM score_attempts)"
            ).fetchone()
            sizes = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('scores')), "
                "pg_size_pretty(pg_total_relation_size('score_attempts'))"
            ).fetchone()
        assert counts is not None
        assert sizes is not None
        print(
            f"seeded {counts[0]:,} scores ({sizes[0]}) and {counts[1]:,} attempts ({sizes[1]}) "
            f"in {time.monotonic() - started:.0f} s"
        )
        print(f"{'migration':<24}{'time':>9}{'write p99':>12}{'write max':>12}"
              f"{'read p99':>11}{'read max':>11}{'writes':>9}")  # fmt: skip
        for name in LATER:
            latencies: dict[str, list[float]] = {"write": [], "read": []}
            stop = threading.Event()
            runner = threading.Thread(target=load, args=(conninfo, stop, latencies))
            runner.start()
            time.sleep(1)  # the load is running before the migration starts
            started = time.monotonic()
            try:
                manage(env, "migrate", "scores", name, "--noinput")
            finally:
                took = time.monotonic() - started
                time.sleep(0.5)
                stop.set()
                runner.join()
            worst = max(latencies["write"] + latencies["read"], default=0)
            failed |= worst > 5
            write, read = latencies["write"], latencies["read"]
            print(
                f"{name:<24}{took:>8.1f}s"
                f"{p99(write) * 1000:>10.1f}ms{max(write) * 1000:>10.1f}ms"
                f"{p99(read) * 1000:>9.1f}ms{max(read) * 1000:>9.1f}ms{len(write):>9,}"
            )
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    if failed:
        print("a statement of the load waited more than 5 s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", type=int, default=1_000_000)
    parser.add_argument("--attempts-per-score", type=int, default=5)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    sys.exit(main())
