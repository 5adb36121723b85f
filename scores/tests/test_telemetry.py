"""Operations: the request id, one structured log line per request, Prometheus metrics (in one
process here, and summed over gunicorn's workers under the project's gunicorn settings)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError
from prometheus_client import REGISTRY

from evalsvc.logs import JSONFormatter, NotUnavailable
from scores.database import database_breaker
from scores.tests.conftest import USER_ID, trip
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import page, score_json

pytestmark = pytest.mark.django_db

HEX_ID = re.compile(r"[0-9a-f]{32}")


def request_lines(caplog: Any) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == "evalsvc.request"]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- Request id -----------------------------------------------------------------------------


def test_a_request_without_an_id_gets_a_new_one_in_the_response(anon) -> None:
    first, second = anon.get("/health"), anon.get("/health")

    assert HEX_ID.fullmatch(first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_a_usable_request_id_from_the_client_is_kept(anon) -> None:
    response = anon.get("/health", HTTP_X_REQUEST_ID="edge-7f3a:42")

    assert response["X-Request-ID"] == "edge-7f3a:42"


@pytest.mark.parametrize("given", ["has space", 'a"quote', "x" * 129, "", "caf\u00e9"], ids=repr)
def test_an_unusable_request_id_is_replaced(anon, given: str) -> None:
    response = anon.get("/health", HTTP_X_REQUEST_ID=given)

    assert HEX_ID.fullmatch(response["X-Request-ID"])


# --- Request log ----------------------------------------------------------------------------


def test_each_request_logs_one_line_naming_the_caller_and_the_request_id(user, caplog: Any) -> None:
    own = ScoreFactory(user_id=USER_ID)
    caplog.set_level(logging.INFO, logger="evalsvc.request")

    response = user.get("/scores/user?page_size=5", HTTP_X_REQUEST_ID="req-1")

    assert response.json() == page([score_json(own)])
    [line] = request_lines(caplog)
    duration = line.pop("duration_ms")
    assert line == {
        "method": "GET",
        "path": "/scores/user",
        "route": "score-mine",
        "status": 200,
        "user_id": USER_ID,
        "account": None,
        "request_id": "req-1",
    }
    assert 0 < duration < 60_000


def test_a_staff_account_is_named_by_its_username(staff, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="evalsvc.request")

    staff.get("/scores/999999")

    [line] = request_lines(caplog)
    assert (line["status"], line["user_id"], line["account"]) == (404, None, "grader")


def test_a_503_is_logged_once_by_the_request_log(user, caplog: Any) -> None:
    trip(database_breaker, OperationalError("test: the database is down"))

    with caplog.at_level(logging.INFO):
        assert user.get("/scores/user").status_code == 503

    lines = [
        (r.name, r.getMessage()) for r in caplog.records if r.name.startswith(("evalsvc", "django"))
    ]
    assert lines == [("evalsvc.request", lines[0][1])]
    assert lines[0][1].startswith("GET /scores/user 503 ")


@pytest.mark.parametrize(("status", "kept"), [(503, False), (500, True), (502, True)])
def test_django_request_lines_are_kept_but_for_503s(status: int, kept: bool) -> None:
    record = logging.makeLogRecord({"name": "django.request", "status_code": status})

    assert NotUnavailable().filter(record) is kept


def test_json_log_lines_carry_the_fields_and_the_traceback() -> None:
    formatter = JSONFormatter()
    record = logging.LogRecord(
        "evalsvc.request", logging.INFO, __file__, 1, "GET / %s", (200,), None
    )
    record.fields = {"status": 200, "request_id": "r"}
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())

    line = json.loads(formatter.format(record))
    error = json.loads(formatter.format(failed))

    assert line.pop("time").endswith("+00:00")
    assert line == {
        "level": "INFO",
        "logger": "evalsvc.request",
        "message": "GET / 200",
        "status": 200,
        "request_id": "r",
    }
    assert error["exc"].startswith("Traceback")
    assert error["exc"].endswith("ValueError: boom")


# --- Metrics (one process) ------------------------------------------------------------------


def upsert_counts() -> dict[str, float]:
    """The metrics a created score moves."""
    return {
        "requests": sample(
            "evalsvc_http_requests_total", method="PATCH", route="score-list", status="201"
        ),
        "latency": sample(
            "evalsvc_http_request_duration_seconds_count", method="PATCH", route="score-list"
        ),
        "created": sample("evalsvc_score_writes_total", outcome="created"),
        "accepted": sample("evalsvc_users_service_calls_total", outcome="accepted"),
    }


def test_metrics_count_requests_writes_and_users_service_calls(user, anon) -> None:
    before = upsert_counts()

    for exercise in (1, 2):
        response = user.patch("/scores", {"exercise_id": exercise, "correct": True}, format="json")
        assert response.status_code == 201
    text = anon.get("/metrics").content.decode()

    after = upsert_counts()
    assert {key: after[key] - before[key] for key in before} == {
        "requests": 2,
        "latency": 2,
        "created": 2,
        "accepted": 1,  # the second request's verdict came from the cache
    }
    assert 'evalsvc_http_requests_total{method="PATCH",route="score-list",status="201"}' in text


def test_metrics_ask_for_the_token_when_one_is_set(anon, settings) -> None:
    settings.METRICS_TOKEN = "m3trics"

    assert anon.get("/metrics").status_code == 401
    assert anon.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert anon.get("/metrics", HTTP_AUTHORIZATION="Bearer m3trics").status_code == 200


def test_metrics_are_closed_without_a_token_where_they_are_not_open(anon, settings) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_OPEN = False

    response = anon.get("/metrics/")

    assert (response.status_code, response.json()) == (
        404,
        {"detail": "Metrics are served only with METRICS_TOKEN set."},
    )


# --- Under gunicorn, production settings ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http, loopback)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, dict(response.headers), response.read()


@pytest.mark.django_db(transaction=True)
def test_under_gunicorn_every_worker_is_counted_and_each_request_logs_a_json_line(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evalsvc.settings.production",
        "SECRET_KEY": "telemetry-test-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "METRICS_TOKEN": "m3trics",
        "WEB_CONCURRENCY": "2",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    env.pop("LOG_FORMAT", None)
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:evalsvc.gunicorn",
             "evalsvc.wsgi:application"],
            cwd=django_settings.BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        for n in range(20):
            status, headers, _ = get(
                f"http://127.0.0.1:{port}/health", {"X-Request-ID": f"probe-{n}"}
            )
            assert (status, headers["X-Request-ID"]) == (200, f"probe-{n}")
        _, _, body = get(f"http://127.0.0.1:{port}/metrics", {"Authorization": "Bearer m3trics"})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    text = body.decode()
    [count] = re.findall(
        r'^evalsvc_http_requests_total\{method="GET",route="health",status="200"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    assert float(count) == 21  # the readiness probe and the 20 probes, whichever worker
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    probes = [line for line in lines if line.get("request_id", "").startswith("probe-")]
    assert [line["request_id"] for line in probes] == [f"probe-{n}" for n in range(20)]
    assert {(line["logger"], line["path"], line["status"]) for line in probes} == {
        ("evalsvc.request", "/health", 200)
    }
