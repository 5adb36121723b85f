"""``manage.py test`` hands over to pytest, so either command runs the suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from evalsvc.test_runner import PytestRunner

BASE_DIR = Path(__file__).resolve().parents[2]

# The variables that choose the settings and their databases; each case sets its own.
CHOOSERS = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "DATABASE_TEST_URL")


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in CHOOSERS}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def own_test_database() -> dict[str, str]:
    """DATABASE_TEST_URL for a nested run, if this run has one.

    The nested run gets a database name of its own: pytest-django would otherwise recreate the
    test database this very run is using.
    """
    url = os.environ.get("DATABASE_TEST_URL")
    if not url:
        return {}
    parts = urlsplit(url)
    return {"DATABASE_TEST_URL": parts._replace(path=f"{parts.path}_nested_runner").geturl()}


def passed(output: str) -> bool:
    return re.search(r"\b\d+ passed\b", output) is not None


def test_manage_py_test_offers_keepdb() -> None:
    result = manage("test", "--help")

    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+--keepdb\s+Reuse the test database\.$", result.stdout, re.MULTILINE)


def test_manage_py_test_runs_a_test_file_with_pytest() -> None:
    result = manage(
        "test", "scores/tests/test_models.py", "--verbosity", "0", **own_test_database()
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert passed(result.stdout), result.stdout


def test_manage_py_test_runs_under_the_testing_settings_whatever_database_url_says() -> None:
    result = manage(
        "test",
        "scores/tests/test_models.py",
        "--verbosity",
        "0",
        DATABASE_URL="postgres://postgres@127.0.0.1:1/unreachable",
        **own_test_database(),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert passed(result.stdout), result.stdout


@pytest.mark.parametrize(
    ("options", "pytest_options"),
    [
        pytest.param({}, [], id="defaults"),
        pytest.param({"verbosity": 0}, ["--quiet"], id="verbosity-0"),
        pytest.param({"verbosity": 2}, ["--verbose"], id="verbosity-2"),
        pytest.param({"verbosity": 3}, ["--verbose"], id="verbosity-3"),
        pytest.param({"failfast": True}, ["--exitfirst"], id="failfast"),
        pytest.param({"keepdb": True}, ["--reuse-db"], id="keepdb"),
        pytest.param(
            {"verbosity": 2, "failfast": True, "keepdb": True},
            ["--verbose", "--exitfirst", "--reuse-db"],
            id="all",
        ),
    ],
)
def test_the_runner_turns_django_options_into_pytest_options(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, object], pytest_options: list[str]
) -> None:
    calls: list[tuple[list[str], str]] = []

    def call(args: list[str], env: dict[str, str]) -> int:
        calls.append((args, env["DJANGO_SETTINGS_MODULE"]))
        return 1

    monkeypatch.setattr(subprocess, "call", call)  # a stand-in: no pytest run inside this one

    exit_code = PytestRunner(**options).run_tests(["scores/tests/test_models.py"])

    assert exit_code == 1
    assert calls == [
        (
            [sys.executable, "-m", "pytest", *pytest_options, "scores/tests/test_models.py"],
            "evalsvc.settings.testing",
        )
    ]
