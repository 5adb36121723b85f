"""``manage.py test`` runs the pytest suite, so developers can use either command."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any


class PytestRunner:
    """A Django TEST_RUNNER that hands over to pytest (with the testing settings)."""

    def __init__(
        self, verbosity: int = 1, failfast: bool = False, keepdb: bool = False, **kwargs: Any
    ) -> None:
        self.verbosity = verbosity
        self.failfast = failfast
        self.keepdb = keepdb

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--keepdb", action="store_true", help="Reuse the test database.")

    def run_tests(self, test_labels: list[str], **kwargs: Any) -> int:
        """Run pytest in a fresh process: this one has already loaded manage.py's settings."""
        argv: list[str] = []
        if self.verbosity == 0:
            argv.append("--quiet")
        elif self.verbosity >= 2:
            argv.append("--verbose")
        if self.failfast:
            argv.append("--exitfirst")
        if self.keepdb:
            argv.append("--reuse-db")
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "evalsvc.settings.testing"}
        command = [sys.executable, "-m", "pytest", *argv, *test_labels]
        return subprocess.call(command, env=env)  # noqa: S603 (the developer's own arguments)
