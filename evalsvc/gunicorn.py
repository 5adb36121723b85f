"""gunicorn settings: ``gunicorn -c python:evalsvc.gunicorn evalsvc.wsgi:application``.

Sync workers: each request is a short burst of Python and database round trips, so processes
(not threads) use the cores. 3 workers measured best on 2 cores (bench/README.md); set
WEB_CONCURRENCY to about 1.5 x cores where the database runs elsewhere.
"""

import json
import os
import tempfile
from typing import Any

from gunicorn import util  # type: ignore[import-untyped]

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))  # a stuck worker is replaced
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))  # drain on SIGTERM
keepalive = 2
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))  # 0: workers are not recycled
max_requests_jitter = max_requests // 10
# The app logs one structured line per request (scores.telemetry); gunicorn's own access log
# would repeat it: set GUNICORN_ACCESS_LOG=- to have it too.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 (heartbeat files)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Prometheus metrics from every worker: each writes its own files in PROMETHEUS_MULTIPROC_DIR
# (a fresh temporary directory unless given) and /metrics adds them up.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="evalsvc-metrics-")


def json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """What gunicorn answers itself, before the app sees the request (a request line over
    ``limit_request_line``, headers over their limits, a malformed request): the API's JSON
    error shape instead of gunicorn's HTML page. gunicorn has no setting for it; its workers
    call ``gunicorn.util.write_error``, replaced here in the master, before they fork."""
    body = json.dumps({"detail": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = json_error


def on_starting(server: Any) -> None:
    """Start from empty counters: the files of a previous run are not this run's."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def child_exit(server: Any, worker: Any) -> None:
    """A worker's live gauges go with it (counters stay, summed)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
