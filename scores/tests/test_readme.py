"""The README as a newcomer reads it: ``bin/run`` started as it is documented (on a scratch
SQLite database and a free loopback port), then every curl example of the README's API
sections run verbatim by bash, each answer compared with the one the README shows under it.

An answer is shown as a comment after its command: ``# 201 {"id": …, "user_id": 4, …}``. The
status must match; a JSON body after it must match the answer's body, where ``…`` stands for
members, items or a value not shown (``{"user_id": 4, …}``, ``[{…}, …]``, ``"id": …``: ids
depend on the database's sequences) and a timestamp the service chose (one the request did not
send) matches any timestamp. Prose after the body is not compared.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SHOWN_ADDRESS = "http://127.0.0.1:8000"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
ANSWER = re.compile(r"#\s*(\d{3})\b\s*(.*)")
MORE = "…"


@dataclass
class Example:
    command: str  # one logical shell line, continuations joined
    status: int | None  # the answer shown under it, for a curl command
    body: str  # what follows the status on that comment line


def fenced_blocks(text: str, language: str) -> list[str]:
    """The text of each fenced block of ``language`` (``""``: no language given)."""
    blocks: list[str] = []
    opened: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if opened is None and line.startswith("```"):
            opened, lines = line[3:].strip(), []
        elif opened is not None and line.strip() == "```":
            if opened == language:
                blocks.append("\n".join(lines) + "\n")
            opened = None
        elif opened is not None:
            lines.append(line)
    return blocks


def api_example_blocks() -> list[str]:
    """The README's bash blocks that call the API as a user or as staff: curl commands (and
    variables they use), with the tokens bin/run printed."""
    return [
        block
        for block in fenced_blocks(README.read_text(), "bash")
        if ("$USER_TOKEN" in block or "$STAFF_TOKEN" in block)
        and all(re.match(r"curl |[A-Z_]+=\$\(", example.command) for example in examples_of(block))
    ]


def examples_of(block: str) -> list[Example]:
    """Each command of ``block`` with the answer shown under it (the first ``# NNN`` comment
    before the next command)."""
    examples: list[Example] = []
    pending = ""
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            found = ANSWER.fullmatch(stripped)
            if found and examples and examples[-1].status is None:
                examples[-1].status = int(found.group(1))
                examples[-1].body = found.group(2)
            continue
        pending += stripped.removesuffix("\\").strip() + " " if stripped else ""
        if stripped and not stripped.endswith("\\"):
            examples.append(Example(command=pending.strip(), status=None, body=""))
            pending = ""
    return examples


def shown_json(text: str) -> Any:
    """The JSON at the start of ``text``, with ``…`` read as members or items not shown, or
    as a value not shown (``"id": …``)."""
    text = re.sub(rf"(?<=:)\s*{MORE}(?=\s*[,}}])", f' "{MORE}"', text)
    text = re.sub(rf"(?<=[{{,])\s*{MORE}\s*(?=}})", f' "{MORE}": "{MORE}"', text)
    text = re.sub(rf"(?<=[\[,])\s*{MORE}\s*(?=\])", f' "{MORE}"', text)
    value, _ = json.JSONDecoder().raw_decode(text)
    return value


def mismatches(shown: Any, actual: Any, request: str, where: str = "body") -> list[str]:
    """Where ``actual`` differs from what the README shows (see the module docstring)."""
    if shown == MORE:
        return []
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            return [f"{where}: {actual!r} is not an object"]
        keys = [key for key in shown if key != MORE]
        found = [f"{where}: no {key!r}" for key in keys if key not in actual]
        if MORE not in shown and set(actual) - set(keys):
            found.append(f"{where}: also {sorted(set(actual) - set(keys))} (add them or …)")
        for key in keys:
            if key in actual:
                found += mismatches(shown[key], actual[key], request, f"{where}.{key}")
        return found
    if isinstance(shown, list):
        if not isinstance(actual, list):
            return [f"{where}: {actual!r} is not a list"]
        items = shown[:-1] if shown and shown[-1] == MORE else shown
        if len(actual) < len(items) or (items is shown and len(actual) != len(items)):
            return [f"{where}: {len(actual)} items, the README shows {len(shown)}"]
        return [
            problem
            for i, item in enumerate(items)
            for problem in mismatches(item, actual[i], request, f"{where}[{i}]")
        ]
    chosen_by_service = (
        isinstance(shown, str) and TIMESTAMP.fullmatch(shown) and shown not in request
    )
    if chosen_by_service:
        return (
            []
            if isinstance(actual, str) and TIMESTAMP.fullmatch(actual)
            else [f"{where}: {actual!r}"]
        )
    return (
        []
        if shown == actual and type(shown) is type(actual)
        else [f"{where}: {actual!r}, README {shown!r}"]
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (http, loopback)
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class Demo:
    base: str
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text()

    def printed(self, pattern: str) -> str:
        found = re.search(pattern, self.output())
        assert found, f"bin/run did not print {pattern!r}:\n{self.output()}"
        return found.group(1)


def demo_environment(tmp_path: Path, port: int) -> dict[str, str]:
    """bin/run's environment as on a newcomer's machine: nothing of the test settings."""
    kept = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {name: os.environ[name] for name in kept if name in os.environ}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        RUN_USE_PATH="1",  # this interpreter's packages, not a virtualenv of bin/run's own
        DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        ADDRESS=f"127.0.0.1:{port}",
        TMPDIR=str(tmp_path),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``bin/run`` on a scratch database and port, until its server answers; stopped with
    SIGTERM (as Ctrl-C's terminal would) afterwards."""
    tmp_path = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = tmp_path / "bin-run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bin/run"],
            cwd=REPO,
            env=demo_environment(tmp_path, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    demo = Demo(base=f"http://127.0.0.1:{port}", log=log, process=process)
    deadline = time.monotonic() + 120
    while not answers(f"{demo.base}/health"):
        assert process.poll() is None, f"bin/run ended:\n{demo.output()}"
        assert time.monotonic() < deadline, f"bin/run did not serve in 120 s:\n{demo.output()}"
        time.sleep(0.25)
    yield demo
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise


CURL_WRAPPER = r"""
# The README's curl commands, as written, against the demo: each answer is kept as
# $answers/N.status and $answers/N.body, and the shown address is the demo's.
curl() {
    local n=$(( $(ls "$ANSWERS" | wc -l) / 2 + 1 ))
    command curl -sS --max-time 20 -o "$ANSWERS/$n.body" -w '%{http_code}' \
        "${@//http:\/\/127.0.0.1:8000/$BASE}" >"$ANSWERS/$n.status"
}
"""


def run_block(block: str, demo: Demo, tokens: dict[str, str], tmp_path: Path) -> list[Any]:
    """Run ``block`` in bash; the (status, body) of each curl call, in order."""
    answers_dir = tmp_path / "answers"
    answers_dir.mkdir()
    script = f"set -euo pipefail\n{CURL_WRAPPER}\n{block}"
    subprocess.run(
        ["bash", "-c", script],
        check=True,
        env={**os.environ, **tokens, "ANSWERS": str(answers_dir), "BASE": demo.base},
        timeout=60,
    )
    count = len(list(answers_dir.glob("*.status")))
    return [
        (
            int((answers_dir / f"{n}.status").read_text()),
            (answers_dir / f"{n}.body").read_text(),
        )
        for n in range(1, count + 1)
    ]


def test_the_readme_shows_an_answer_under_every_curl_example() -> None:
    blocks = api_example_blocks()
    assert len(blocks) >= 3  # history and retries, as a user, as staff
    for block in blocks:
        for example in examples_of(block):
            if example.command.startswith("curl"):
                assert example.status is not None, f"no answer shown for {example.command}"


def test_bin_run_prints_what_the_readme_says(demo: Demo) -> None:
    shown = next(
        block for block in fenced_blocks(README.read_text(), "") if "Seeded" in block
    ).splitlines()
    secret = re.compile(r"[A-Za-z0-9_-]{16,}|:[0-9]{2,5}\b")
    printed = {secret.sub("<x>", line) for line in demo.output().splitlines()}
    assert [line for line in shown if secret.sub("<x>", line) not in printed] == []


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples are curl commands")
@pytest.mark.parametrize("index", range(len(api_example_blocks())))
def test_the_readme_api_examples_answer_as_shown(demo: Demo, index: int, tmp_path: Path) -> None:
    tokens = {
        "STAFF_TOKEN": demo.printed(r"export STAFF_TOKEN=(\S+)"),
        "USER_TOKEN": demo.printed(r"USER_TOKEN=(\S+)"),
    }
    block = api_example_blocks()[index]
    calls = [example for example in examples_of(block) if example.command.startswith("curl")]

    got = run_block(block, demo, tokens, tmp_path)

    assert len(got) == len(calls)
    problems = []
    for example, (status, body) in zip(calls, got, strict=True):
        if status != example.status:
            problems.append(f"{example.command}\n  {status} {body}, README {example.status}")
        elif example.body.startswith("{"):
            found = mismatches(shown_json(example.body), json.loads(body), example.command)
            problems += [f"{example.command}\n  {problem}" for problem in found]
    assert problems == [], "\n".join(problems)


def test_the_demo_logs_one_line_per_request_and_stops_its_helpers(demo: Demo) -> None:
    users_service = demo.printed(r"demo users service on (http://127\.0\.0\.1:\d+)")
    before = demo.output().count(" evalsvc.request ")
    with urllib.request.urlopen(f"{demo.base}/scores/ping", timeout=5):  # noqa: S310
        pass
    time.sleep(0.5)  # the log line is written after the answer
    log = demo.output()
    assert log.count(" evalsvc.request ") == before + 1
    assert re.findall(r'"[A-Z]+ /\S* HTTP/1\.1" \d{3}', log) == []  # runserver's own lines
    assert "silenced" not in log or "(0 silenced)" in log

    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(timeout=30) != 0
    assert not answers(f"{users_service}/health")
    assert not answers(f"{demo.base}/health")
