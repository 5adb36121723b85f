"""The demo users service (demo/users_service.py) as bin/run and the compose stack start it: a
real process on loopback answering /auth/status the way the service reads it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scores.users_service import read_verdict

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_users(tmp_path: Path) -> Iterator[str]:
    url_file = tmp_path / "users.url"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "demo.users_service",
            "--url-file",
            str(url_file),
            "--user=-starts-with-a-dash=4",  # as secrets.token_urlsafe may give
            "--user=admin-token=1:admin",
        ],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "DEMO_USERS": "from-env=7"},
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            if url_file.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        assert url_file.exists(), process.stderr.read() if process.stderr else ""
        yield url_file.read_text().strip()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def auth_status(url: str, authorization: str) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 (http, loopback)
        f"{url}/auth/status", headers={"Authorization": authorization}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_it_vouches_for_its_tokens_as_the_service_reads_them(demo_users) -> None:
    verdicts = {
        token: read_verdict(*auth_status(demo_users, f"Bearer {token}"))
        for token in ("-starts-with-a-dash", "admin-token", "from-env", "unknown")
    }

    assert {token: v and (v.id, v.is_admin) for token, v in verdicts.items()} == {
        "-starts-with-a-dash": (4, False),
        "admin-token": (1, True),
        "from-env": (7, False),
        "unknown": None,
    }
    assert auth_status(demo_users, "Token -starts-with-a-dash")[0] == 401


def test_it_answers_its_health_check(demo_users) -> None:
    with urllib.request.urlopen(f"{demo_users}/health", timeout=5) as answer:  # noqa: S310
        assert (answer.status, json.loads(answer.read())) == (200, {"status": "ok"})


@pytest.mark.parametrize("spec", ["token", "token=x", "=4", "token=4:root", "token=0"])
def test_it_refuses_a_user_it_cannot_read(spec) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "demo.users_service", f"--user={spec}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=10,
    )

    assert ran.returncode == 2
    assert "TOKEN=ID" in ran.stderr or "out of range" in ran.stderr
