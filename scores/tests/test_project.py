"""The project as its ecosystem expects it: a helpful manage.py without Django, packaging
metadata that installs the whole service, locks that pin what requirements/*.txt pin, every
setting documented in the README and listed in .env.example, and pre-commit running CI's
checks."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_manage_py_without_django_says_how_to_get_the_virtualenv() -> None:
    ran = subprocess.run(
        [sys.executable, "-S", "manage.py", "migrate"],  # -S: no site-packages, so no Django
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr
    assert ran.stderr.startswith("manage.py: Django is not installed for ")
    assert ".venv/bin/python manage.py migrate" in ran.stderr
    assert ". .venv/bin/activate" in ran.stderr
    assert "bin/run" in ran.stderr
    assert "bin/test" in ran.stderr


def packages_under(top: str) -> set[str]:
    return {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / top).rglob("__init__.py")
        if "tests" not in init.parts
    }


def test_pip_install_installs_every_package_and_file_the_service_runs_with() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    found = setuptools["packages"]["find"]
    data = setuptools["package-data"]["scores"]

    assert project["project"]["name"] == "evalsvc"
    assert project["project"]["requires-python"] == ">=3.11"
    assert setuptools["dynamic"]["dependencies"]["file"] == ["requirements/base.txt"]
    assert found == {"include": ["evalsvc*", "scores*"], "exclude": ["scores.tests*"]}
    assert packages_under("evalsvc") | packages_under("scores") >= {"evalsvc", "scores"}
    shipped = {
        path.relative_to(REPO / "scores").as_posix()
        for pattern in data
        for path in (REPO / "scores").glob(pattern)
        if path.is_file()
    }
    files = {
        path.relative_to(REPO / "scores").as_posix()
        for path in (REPO / "scores").rglob("*")
        if path.is_file()
        and path.suffix not in (".py", ".pyc")
        and not {"tests", "__pycache__"} & set(path.parts)
    }
    assert files - shipped == set()
    assert not [p for p in (REPO / "evalsvc").rglob("*") if p.is_file() and p.suffix == ".html"]


def test_the_locks_pin_what_the_requirements_pin() -> None:
    ran = subprocess.run(
        ["bin/lock", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )

    assert (ran.returncode, ran.stderr) == (0, "")
    for lock in ("base.lock", "dev.lock"):
        text = (REPO / "requirements" / lock).read_text()
        pins = re.findall(r"^[A-Za-z0-9._-]+==\S+ \\$", text, flags=re.MULTILINE)
        assert pins
        assert text.count("\n    --hash=sha256:") >= len(pins)


def documented_settings() -> set[str]:
    """The variables of the README's settings table and of its bin/serve and gunicorn
    paragraph."""
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    names = {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    return names | set(re.findall(r"`([A-Z][A-Z0-9_]+)` \(", section))


def test_every_setting_the_code_reads_is_documented_in_the_readme() -> None:
    read = set()
    for path in [*(REPO / "evalsvc").rglob("*.py"), *(REPO / "scores").glob("*.py")]:
        read |= set(re.findall(r'env\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', path.read_text()))
        read |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z][A-Z0-9_]+)"', path.read_text()))
    read -= {"DJANGO_SETTINGS_MODULE"}

    assert read - documented_settings() == set()


def test_env_example_lists_every_documented_setting_once() -> None:
    names = re.findall(r"^([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M)

    assert len(names) == len(set(names))
    assert documented_settings() - set(names) == set()


def test_pre_commit_runs_what_ci_runs() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    ci = (REPO / ".ci" / "run").read_text()

    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    for command in (
        "bin/lock --check",
        "ruff check .",
        "ruff format --check .",
        "mypy evalsvc scores demo",
        "manage.py makemigrations --check --dry-run",
        "docker/check.sh",
    ):
        assert command in ci
        assert [entry for entry in entries if command in entry]
