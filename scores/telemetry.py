"""What the service tells its operators: one structured log line per request, a request id
that follows the request through the logs, and Prometheus metrics.

Metrics are kept with ``prometheus_client``. Under gunicorn each worker is a process, so
``evalsvc/gunicorn.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` adds up every
worker's files; a single process (runserver, tests) reports its own registry.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from scores.exceptions import json_error

logger = logging.getLogger("evalsvc.request")

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept when it is a plausible id (no spaces, quotes or control characters that
# could forge a log line or a header); otherwise a new one is made.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

REQUESTS = Counter(
    "evalsvc_http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "evalsvc_http_request_duration_seconds",
    "Time from the request reaching Django to the response leaving it.",
    ["method", "route"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCORE_WRITES = Counter(
    "evalsvc_score_writes_total",
    "Attempts written through the write service, by outcome.",
    ["outcome"],  # created, updated, not_applied, replayed
)
EVENTS_APPENDED = Counter(
    "evalsvc_events_appended_total", "Score events appended to the outbox (applied changes)."
)
USERS_SERVICE_CALLS = Counter(
    "evalsvc_users_service_calls_total",
    "Calls to the users service's /auth/status, by outcome.",
    ["outcome"],  # accepted, rejected, failed
)


def note_caller(request: HttpRequest, *, user_id: int | None = None, account: str = "") -> None:
    """Name the authenticated caller in the request's log line (never their token)."""
    request.log_user_id = user_id  # type: ignore[attr-defined]
    request.log_account = account or None  # type: ignore[attr-defined]


def route_of(request: HttpRequest) -> str:
    """The name of the route that served the request (``score-detail``, ``health``...): a
    bounded set of label values, unlike raw paths."""
    match = request.resolver_match
    return match.view_name if match is not None else "unmatched"


class RequestLogMiddleware:
    """Outermost middleware: gives every request an ``X-Request-ID`` (the client's, if it sent
    a usable one), logs one line when the response leaves (method, path, status, duration,
    caller, request id) and counts it in the metrics."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        given = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        duration = time.perf_counter() - started
        route = route_of(request)
        method = request.method or ""
        REQUESTS.labels(method, route, str(response.status_code)).inc()
        LATENCY.labels(method, route).observe(duration)
        logger.info(
            "%s %s %s %.1fms",
            method,
            request.path,
            response.status_code,
            duration * 1000,
            extra={
                "fields": {
                    "method": method,
                    "path": request.path,
                    "route": route,
                    "status": response.status_code,
                    "duration_ms": round(duration * 1000, 2),
                    "user_id": getattr(request, "log_user_id", None),
                    "account": getattr(request, "log_account", None),
                    "request_id": request_id,
                }
            },
        )
        return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. With ``METRICS_TOKEN`` set, only for
    ``Authorization: Bearer <METRICS_TOKEN>``; production serves it only then."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return json_error(
                401,
                "The metrics token is missing or wrong.",
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    elif not settings.METRICS_OPEN:
        return json_error(404, "Metrics are served only with METRICS_TOKEN set.")
    if request.method not in ("GET", "HEAD"):
        return json_error(405, f'Method "{request.method}" not allowed.')
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from scores.webhooks import BacklogCollector  # a query at scrape time, not a file

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(BacklogCollector())
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
