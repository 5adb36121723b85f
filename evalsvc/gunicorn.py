"""gunicorn settings of both instances ``bin/serve`` starts behind nginx (``gunicorn -c
python:evalsvc.gunicorn``); bin/serve gives each its socket, worker class and count.

Sync workers for the API: each request is a short burst of Python and database round trips,
and nginx hands a worker only complete requests and takes its answer at once, so processes
(not threads) use the cores. 3 workers measured best on 2 cores (docs/scaling.md).
"""

import os
import tempfile
from typing import Any

workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))  # a worker stuck this long is replaced
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))  # drain on SIGTERM
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))  # 0: workers are not recycled
max_requests_jitter = max_requests // 10
# The app logs one structured line per request (scores.telemetry); gunicorn's own access log
# would repeat it: set GUNICORN_ACCESS_LOG=- to have it too.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 (heartbeat files)
# nginx in front refuses, with the API's JSON, request lines and header lines over 4 KiB and
# headers over 16 KiB in all: gunicorn's own limits (and its HTML errors) are set beyond them.
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 32768

# Prometheus metrics from every worker of both instances: each writes its own files in
# PROMETHEUS_MULTIPROC_DIR (bin/serve gives one; a fresh temporary directory otherwise) and
# /metrics adds them up.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="evalsvc-metrics-")
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker's live gauges go with it (counters stay, summed)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
