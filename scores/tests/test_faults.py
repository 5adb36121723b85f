"""Faults: the users service failing in every way and flapping; then, under ``bin/serve`` (the
production entry: nginx in front of gunicorn, production settings), PostgreSQL connections
killed idle and mid-load, a table locked past the statement deadline, Redis stopped and
resumed, a slow users service asked about many unknown tokens, 300 slow clients among normal
traffic, and clients that send half a body, too much, too slowly, or leave. Each test states
the exact answers, their time bounds, that /health answers within a second throughout, and
the stored state afterwards. See docs/reliability.md.

The users-service faults run in-process on any database (test_authentication.py has the single
faults: unreachable, slow, garbage, 5xx, an outage not cached). The rest start bin/serve in a
subprocess, on a scratch PostgreSQL database of their own (created and dropped here), with a
Redis server of their own, and are skipped on SQLite.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection

from scores.models import Attempt
from scores.resilient_cache import redis_breaker
from scores.tests.conftest import bearer_client
from scores.tests.helpers import stored
from scores.tests.users_double import UsersServiceDouble, free_port

USERS_SERVICE_DOWN = {"detail": "The users service is unavailable; retry later."}
DATABASE_DOWN = {"detail": "The database is unavailable; retry later."}
RETRY_AFTER = str(django_settings.RETRY_AFTER_SECONDS)
REPO = Path(django_settings.BASE_DIR)


# === The users service failing ==============================================================


@pytest.fixture
def users_double(settings: Any) -> Iterator[UsersServiceDouble]:
    double = UsersServiceDouble(port=free_port())
    double.switch("up")
    settings.USERS_SERVICE_URL = f"http://127.0.0.1:{double.port}"
    settings.USERS_SERVICE_TIMEOUT = 0.2
    yield double
    double.released.set()
    double.stop()


def assert_users_service_unavailable(response: Any) -> None:
    assert (response.status_code, response.json()) == (503, USERS_SERVICE_DOWN)
    assert response.headers["Retry-After"] == RETRY_AFTER


def logged() -> list[tuple[int, int, bool, bool]]:
    """The attempt log as (user_id, exercise_id, correct, applied), ordered."""
    return list(
        Attempt.objects.order_by("user_id", "exercise_id", "id").values_list(
            "user_id", "exercise_id", "correct", "applied"
        )
    )


FAULTS = ["down", "slow", "garbage", "failing"]


@pytest.mark.django_db
@pytest.mark.parametrize("fault", FAULTS)
def test_a_token_whose_verdict_is_cached_keeps_being_served_while_the_users_service_fails(
    users_double: UsersServiceDouble, fault: str
) -> None:
    known = bearer_client("u4")
    first = known.patch("/scores", {"exercise_id": 1, "correct": False}, format="json")
    assert first.status_code == 201

    users_double.switch(fault)
    during = known.patch("/scores", {"exercise_id": 1, "correct": True}, format="json")
    read = known.get("/scores/user/1")
    newcomer = bearer_client("u5").patch(
        "/scores", {"exercise_id": 1, "correct": True}, format="json"
    )

    assert (during.status_code, during.json()["correct"], during.json()["attempts"]) == (
        200,
        True,
        2,
    )
    assert (read.status_code, read.json()) == (200, during.json())
    assert_users_service_unavailable(newcomer)
    assert stored() == [(4, 1, True)]
    assert logged() == [(4, 1, False, True), (4, 1, True, True)]

    users_double.switch("up")  # recovery, same process: the newcomer is served
    again = bearer_client("u5").patch("/scores", {"exercise_id": 1, "correct": True}, format="json")

    assert again.status_code == 201
    assert stored() == [(4, 1, True), (5, 1, True)]
    assert users_double.received == ["up", *([] if fault == "down" else [fault]), "up"]


FLAPPING = ["up", "down", "up", "slow", "up", "garbage", "failing", "up", "down", "down", "up"]


@pytest.mark.django_db
def test_a_flapping_users_service_answers_each_request_by_its_state_at_the_time(
    users_double: UsersServiceDouble,
) -> None:
    answers = []
    for n, state in enumerate(FLAPPING, start=1):
        users_double.switch(state)
        response = bearer_client(f"u{100 + n}").patch(  # a new token: no cached verdict
            "/scores", {"exercise_id": n, "correct": True}, format="json"
        )
        answers.append((state, response.status_code))
        if response.status_code == 503:
            assert_users_service_unavailable(response)

    assert answers == [(state, 201 if state == "up" else 503) for state in FLAPPING]
    served = [(100 + n, n, True) for n, state in enumerate(FLAPPING, start=1) if state == "up"]
    assert stored() == served
    assert logged() == [(*score, True) for score in served]
    assert users_double.received == [state for state in FLAPPING if state != "down"]


# === Under bin/serve, production settings, a scratch PostgreSQL database =====================

needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="bin/serve fault tests need PostgreSQL: set DATABASE_TEST_URL=postgres://...",
)
CHECKER = "evalsvc-fault-checker"  # application_name of this module's own connections
STATEMENT_TIMEOUT = 1  # seconds: DATABASE_STATEMENT_TIMEOUT of the live service
USERS_SERVICE_TIMEOUT = 1  # seconds
CLIENT_TIMEOUT = 2  # seconds a client may stall (nginx)
WORKERS = 3


@dataclass
class LiveService:
    """evalsvc under bin/serve on ``port``, on the scratch database ``database``, with its own
    Redis server and the users service double."""

    port: int
    database: str
    server_conninfo: str  # the maintenance database of the same server
    conninfo: str  # the scratch database
    log: Path
    process: subprocess.Popen[bytes]
    redis: subprocess.Popen[bytes]
    redis_port: int
    users: UsersServiceDouble

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, application_name=CHECKER, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def terminate_backends(self) -> int:
        """Terminate the service's connections (those to the scratch database, not ours);
        return how many, once they are gone."""
        with psycopg.connect(self.server_conninfo, autocommit=True) as conn:
            pids = [
                pid
                for (pid,) in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                    "AND application_name <> %s AND pid <> pg_backend_pid()",
                    [self.database, CHECKER],
                ).fetchall()
            ]
            conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
            deadline = time.monotonic() + 10
            while conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, "terminated backends did not go"
                time.sleep(0.05)
        return len(pids)

    def service_backends(self) -> int:
        [(count,)] = self.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name <> %s",
            [self.database, CHECKER],
        )
        return int(count)

    def redis_keys(self, pattern: str) -> list[bytes]:
        import redis

        client = redis.Redis(port=self.redis_port, socket_timeout=2)
        try:
            return sorted(client.keys(pattern))
        finally:
            client.close()


def _database_settings() -> dict[str, Any]:
    db = django_settings.DATABASES["default"]
    return {
        "host": db.get("HOST") or "127.0.0.1",
        "port": str(db.get("PORT") or 5432),
        "user": db.get("USER") or "postgres",
        "password": db.get("PASSWORD") or "",
    }


def _conninfo(dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(**{**_database_settings(), "dbname": dbname})


def _database_url(dbname: str) -> str:
    db = _database_settings()
    credentials = urllib.parse.quote(db["user"], safe="")
    if db["password"]:
        credentials += ":" + urllib.parse.quote(db["password"], safe="")
    return f"postgres://{credentials}@{db['host']}:{db['port']}/{dbname}"


def _wait_until_up(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if request(port, "GET", "/ready").status == 200:
                return
        except OSError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGCONT)  # a stopped Redis must hear the TERM
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """Migrate a scratch database, start a Redis server, the users service double and
    bin/serve (production settings, 3 sync workers behind nginx) on it; stop them and drop the
    database afterwards."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    tmp = tmp_path_factory.mktemp("faults")
    database = f"evalsvc_faults_{os.getpid()}"
    server_conninfo = _conninfo("postgres")
    with psycopg.connect(server_conninfo, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")
    port, redis_port = free_port(), free_port()
    users = UsersServiceDouble(port=free_port())
    users.switch("up")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SERVE_USE_PATH": "1",
        "DJANGO_SETTINGS_MODULE": "evalsvc.settings.production",
        "SECRET_KEY": "faults-test-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DATABASE_URL": _database_url(database),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "USERS_SERVICE_URL": f"http://127.0.0.1:{users.port}",
        "USERS_SERVICE_TIMEOUT": str(USERS_SERVICE_TIMEOUT),
        "DATABASE_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
        "CLIENT_TIMEOUT": str(CLIENT_TIMEOUT),
        "CACHE_URL": f"redis://127.0.0.1:{redis_port}/0",
        "THROTTLE_RATE_USER": "100000000/min",
        "THROTTLE_RATE_ANON": "100000000/min",
        "WEB_CONCURRENCY": str(WORKERS),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    for name in (
        "CONN_MAX_AGE",
        "DATABASE_REPLICA_URL",
        "DATABASE_LISTEN_URL",
        "LOG_FORMAT",
        "TRUSTED_PROXY_COUNT",
    ):
        env.pop(name, None)  # production's defaults: persistent connections, JSON logs
    log = tmp / "serve.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=REPO, env=env, check=True, capture_output=True,
        )  # fmt: skip
        with log.open("wb") as out:
            redis_server = subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=out, start_new_session=True,
            )  # fmt: skip
            processes.append(redis_server)
            server = subprocess.Popen(
                ["bin/serve"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            processes.append(server)
        _wait_until_up(port, server, log)
        yield LiveService(
            port=port,
            database=database,
            server_conninfo=server_conninfo,
            conninfo=_conninfo(database),
            log=log,
            process=server,
            redis=redis_server,
            redis_port=redis_port,
            users=users,
        )
    finally:
        users.released.set()
        users.stop()
        for process in processes:
            _stop(process)
        with psycopg.connect(server_conninfo, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


# --- HTTP, plainly and over raw sockets -----------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    timeout: float = 30,
) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return Answer(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def parse_answer(raw: bytes) -> Answer:
    """An HTTP/1.1 response read to the end of the connection, its body de-chunked."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        chunks, rest = [], body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            if int(size, 16) == 0:
                break
            chunks.append(rest[: int(size, 16)])
            rest = rest[int(size, 16) + 2 :]
        body = b"".join(chunks)
    return Answer(int(status_line.split()[1]), headers, body)


def raw_request_head(method: str, path: str, token: str, length: int | None) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        "Connection: close",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def write_body(exercise_id: int, correct: bool = True, **extra: Any) -> bytes:
    return json.dumps({"exercise_id": exercise_id, "correct": correct, **extra}).encode()


# --- Stored state ---------------------------------------------------------------------------


def inconsistencies(live: LiveService) -> dict[str, list[tuple[Any, ...]]]:
    """Every way the stored state could be inconsistent, each with the offending rows (all
    empty when it is consistent)."""
    return {
        # attempts counts the applied attempts in the log
        "attempts_not_logged": live.query(
            "SELECT s.id, s.attempts, count(a.id) FILTER (WHERE a.applied) FROM scores s "
            "LEFT JOIN score_attempts a ON a.score_id = s.id GROUP BY s.id "
            "HAVING s.attempts <> count(a.id) FILTER (WHERE a.applied)"
        ),
        # each score was created by exactly one logged attempt
        "creation_not_logged": live.query(
            "SELECT s.id FROM scores s WHERE (SELECT count(*) FROM score_attempts a "
            "WHERE a.score_id = s.id AND a.created_score) <> 1"
        ),
        # no log row without its score, or logged under another (user, exercise)
        "log_rows_without_score": live.query(
            "SELECT a.id FROM score_attempts a LEFT JOIN scores s ON s.id = a.score_id "
            "WHERE s.id IS NULL OR (s.user_id, s.exercise_id) <> (a.user_id, a.exercise_id)"
        ),
        # the score is what its latest applied attempt made it
        "score_not_its_latest_attempt": live.query(
            "SELECT s.id FROM scores s WHERE s.last_attempted_at IS DISTINCT FROM "
            "(SELECT max(a.attempted_at) FROM score_attempts a "
            " WHERE a.score_id = s.id AND a.applied) "
            "OR NOT EXISTS (SELECT 1 FROM score_attempts a WHERE a.score_id = s.id "
            " AND a.applied AND a.attempted_at = s.last_attempted_at AND a.correct = s.correct)"
        ),
        # the trigger-kept statistics agree with the scores
        "stats_disagree": live.query(
            "SELECT coalesce(s.exercise_id, t.exercise_id) FROM "
            "(SELECT exercise_id, count(*) AS attempted, count(*) FILTER (WHERE correct) "
            " AS correct FROM scores GROUP BY exercise_id) s FULL JOIN "
            "(SELECT exercise_id, sum(attempted) AS attempted, sum(correct) AS correct "
            " FROM exercise_stats GROUP BY exercise_id HAVING sum(attempted) > 0) t "
            "ON s.exercise_id = t.exercise_id "
            "WHERE (s.attempted, s.correct) IS DISTINCT FROM (t.attempted, t.correct)"
        ),
    }


CONSISTENT: dict[str, list[tuple[Any, ...]]] = {
    "attempts_not_logged": [],
    "creation_not_logged": [],
    "log_rows_without_score": [],
    "score_not_its_latest_attempt": [],
    "stats_disagree": [],
}


def scores_of(live: LiveService, user_id: int) -> list[tuple[int, bool, int]]:
    """The user's stored scores as (exercise_id, correct, attempts)."""
    return [
        (exercise, correct, attempts)
        for exercise, correct, attempts in live.query(
            "SELECT exercise_id, correct, attempts FROM scores WHERE user_id = %s "
            "ORDER BY exercise_id",
            [user_id],
        )
    ]


def logged_attempt_ids(live: LiveService) -> set[str]:
    return {
        str(attempt_id)
        for (attempt_id,) in live.query(
            "SELECT attempt_id FROM score_attempts WHERE attempt_id IS NOT NULL"
        )
    }


def assert_still_answering(live: LiveService, user_id: int) -> None:
    """The service answers a write and a read of a fresh (user, exercise 99)."""
    wrote = request(
        live.port, "PATCH", "/scores", {"exercise_id": 99, "correct": True}, f"u{user_id}"
    )
    read = request(live.port, "GET", "/scores/user/99", token=f"u{user_id}")
    assert (wrote.status, read.status, read.json()) == (201, 200, wrote.json()), live.log_tail()


def assert_database_unavailable(answer: Answer) -> None:
    assert (answer.status, answer.json()) == (503, DATABASE_DOWN)
    # the breaker's pause, or what is left of it while it is open
    assert 1 <= int(answer.headers["retry-after"]) <= int(RETRY_AFTER), answer.headers
    assert answer.headers["content-type"] == "application/json"


# --- PostgreSQL connections killed ----------------------------------------------------------


@needs_postgresql
def test_after_its_connections_are_killed_the_service_answers_the_next_requests(
    live: LiveService,
) -> None:
    user = 201
    answers: list[tuple[str, Answer]] = []
    for round_ in range(3):
        for _ in range(6):  # both workers hold a persistent connection
            assert request(live.port, "GET", "/ready").status == 200
        assert live.service_backends() >= 1
        assert live.terminate_backends() >= 1
        for n in range(4):
            attempt_id = str(uuid.uuid4())
            body = {"exercise_id": 4 * round_ + n + 1, "correct": True, "attempt_id": attempt_id}
            answers.append((attempt_id, request(live.port, "PATCH", "/scores", body, f"u{user}")))
            answers.append(("", request(live.port, "GET", "/ready")))

    for _, answer in answers:
        if answer.status == 503:
            assert_database_unavailable(answer)
        else:
            assert answer.status in (200, 201), (answer, live.log_tail())
    written = [attempt_id for attempt_id, answer in answers if attempt_id and answer.status == 201]
    refused = [attempt_id for attempt_id, answer in answers if attempt_id and answer.status == 503]
    assert logged_attempt_ids(live) >= set(written)
    assert logged_attempt_ids(live).isdisjoint(refused)  # refused before it ran: not written
    assert [status for _, status in _statuses(answers[-4:])] == [201, 200, 201, 200]
    assert inconsistencies(live) == CONSISTENT
    assert_still_answering(live, user)
    print(f"\nafter 3 kills: {len(answers)} requests, {len(refused)} writes answered 503")


def _statuses(answers: list[tuple[str, Answer]]) -> list[tuple[str, int]]:
    return [(attempt_id, answer.status) for attempt_id, answer in answers]


@needs_postgresql
def test_under_load_killed_connections_give_2xx_or_503_answers_and_a_consistent_state(
    live: LiveService,
) -> None:
    users, exercises, kills, clients = range(301, 307), range(1, 6), 4, 6
    for user in users:  # every worker has every verdict, so the load is on the database
        for _ in range(4):
            request(live.port, "GET", "/scores/summary", token=f"u{user}")
    load_over = threading.Event()
    results: list[tuple[str, int | str, Answer | None]] = []  # (attempt_id, status, answer)

    def client(seed: int) -> None:
        """Upserts one after the other until the killing is over (60 s at most)."""
        rng = random.Random(seed)
        deadline = time.monotonic() + 60
        while not load_over.is_set() and time.monotonic() < deadline:
            attempt_id = str(uuid.uuid4())
            body = {
                "exercise_id": rng.choice(exercises),
                "correct": rng.random() < 0.5,
                "attempt_id": attempt_id,
            }
            try:
                answer = request(live.port, "PATCH", "/scores", body, f"u{rng.choice(users)}")
            except OSError as exc:
                results.append((attempt_id, type(exc).__name__, None))
            else:
                results.append((attempt_id, answer.status, answer))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    killed = []
    try:
        for _ in range(kills):
            time.sleep(0.3)
            killed.append(live.terminate_backends())
        time.sleep(0.3)
    finally:
        load_over.set()
        for thread in threads:
            thread.join()

    statuses = {status for _, status, _ in results}
    assert statuses <= {200, 201, 503}, (statuses, live.log_tail())
    for _, status, answer in results:
        if status == 503:
            assert_database_unavailable(answer)
    assert all(killed), killed  # each time, the service had connections to kill
    ok = [attempt_id for attempt_id, status, _ in results if status in (200, 201)]
    assert logged_attempt_ids(live) >= set(ok)
    assert inconsistencies(live) == CONSISTENT
    assert_still_answering(live, users[0])
    print(  # the figures quoted in docs/reliability.md
        f"\n{len(results)} upserts, {len(ok)} 2xx, {len(results) - len(ok)} 503, "
        f"backends killed {killed}"
    )


# --- Clients that misbehave -----------------------------------------------------------------


@needs_postgresql
def test_half_a_body_then_half_closed_writes_nothing_and_holds_no_worker(
    live: LiveService,
) -> None:
    user = 401
    body = write_body(1)  # complete JSON: only the missing bytes make it incomplete
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(raw_request_head("PATCH", "/scores", f"u{user}", len(body) + 40) + body)
        sock.shutdown(socket.SHUT_WR)
        answer = read_to_end(sock)

    # nginx reads bodies before a worker sees them: a body that ends early is dropped there
    # (nginx's "client prematurely closed connection") and the connection closed unanswered.
    assert answer == b""
    assert scores_of(live, user) == []
    assert_still_answering(live, user)


@needs_postgresql
@pytest.mark.parametrize("sent", ["all but the end", "complete json, short of its length"])
def test_half_a_body_then_gone_writes_nothing(live: LiveService, sent: str) -> None:
    user = 402 if sent == "all but the end" else 403
    body = write_body(1)
    if sent == "all but the end":
        head, part = raw_request_head("PATCH", "/scores", f"u{user}", len(body)), body[:-5]
    else:
        head, part = raw_request_head("PATCH", "/scores", f"u{user}", len(body) + 40), body
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(head + part)
    time.sleep(1)  # the worker reads to the end of what was sent, and answers nobody

    assert scores_of(live, user) == []
    assert_still_answering(live, user)


@needs_postgresql
def test_a_body_over_the_limit_is_a_413_json_and_writes_nothing(live: LiveService) -> None:
    user = 411
    length = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(raw_request_head("PATCH", "/scores", f"u{user}", length) + b'{"scores": [')
        answer = parse_answer(read_to_end_or_answer(sock))  # nginx resets once it has answered

    assert (answer.status, answer.headers["content-type"], answer.json()) == (
        413,
        "application/json",
        {"detail": f"The request body is larger than {length - 1} bytes."},
    )
    assert scores_of(live, user) == []
    assert_still_answering(live, user)


@needs_postgresql
def test_a_request_line_over_the_fronts_limit_is_a_json_414(live: LiveService) -> None:
    path = "/scores?" + "&".join(["exercise_id=1"] * 300)  # a request line of 4,220 bytes
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(raw_request_head("GET", path, "u441", None))
        answer = parse_answer(read_to_end(sock))

    assert (answer.status, answer.headers["content-type"], answer.json()) == (
        414,
        "application/json",
        {"detail": "Request line too long."},
    )
    assert_still_answering(live, 441)


@needs_postgresql
def test_a_body_dribbled_slowly_is_applied_once(live: LiveService) -> None:
    user = 421
    body = write_body(1, attempt_id=str(uuid.uuid4()))
    pieces = [body[i : i + 8] for i in range(0, len(body), 8)]
    pause = CLIENT_TIMEOUT / 4  # each gap within the front's limit; the whole, well beyond
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(raw_request_head("PATCH", "/scores", f"u{user}", len(body)))
        for piece in pieces:
            time.sleep(pause)
            sock.sendall(piece)
        answer = parse_answer(read_to_end_or_answer(sock))

    assert (answer.status, answer.json()["exercise_id"], answer.json()["attempts"]) == (201, 1, 1)
    assert scores_of(live, user) == [(1, True, 1)]
    assert_still_answering(live, user)


@needs_postgresql
def test_a_body_stalled_past_the_client_timeout_is_dropped_and_writes_nothing(
    live: LiveService,
) -> None:
    user = 422
    body = write_body(1)
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(raw_request_head("PATCH", "/scores", f"u{user}", len(body)) + body[:4])
        time.sleep(CLIENT_TIMEOUT + 1)
        with pytest.raises(ConnectionResetError):  # nginx resets a timed-out client's connection
            read_to_end(sock)

    assert scores_of(live, user) == []
    assert_still_answering(live, user)


@needs_postgresql
@pytest.mark.parametrize("when", ["mid-headers", "after the request, before the answer"])
def test_a_client_that_disconnects_leaves_all_or_nothing(live: LiveService, when: str) -> None:
    user = 431 if when == "mid-headers" else 432
    body = write_body(1)
    message = raw_request_head("PATCH", "/scores", f"u{user}", len(body)) + body
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(message[:40] if when == "mid-headers" else message)
    deadline = time.monotonic() + 5
    expected = [] if when == "mid-headers" else [(1, True, 1)]
    while scores_of(live, user) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # and nothing more arrives

    assert scores_of(live, user) == expected
    assert inconsistencies(live) == CONSISTENT
    assert_still_answering(live, user)


@needs_postgresql
def test_a_chunked_body_is_read_like_any_other_and_over_the_limit_is_a_413(
    live: LiveService,
) -> None:
    user = 451

    def chunked(body: bytes) -> Answer:
        head = (
            f"PATCH /scores HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer u{user}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        pieces = b"".join(
            f"{len(body[i : i + 7]):x}\r\n".encode() + body[i : i + 7] + b"\r\n"
            for i in range(0, len(body), 7)
        )
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(head + pieces + b"0\r\n\r\n")
            return parse_answer(read_to_end(sock))

    applied = chunked(b'{"exercise_id":77,"correct":true}')
    too_big = chunked(json.dumps({"exercise_id": 78, "pad": "x" * (1 << 20)}).encode())

    assert (applied.status, applied.json()["exercise_id"]) == (201, 77)
    assert (too_big.status, too_big.headers["content-type"]) == (413, "application/json")
    assert scores_of(live, user) == [(77, True, 1)]


# --- Deadlines: nothing one dependency or one client does stops the service -------------------


@dataclass
class HealthWatch:
    """Asks /health every 0.1 s on its own connections while it runs: the longest answer, and
    the answers that were not a quick 200."""

    port: int
    longest: float = 0.0
    asked: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthWatch:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            started = time.monotonic()
            try:
                answer = request(self.port, "GET", "/health", timeout=2)
                outcome = "" if answer.status == 200 else str(answer.status)
            except OSError as exc:
                outcome = type(exc).__name__
            took = time.monotonic() - started
            self.asked += 1
            self.longest = max(self.longest, took)
            if outcome or took >= 1:
                self.failures.append(f"{outcome or 'slow'} {took:.2f}s")


def timed(
    port: int, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[float, Answer]:
    started = time.monotonic()
    answer = request(port, method, path, body, token, timeout=30)
    return time.monotonic() - started, answer


def in_parallel(calls: list[Any], threads: int) -> list[Any]:
    """Each call (a no-argument function) run on a pool of ``threads``; their results."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda call: call(), calls))


@needs_postgresql
def test_a_table_locked_past_the_statement_deadline_gives_quick_json_503s(live: LiveService):
    """scores locked for 6 s (a migration gone wrong): every request that needs it is a JSON
    503 with Retry-After within the deadline (then at once, the breaker open), /health answers
    within a second throughout, and the service is back once the lock goes."""
    user = 501
    assert (
        request(
            live.port, "PATCH", "/scores", {"exercise_id": 1, "correct": True}, f"u{user}"
        ).status
        == 201
    )
    locker = psycopg.connect(live.conninfo, application_name=CHECKER)
    answers: list[tuple[float, Answer]] = []
    with HealthWatch(live.port) as health:
        locker.execute("LOCK TABLE scores IN ACCESS EXCLUSIVE MODE")
        held_until = time.monotonic() + 6
        while time.monotonic() < held_until - 1:
            answers += in_parallel(
                [lambda: timed(live.port, "GET", "/scores/user", token=f"u{user}")] * 8
                + [
                    lambda: timed(
                        live.port,
                        "PATCH",
                        "/scores",
                        {"exercise_id": 2, "correct": True},
                        f"u{user}",
                    )
                ]
                * 4,
                threads=12,
            )
        time.sleep(max(0.0, held_until - time.monotonic()))
        locker.rollback()
        locker.close()
        deadline = time.monotonic() + 15  # the breaker's pause, then the database again
        while request(live.port, "GET", "/scores/user", token=f"u{user}").status != 200:
            assert time.monotonic() < deadline, live.log_tail()
            time.sleep(0.5)

    assert answers
    for took, answer in answers:
        assert_database_unavailable(answer)
        assert took < STATEMENT_TIMEOUT * WORKERS + 2, (took, answer)  # queued at most a round
    assert health.failures == [], health.failures
    assert health.asked >= 50
    assert scores_of(live, user) == [(1, True, 1)]  # the writes refused wrote nothing
    assert inconsistencies(live) == CONSISTENT
    print(
        f"\nlocked table: {len(answers)} answers, longest {max(t for t, _ in answers):.2f}s, "
        f"/health longest {health.longest:.3f}s over {health.asked}"
    )


@needs_postgresql
def test_redis_stopped_and_resumed_the_api_keeps_serving_and_returns_to_it(live: LiveService):
    user = 511
    assert request(live.port, "GET", "/scores/user", token=f"u{user}").status == 200
    live.redis.send_signal(signal.SIGSTOP)
    answers: list[tuple[float, Answer]] = []
    try:
        with HealthWatch(live.port) as health:
            for n in range(30):
                answers.append(timed(live.port, "GET", "/scores/user", token=f"u{user}"))
                answers.append(
                    timed(
                        live.port,
                        "PATCH",
                        "/scores",
                        {"exercise_id": n + 1, "correct": True},
                        f"u{600 + n}",
                    )
                )
    finally:
        live.redis.send_signal(signal.SIGCONT)
        resumed = time.monotonic()

    assert {answer.status for _, answer in answers} <= {200, 201}, [
        a for _, a in answers if a.status >= 300
    ][:3]
    # each waited on Redis at most a few calls' deadline (0.25 s), then not at all (breaker)
    assert max(took for took, _ in answers) < 2, sorted(took for took, _ in answers)[-5:]
    assert sum(took for took, _ in answers[10:]) < 5
    assert health.failures == []
    verdicts_before = live.redis_keys("*verdict*")
    deadline = time.monotonic() + 20  # the breaker's pause (10 s), then Redis again
    while True:
        request(live.port, "GET", "/scores/user", token=f"u{700 + int(time.monotonic())}")
        if len(live.redis_keys("*verdict*")) > len(verdicts_before):
            break
        assert time.monotonic() < deadline, "the service did not return to Redis"
        time.sleep(0.5)
    # Every worker's breaker has passed its pause: the next tests find Redis in use everywhere.
    time.sleep(max(0.0, resumed + redis_breaker._recovery_timeout + 0.5 - time.monotonic()))


@needs_postgresql
def test_a_slow_users_service_and_many_unknown_tokens_leave_known_callers_served(
    live: LiveService,
) -> None:
    known = 521
    verdict_key = f"*{hashlib.sha256(f'u{known}'.encode()).hexdigest()}*"
    deadline = time.monotonic() + 15
    while not live.redis_keys(verdict_key):  # shared by every worker, not in one's memory only
        assert request(live.port, "GET", "/scores/user", token=f"u{known}").status == 200
        assert time.monotonic() < deadline, "the verdict did not reach Redis"
        time.sleep(0.2)
    live.users.switch("slow:3")  # past USERS_SERVICE_TIMEOUT (1 s)
    try:
        with HealthWatch(live.port) as health:
            unknown = [
                (lambda n=n: timed(live.port, "GET", "/scores/user", token=f"u{9000 + n}"))
                for n in range(24)
            ]
            known_calls = [lambda: timed(live.port, "GET", "/scores/user", token=f"u{known}")] * 12
            answers = in_parallel(unknown + known_calls, threads=16)
    finally:
        live.users.switch("up")

    for took, answer in answers[:24]:
        assert_users_service_unavailable_answer(answer)
        assert took < USERS_SERVICE_TIMEOUT + 2, took
    for took, answer in answers[24:]:
        assert answer.status == 200, answer
        assert took < USERS_SERVICE_TIMEOUT + 1, took  # a worker is always left for them
    assert health.failures == []


@needs_postgresql
def test_three_hundred_slow_clients_hold_no_worker(live: LiveService) -> None:
    """100 clients sending their headers a byte a second, 100 sending a body a byte a second,
    100 not reading a large answer: normal callers are served and /health answers within a
    second throughout."""
    staff = live.query("SELECT 1")  # the database is up
    user = 531
    for n in range(50):
        request(live.port, "PATCH", "/scores", {"exercise_id": n + 1, "correct": True}, f"u{user}")
    stalled: list[socket.socket] = []
    stop = threading.Event()

    def dribble(sock: socket.socket, data: bytes) -> None:
        for byte in data:
            if stop.wait(1):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    try:
        for _ in range(100):
            headers = socket.create_connection(("127.0.0.1", live.port), timeout=5)
            headers.sendall(b"GET /scores/user HTTP/1.1\r\n")
            threading.Thread(
                target=dribble, args=(headers, b"Host: 127.0.0.1\r\n" * 20), daemon=True
            ).start()
            body = socket.create_connection(("127.0.0.1", live.port), timeout=5)
            body.sendall(raw_request_head("PATCH", "/scores", f"u{user}", 100_000))
            threading.Thread(target=dribble, args=(body, b"x" * 100), daemon=True).start()
            reader = socket.socket()
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.connect(("127.0.0.1", live.port))
            reader.sendall(
                raw_request_head("GET", "/scores/user?page_size=1000", f"u{user}", None) * 20
            )
            stalled += [headers, body, reader]
        with HealthWatch(live.port) as health:
            answers = []
            until = time.monotonic() + 3  # long enough for /health to be asked many times
            while len(answers) < 40 or time.monotonic() < until:
                answers.append(timed(live.port, "GET", "/scores/user", token=f"u{user}"))
    finally:
        stop.set()
        for sock in stalled:
            sock.close()

    assert staff == [(1,)]
    assert [answer.status for _, answer in answers] == [200] * len(answers)
    assert max(took for took, _ in answers) < 5  # served: the spec bounds /health's time only
    assert health.failures == []
    assert health.asked >= 5


def read_to_end_or_answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes or its answer is complete (keep-alive)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
        dict(
            line.lower().split(b": ", 1)
            for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        ).get(b"content-length", b"0")
    ):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def assert_users_service_unavailable_answer(answer: Answer) -> None:
    assert answer.status == 503, answer
    assert answer.json()["detail"] in (
        USERS_SERVICE_DOWN["detail"],
        "The users service is busy; retry later.",
    )
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.headers["content-type"] == "application/json"
