"""What the prescribed stack can do at best for ``GET /scores/<id>`` on this machine: the cost
ladder of ``bench/stack_floor_app.py`` (Django + DRF doing one more piece of the contract's
per-request work per level), each level under gunicorn with 3 sync workers as evalsvc's API,
loaded by wrk as the shared harness loads it (16 connections, 2 threads, ``bench/wrk/get_one.lua``
on 1,000,000 scores in the harness's layout). With ``PEER_BENCH`` set (the shared harness's
folder, whose ``peer_flask`` it starts with the venvs of ``BENCH_VENVS``), the old service is
measured before and after the ladder and each level is given as a ratio to it.

    .venv/bin/python bench/stack_floor.py
    PEER_BENCH=../shared/bench BENCH_VENVS=/path/to/venvs .venv/bin/python bench/stack_floor.py

Settings (environment): ``BENCH_PG_URL`` (PostgreSQL server, default
``postgres://postgres@127.0.0.1:5432/postgres``; database ``evalsvc_floor`` is created and
dropped), ``CACHE_URL`` (default ``redis://127.0.0.1:6379/11``), ``DURATION`` (10 s per level),
``WARMUP`` (5 s), ``WORKERS`` (3, for each level and the old service), ``SERVER`` (``gunicorn``
sync workers, or ``granian`` in WSGI mode when the virtualenv running this has it), ``LEVELS``
(default every level). Prints one line per level, then the table.
About 3 minutes.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from scratch import database_url, free_port, scratch_database, wait_for_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVER_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
CACHE_URL = os.environ.get("CACHE_URL", "redis://127.0.0.1:6379/11")
DURATION = int(os.environ.get("DURATION", "10"))
WARMUP = int(os.environ.get("WARMUP", "5"))
WORKERS = os.environ.get("WORKERS", "3")
SERVER = os.environ.get("SERVER", "gunicorn")
DATABASE = "evalsvc_floor"
DATABASE_URL = database_url(SERVER_URL, DATABASE)
LEVELS = os.environ.get("LEVELS", "constant read read-orm verdicts throttle log middleware").split()
BENCH_LINE = re.compile(r"BENCH rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+).*non2xx=(\d+)")

SCHEMA = """
CREATE TABLE scores (
    id bigint PRIMARY KEY,
    user_id integer NOT NULL CHECK (user_id > 0),
    exercise_id integer NOT NULL CHECK (exercise_id > 0),
    correct boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, exercise_id)
);
INSERT INTO scores (id, user_id, exercise_id, correct)
SELECT i + 1, i % 10000 + 1, i / 10000 + 1, i % 3 = 0
FROM generate_series(0, 999999) AS i;
"""


def create_scores() -> None:
    import psycopg

    scratch_database(SERVER_URL, DATABASE, create=True)
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("VACUUM ANALYZE scores")


def load(port: int, seconds: int) -> tuple[float, float, float, int]:
    """wrk's get one on ``port``: req/s, p50 and p99 in ms, answers that were not 2xx."""
    run = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(HERE / "wrk" / "get_one.lua"),
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    match = BENCH_LINE.search(run.stdout)
    if match is None:
        raise RuntimeError(f"no BENCH line from wrk: {run.stdout}{run.stderr}")
    rps, p50, p99, non2xx = match.groups()
    return float(rps), float(p50), float(p99), int(non2xx)


def measure(name: str, command: list[str], env: dict[str, str], port: int) -> dict[str, float]:
    """Start ``command`` in its own process group, warm it, load it, stop it."""
    server = subprocess.Popen(
        command, env={**os.environ, **env}, cwd=HERE, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, seconds=60)
        load(port, WARMUP)
        rps, p50, p99, non2xx = load(port, DURATION)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    if non2xx:
        raise RuntimeError(f"{name}: {non2xx} answers were not 2xx")
    print(f"{name:12s} {rps:8.1f} req/s  p50 {p50:5.1f} ms  p99 {p99:5.1f} ms", flush=True)
    return {"rps": rps, "p50": p50, "p99": p99}


def level(name: str) -> dict[str, float]:
    port = free_port()
    server = str(Path(sys.executable).parent / SERVER)
    if SERVER == "granian":
        command = [server, "--interface", "wsgi", "--workers", WORKERS, "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning",
                   "stack_floor_app:application"]  # fmt: skip
    else:
        command = [server, "stack_floor_app:application", "--workers", WORKERS, "--worker-class",
                   "sync", "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip
    env = {"FLOOR_LEVEL": name, "DATABASE_URL": DATABASE_URL, "CACHE_URL": CACHE_URL}
    return measure(name, command, env, port)


def peer(peer_bench: str) -> dict[str, float]:
    port = free_port()
    env = {"PORT": str(port), "DATABASE_URL": DATABASE_URL, "WORKERS": WORKERS,
           "PEER_AUTH": "stub", "PEER_SCHEMA": "indexed"}  # fmt: skip
    return measure("old service", [f"{peer_bench}/peer_flask/start.sh"], env, port)


def main() -> None:
    peer_bench = os.environ.get("PEER_BENCH", "")
    create_scores()
    try:
        results: dict[str, dict[str, float]] = {}
        peers = [peer(peer_bench)] if peer_bench else []
        for name in LEVELS:
            results[name] = level(name)
        if peer_bench:
            peers.append(peer(peer_bench))
    finally:
        scratch_database(SERVER_URL, DATABASE, create=False)
    reference = statistics.mean(p["rps"] for p in peers) if peers else None
    print(f"\n{SERVER}, {WORKERS} workers   req/s  ratio to the old service  p99 ms")
    if reference:
        print(f"{'old service':12s} {reference:7.1f}  1.00 (mean of {len(peers)} runs)")
    for name, figures in results.items():
        ratio = f"{figures['rps'] / reference:.2f}" if reference else "-"
        print(f"{name:12s} {figures['rps']:7.1f}  {ratio:>4s}  {figures['p99']:22.1f}")


if __name__ == "__main__":
    main()
