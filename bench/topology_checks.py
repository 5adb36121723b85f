"""The checks of bench/topology.sh against a running topology, one subcommand each.

Each check prints lines ``PASS  <what>`` or ``FAIL  <what>`` (and ``      <detail>`` lines),
and exits 1 if any failed. Requests go through the load balancer (``--base``); the database
is read directly (``--primary``, ``--replica``) to see what was really stored.

    settings           evalsvc's own connections (its settings, as production builds them):
                       through PgBouncer to the primary, directly to the replica
    smoke              every endpoint once per caller kind (anonymous, user, privileged)
    read-your-writes   under the replica's apply delay: the writer sees its write at once,
                       another client reads the replica's old value until the delay has passed
    events             GET /events?wait= on each instance at once, woken by one write
    wrk                wrk with bench/wrk/mixed.lua: throughput, latency, errors, CPU per part
    load               this script's own load, every answer recorded (JSON lines), for:
    verify NAME        what the recorded answers and the database say after a fault
                       (replica, pgbouncer, instance)
    haproxy, haproxy-up   a command to HAProxy's admin socket; whether a server is UP

Runs with the project's virtualenv (Django and psycopg for the database reads).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

BENCH = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PRIVILEGED_READER = "Bearer admin"  # a users-service admin (bench/fake_users.py); never writes


# --- results ---------------------------------------------------------------------------------
class Report:
    """PASS/FAIL lines; ``failed`` once any check failed."""

    def __init__(self) -> None:
        self.failed = False

    def check(self, ok: bool, what: str, *details: str) -> bool:
        print(f"{'PASS' if ok else 'FAIL'}  {what}", flush=True)
        for detail in details:
            print(f"      {detail}", flush=True)
        self.failed |= not ok
        return ok

    def note(self, text: str) -> None:
        print(f"      {text}", flush=True)

    def exit(self) -> None:
        sys.exit(1 if self.failed else 0)


# --- HTTP ------------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int  # 0: no answer (connection refused, reset, timed out)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def is_json(self) -> bool:
        return self.headers.get("content-type", "").startswith("application/json")


class Client:
    """One keep-alive HTTP connection to the load balancer, reopened after a failure."""

    def __init__(self, base: str, authorization: str | None = None, timeout: float = 15) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.authorization = authorization
        self.timeout = timeout
        self.connection: http.client.HTTPConnection | None = None

    def call(
        self, method: str, path: str, body: Any = None, authorization: str | None = None
    ) -> Answer:
        headers = {"Host": f"{self.host}:{self.port}", "Accept": "application/json"}
        token = authorization if authorization is not None else self.authorization
        if token:
            headers["Authorization"] = token
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: once more
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
            try:
                self.connection.request(method, path, body=payload, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                stale = isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError)
                if attempt == 1 and stale and method in ("GET", "HEAD"):
                    continue
                return Answer(0, {"error": f"{type(exc).__name__}: {exc}"})
            answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
            if response.will_close:
                self.close()
            return answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def score_id(user: int, exercise: int, users: int) -> int:
    """The seed's layout: id = (exercise - 1) * users + user."""
    return (exercise - 1) * users + user


def database_row(url: str, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    with psycopg.connect(url, connect_timeout=3, autocommit=True) as connection:
        return connection.execute(sql, params).fetchone()


# --- settings --------------------------------------------------------------------------------
def check_settings(args: argparse.Namespace) -> None:
    """evalsvc's own connections, built by its settings from the environment topology.sh set."""
    sys.path.insert(0, str(BENCH.parent))
    import django
    from django.db import connections

    django.setup()
    report = Report()
    default, replica = connections["default"], connections["replica"]
    for alias, connection in (
        ("default", default),
        ("replica", replica),
        ("listen", connections["listen"]),
    ):
        options = connection.settings_dict["OPTIONS"]
        print(
            f"      {alias}: {connection.settings_dict['HOST']}:{connection.settings_dict['PORT']}"
            f" CONN_MAX_AGE={connection.settings_dict['CONN_MAX_AGE']}"
            f" DISABLE_SERVER_SIDE_CURSORS="
            f"{connection.settings_dict['DISABLE_SERVER_SIDE_CURSORS']}"
            f" prepared statements={'prepare_threshold' in options}"
            f" options={options.get('options')!r}"
        )
    with default.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
            " inet_server_port(), pg_is_in_recovery()"
        )
        statement, lock, port, recovery = cursor.fetchone()
    bouncer_port = urlsplit(args.bouncer).port
    report.check(
        str(default.settings_dict["PORT"]) == str(bouncer_port)
        and port == urlsplit(args.primary).port,
        f"DATABASE_URL goes through PgBouncer (:{bouncer_port}) to the primary (:{port},"
        f" in recovery: {recovery}); PgBouncer accepted the connection (options ignored)",
    )
    report.check(
        (statement, lock) == ("5s", "5s"),
        f"through PgBouncer statement_timeout={statement} lock_timeout={lock}"
        " (the role's settings: ALTER ROLE evalsvc SET ...)",
    )
    report.check(
        "prepare_threshold" not in default.settings_dict["OPTIONS"],
        "PREPARED_STATEMENTS=false: no statement prepared on a pooled server connection",
    )
    with replica.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('statement_timeout'), pg_is_in_recovery(),"
            " current_setting('recovery_min_apply_delay')"
        )
        statement, recovery, delay = cursor.fetchone()
    report.check(
        recovery and statement == "5s",
        f"DATABASE_REPLICA_URL is a standby (in recovery: {recovery},"
        f" recovery_min_apply_delay={delay}), statement_timeout={statement} (from options)",
    )
    report.exit()


# --- smoke -----------------------------------------------------------------------------------
CALLERS = ("anonymous", "user", "privileged")


def check_smoke(args: argparse.Namespace) -> None:
    """Every route once per caller kind, the statuses of the contract's table."""
    report = Report()
    users, exercises = args.users, args.exercises
    user = 7
    mine = score_id(user, 1, users)
    tokens = {
        "anonymous": None,
        "user": f"Bearer u{user}",
        "privileged": f"Token {args.staff_token}",
    }
    clients = {kind: Client(args.base, token) for kind, token in tokens.items()}
    created: dict[str, int] = {}
    q = f"user_id={user}"
    any_caller, api, privileged_only = (200, 200, 200), (401, 200, 200), (401, 403, 200)

    def new_score(kind: str) -> dict[str, Any]:
        return {
            "user_id": user,
            "exercise_id": exercises + 1 + CALLERS.index(kind),
            "correct": True,
        }

    rows: list[tuple[str, str, Any, tuple[int, int, int]]] = [
        ("GET", "/health", None, any_caller),
        ("GET", "/ready", None, any_caller),
        ("GET", "/scores/ping", None, any_caller),
        ("GET", "/schema", None, any_caller),
        ("GET", "/docs", None, any_caller),
        ("GET", "/redoc", None, any_caller),
        ("GET", f"/scores?{q}", None, api),
        ("POST", "/scores", new_score, (401, 201, 201)),
        ("PATCH", "/scores", {"user_id": user, "exercise_id": 1, "correct": True}, api),
        ("GET", f"/scores/{mine}", None, api),
        ("PUT", f"/scores/{mine}", {"correct": True}, api),
        ("PATCH", f"/scores/{mine}", {"correct": False}, api),
        ("GET", f"/scores/{mine}/attempts", None, api),
        ("DELETE", "/scores/{created}", None, (401, 403, 204)),
        ("GET", f"/scores/user?{q}", None, api),
        ("GET", f"/scores/user/1?{q}", None, api),
        ("PUT", f"/scores/user/1?{q}", {"correct": True}, api),
        ("GET", f"/scores/user/1/attempts?{q}", None, api),
        ("GET", f"/scores/summary?{q}", None, api),
        ("GET", "/scores/stats/exercises", None, api),
        (
            "POST",
            "/scores/bulk",
            {"scores": [{"user_id": user, "exercise_id": 2, "correct": True}]},
            privileged_only,
        ),
        ("GET", f"/scores/export.csv?{q}", None, privileged_only),
        ("GET", "/events?after=0&limit=5", None, privileged_only),
        ("GET", "/metrics", None, (401, 401, 401)),
        ("GET", "/admin/", None, (302, 302, 302)),
        ("GET", "/no/such/route", None, (404, 404, 404)),
    ]
    for method, path, body, expected in rows:
        seen = []
        problems = []
        for kind, want in zip(CALLERS, expected, strict=True):
            actual_path = path.format(created=created.get("privileged", 0))
            payload = body(kind) if callable(body) else body
            answer = clients[kind].call(method, actual_path, payload)
            if method == "POST" and path == "/scores" and answer.status == 201:
                created[kind] = answer.json()["id"]
            seen.append(f"{kind} {answer.status}")
            if answer.status != want:
                problems.append(f"{kind}: {answer.status}, expected {want}: {answer.body[:200]!r}")
            elif answer.status >= 400 and not answer.is_json:
                problems.append(f"{kind}: a {answer.status} that is not JSON")
        if "{created}" in path:
            path = path.replace("{created}", "<the privileged caller's new score>")
        report.check(not problems, f"smoke {method:6} {path}: {', '.join(seen)}", *problems)
    metrics = Client(args.base, f"Bearer {args.metrics_token}").call("GET", "/metrics")
    report.check(
        metrics.status == 200 and b"evalsvc" in metrics.body,
        f"smoke GET    /metrics with METRICS_TOKEN: {metrics.status}",
    )
    report.exit()


# --- read-your-writes ------------------------------------------------------------------------
def check_read_your_writes(args: argparse.Namespace) -> None:
    """A write, then at once a read by the writer (pinned to the primary) and by another client
    (on the replica, behind by the apply delay); later the other client sees it too."""
    report = Report()
    lag = float(args.lag.rstrip("s"))
    other = Client(args.base, PRIVILEGED_READER)
    other.call("GET", "/scores/ping")  # connected before the timing starts
    written = []
    for round_, exercise in enumerate((3, 4, 5), start=1):
        user = 10 + round_
        writer = Client(args.base, f"Bearer u{user}")
        sid = score_id(user, exercise, args.users)
        points = round(random.uniform(1, 99), 2)
        wrote = writer.call(
            "PUT", f"/scores/user/{exercise}", {"points": points, "max_points": 100}
        )
        started = time.monotonic()
        mine = writer.call("GET", f"/scores/user/{exercise}")
        theirs = other.call("GET", f"/scores/{sid}")
        elapsed_ms = (time.monotonic() - started) * 1000
        on_replica = database_row(args.replica, "SELECT points FROM scores WHERE id = %s", (sid,))
        on_primary = database_row(args.primary, "SELECT points FROM scores WHERE id = %s", (sid,))
        seen_mine = mine.json().get("points") if mine.status == 200 else mine.status
        seen_theirs = theirs.json().get("points") if theirs.status == 200 else theirs.status
        served = (
            f"write served by instance {wrote.headers.get('x-served-by')}, the writer's read"
            f" by {mine.headers.get('x-served-by')}, the other's"
            f" by {theirs.headers.get('x-served-by')}"
        )
        report.check(
            wrote.status == 200 and seen_mine == points,
            f"round {round_}: user u{user} writes points={points} and reads it back at once:"
            f" sees {seen_mine}",
            served,
        )
        report.check(
            seen_theirs != points,
            f"round {round_}: another client (not pinned) reads score {sid}"
            f" {elapsed_ms:.0f} ms later from the replica: sees the old value {seen_theirs}",
            f"in the database then: primary points={on_primary and on_primary[0]},"
            f" replica points={on_replica and on_replica[0]}",
        )
        written.append((sid, points))
    time.sleep(lag + 1.5)
    seen = [other.call("GET", f"/scores/{sid}").json().get("points") for sid, _ in written]
    report.check(
        seen == [points for _, points in written],
        f"after the delay ({lag:g} s) the other client sees every write: {seen}",
    )
    report.exit()


# --- events ----------------------------------------------------------------------------------
def check_events(args: argparse.Namespace) -> None:
    """A long poll on each instance, both woken by one write: whichever instance's bell numbers
    the event, the other learns of it by the notification on its LISTEN connection."""
    report = Report()
    reader = Client(args.base, PRIVILEGED_READER)  # never writes: reads are not pinned
    after = 0
    while True:  # to the end of the feed
        page = reader.call("GET", f"/events?after={after}&limit=1000").json()
        if page["next_after"] == after:
            break
        after = page["next_after"]
    wait = 10
    results: list[tuple[str, float, int, int]] = []
    written = threading.Event()
    written_at = [0.0]

    def poll(instance: str, url: str) -> None:
        answer = Client(url, PRIVILEGED_READER, timeout=wait + 10).call(
            "GET", f"/events?after={after}&wait={wait}"
        )
        woke = time.monotonic() - written_at[0] if written.is_set() else -1.0
        count = len(answer.json()["results"]) if answer.status == 200 else -1
        results.append((instance, woke, answer.status, count))

    pollers = [
        threading.Thread(target=poll, args=(name, url))
        for name, url in zip("ab", args.instances.split(","), strict=True)
    ]
    for thread in pollers:
        thread.start()
    time.sleep(1.5)  # both waiting
    written_at[0] = time.monotonic()
    written.set()
    wrote = Client(args.base, "Bearer u3").call("PUT", "/scores/user/1", {"correct": True})
    for thread in pollers:
        thread.join()
    report.note(f"the write: {wrote.status}, served by instance {wrote.headers.get('x-served-by')}")
    for instance, woke, status, count in sorted(results):
        report.check(
            status == 200 and count >= 1 and 0 <= woke < wait / 2,
            f"a long poll (wait={wait}) on instance {instance}: {status}, {count} event(s),"
            f" answered {woke:.2f} s after the write",
        )
    report.exit()


# --- wrk -------------------------------------------------------------------------------------
def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU ticks including reaped children) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table


def tree_ticks(table: dict[int, tuple[int, int]], roots: list[int]) -> int:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    total, stack = 0, list(roots)
    while stack:
        pid = stack.pop()
        total += table.get(pid, (0, 0))[1]
        stack.extend(children.get(pid, []))
    return total


def machine_ticks() -> tuple[int, int]:
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, idle


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, int]:
    table = proc_table()
    busy, idle = machine_ticks()
    return {
        **{name: tree_ticks(table, roots) for name, roots in groups.items()},
        "_busy": busy,
        "_idle": idle,
    }


def run_wrk(args: argparse.Namespace, seconds: int) -> dict[str, float]:
    """One wrk run of bench/wrk/mixed.lua through the balancer: its BENCH line's figures."""
    command = [
        "wrk",
        "-t2",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout=10s",
        "-s",
        str(BENCH / "wrk" / "mixed.lua"),
        args.base,
    ]
    env = {**os.environ, "LOAD_USERS": str(args.users), "LOAD_EXERCISES": str(args.exercises)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    line = re.search(r"^BENCH (.*)$", done.stdout, re.M)
    if done.returncode != 0 or not line:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return {k: float(v) for k, v in (pair.split("=") for pair in line.group(1).split())}


def check_wrk(args: argparse.Namespace) -> None:
    """Throughput through the balancer, and the cores each part used meanwhile."""
    report = Report()
    groups = {
        name: [int(pid) for pid in pids.split(",")]
        for name, pids in (group.split("=") for group in args.groups.split())
    }
    if args.warmup:
        run_wrk(args, args.warmup)
    before, started = cpu_snapshot(groups), time.monotonic()
    children_before = os.times()
    figures = run_wrk(args, args.seconds)
    after, wall = cpu_snapshot(groups), time.monotonic() - started
    children_after = os.times()
    cores = {name: (after[name] - before[name]) / CLK_TCK / wall for name in groups}
    cores["wrk"] = (
        children_after.children_user
        + children_after.children_system
        - children_before.children_user
        - children_before.children_system
    ) / wall
    busy = (after["_busy"] - before["_busy"]) / CLK_TCK / wall
    cores["other"] = max(0.0, busy - sum(cores.values()))
    cores["idle"] = (after["_idle"] - before["_idle"]) / CLK_TCK / wall
    errors = int(figures["non2xx"] + figures["socket_errors"])
    report.check(
        errors == 0,
        f"{args.label}: {figures['rps']:8.1f} req/s, p50 {figures['p50_ms']:6.1f} ms,"
        f" p99 {figures['p99_ms']:6.1f} ms, {int(figures['requests'])} requests in"
        f" {figures['duration_s']:.1f} s (wrk -c{args.connections}), errors {errors}",
        "cores: " + " ".join(f"{name} {value:.2f}" for name, value in cores.items()),
        f"CPU per request: app {cores['app'] / figures['rps'] * 1000:.1f} ms,"
        f" PostgreSQL {cores['pg'] / figures['rps'] * 1000:.2f} ms,"
        f" PgBouncer {cores['pgbouncer'] / figures['rps'] * 1000:.2f} ms,"
        f" HAProxy {cores['haproxy'] / figures['rps'] * 1000:.2f} ms",
    )
    report.exit()


# --- load and verify -------------------------------------------------------------------------
def run_load(args: argparse.Namespace) -> None:
    """``--threads`` clients for ``--seconds``: 35 % GET /scores/<id>, 35 % GET
    /scores/user/<exercise>, 30 % PUT /scores/user/<exercise> with a fresh attempt_id; every
    answer is a JSON line in ``--out``, with a sample of each database's commit counter every
    second."""
    stop_at = time.time() + args.seconds
    lock = threading.Lock()
    out = Path(args.out).open("w")  # noqa: SIM115 (closed below, after the threads)

    def record(entry: dict[str, Any]) -> None:
        line = json.dumps(entry)
        with lock:
            out.write(line + "\n")

    def client(number: int) -> None:
        rnd = random.Random(number)
        http_client = Client(args.base, timeout=15)
        while time.time() < stop_at:
            user, exercise = rnd.randint(1, args.users), rnd.randint(1, args.exercises)
            token = f"Bearer u{user}"
            pick = rnd.random()
            attempt_id = None
            if pick < 0.35:
                method, path, body = "GET", f"/scores/{score_id(user, exercise, args.users)}", None
            elif pick < 0.7:
                method, path, body = "GET", f"/scores/user/{exercise}", None
            else:
                attempt_id = str(uuid.uuid4())
                body = {"correct": rnd.random() < 0.5, "attempt_id": attempt_id}
                method, path = "PUT", f"/scores/user/{exercise}"
            started = time.time()
            answer = http_client.call(method, path, body, authorization=token)
            record(
                {
                    "t0": started,
                    "t1": time.time(),
                    "method": method,
                    "path": path,
                    "status": answer.status,
                    "json": answer.is_json,
                    "retry_after": answer.headers.get("retry-after"),
                    "served_by": answer.headers.get("x-served-by"),
                    "attempt_id": attempt_id,
                    "error": answer.headers.get("error")
                    or (
                        answer.body[:200].decode(errors="replace") if answer.status >= 400 else None
                    ),
                }
            )

    def sample() -> None:
        while time.time() < stop_at:
            entry: dict[str, Any] = {"sample": time.time()}
            for name, url in (("primary", args.primary), ("replica", args.replica)):
                try:
                    row = database_row(
                        url,
                        "SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                        ("evalsvc",),
                    )
                    entry[name] = row and row[0]
                except psycopg.Error:
                    entry[name] = None
            record(entry)
            time.sleep(max(0.0, 1 - (time.time() - entry["sample"])))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.threads)]
    threads.append(threading.Thread(target=sample))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.close()


def read_marks(path: str) -> dict[str, float]:
    marks = {}
    for line in Path(path).read_text().splitlines():
        name, moment = line.split()
        marks[name] = float(moment)
    return marks


def acknowledged_writes_kept(report: Report, entries: list[dict[str, Any]], primary: str) -> None:
    """Every write answered 2xx has its attempt in the primary's attempt log."""
    acknowledged = [
        e["attempt_id"] for e in entries if e["attempt_id"] and 200 <= e["status"] < 300
    ]
    unanswered = sum(1 for e in entries if e["attempt_id"] and not 200 <= e["status"] < 300)
    with psycopg.connect(primary, autocommit=True) as connection:
        found = connection.execute(
            "SELECT count(*) FROM score_attempts WHERE attempt_id = ANY(%s::uuid[])",
            (acknowledged,),
        ).fetchone()
    kept = found[0] if found else 0
    report.check(
        kept == len(acknowledged),
        f"no acknowledged write lost: {kept} of the {len(acknowledged)} writes answered 2xx are"
        f" in the primary's attempt log ({unanswered} writes not acknowledged)",
    )


def summary(entries: list[dict[str, Any]], origin: float) -> str:
    statuses = collections.Counter(e["status"] for e in entries)
    span = max(e["t1"] for e in entries) - origin
    return f"{len(entries)} requests in {span:.1f} s ({len(entries) / span:.0f}/s): " + ", ".join(
        f"{count} x {status or 'no answer'}" for status, count in sorted(statuses.items())
    )


def rate(samples: list[dict[str, Any]], name: str, start: float, end: float) -> str:
    """Transactions per second of one database between two moments, from the samples."""
    inside = [s for s in samples if start <= s["sample"] <= end and s.get(name) is not None]
    if len(inside) < 2:
        return "no sample (down)"
    first, last = inside[0], inside[-1]
    return f"{(last[name] - first[name]) / (last['sample'] - first['sample']):.0f} transactions/s"


def verify(args: argparse.Namespace) -> None:
    report = Report()
    lines = [json.loads(line) for line in Path(args.log).read_text().splitlines()]
    entries = [e for e in lines if "t0" in e]
    samples = [e for e in lines if "sample" in e]
    marks = read_marks(args.marks)
    origin = min(e["t0"] for e in entries)
    end = max(e["t1"] for e in entries)
    report.note(summary(entries, origin))
    bad = [e for e in entries if not 200 <= e["status"] < 300]

    def at(moment: float) -> str:
        return f"{moment - origin:.1f} s"

    if args.fault == "replica":
        down, up = marks["replica_stop"], marks["replica_started"]
        report.note(f"replica stopped at {at(down)}, started again at {at(up)}")
        during = [e for e in entries if down <= e["t0"] <= up and e["method"] == "GET"]
        report.check(
            not bad,
            f"replica: no error: every one of the {len(entries)} answers is a 2xx"
            f" ({sum(1 for e in bad if e['status'] >= 500)} 5xx)",
            *[
                f"{at(e['t0'])} {e['method']} {e['path']}: {e['status']} {e['error']}"
                for e in bad[:10]
            ],
        )
        report.check(
            bool(during) and all(200 <= e["status"] < 300 for e in during),
            f"replica: {len(during)} reads while it was down, all answered from the primary",
        )
        for label, start, stop in (
            ("before the stop", origin, down),
            ("while down", marks["replica_stopped"], up),
            ("after the restart", up, end),
        ):
            report.note(
                f"{label:18}: replica {rate(samples, 'replica', start, stop)},"
                f" primary {rate(samples, 'primary', start, stop)}"
            )
        after = [s for s in samples if s["sample"] >= up and s.get("replica") is not None]
        report.check(
            len(after) >= 2 and after[-1]["replica"] - after[0]["replica"] > len(after),
            "replica: reads went back to the replica after its restart (its transactions rose)",
        )
    elif args.fault == "pgbouncer":
        down, up = marks["bouncer_stop"], marks["bouncer_started"]
        report.note(f"PgBouncer stopped at {at(down)}, started again at {at(up)}")
        malformed = [e for e in bad if e["status"] != 503 or not e["json"] or not e["retry_after"]]
        report.check(
            not malformed,
            f"pgbouncer: every error is a JSON 503 with Retry-After ({len(bad)} errors)",
            *[
                f"{at(e['t0'])} {e['method']} {e['path']}: {e['status']} {e['error']}"
                for e in malformed[:10]
            ],
        )
        if bad:
            first, last = min(e["t0"] for e in bad), max(e["t1"] for e in bad)
            report.note(
                f"503s from {at(first)} to {at(last)}: the last one {last - up:.1f} s after"
                " PgBouncer was back (a process whose database breaker opened waits its"
                " 5 s recovery_timeout before asking again)"
            )
        late = [e for e in bad if e["t0"] > up + args.recovery]
        report.check(
            not late,
            f"pgbouncer: no error later than {args.recovery:g} s after it was back",
            *[f"{at(e['t0'])} {e['method']} {e['path']}: {e['status']}" for e in late[:10]],
        )
        before = [e for e in entries if e["t1"] < down]
        report.check(
            all(200 <= e["status"] < 300 for e in before) and bool(before),
            f"pgbouncer: all {len(before)} answers before the stop were 2xx",
        )
        tail = [e for e in entries if e["t0"] > end - 2]
        report.check(
            bool(tail) and all(200 <= e["status"] < 300 for e in tail),
            f"pgbouncer: recovered without restarting evalsvc: the last {len(tail)} answers"
            " (last 2 s) are 2xx",
        )
    elif args.fault == "instance":
        kill = marks["instance_kill"]
        report.note(f"instance b killed at {at(kill)}")
        after = [e for e in entries if e["t0"] > kill]
        served_after = collections.Counter(
            e["served_by"] for e in after if 200 <= e["status"] < 300
        )
        report.check(
            served_after.get("a", 0) > 0 and set(served_after) == {"a"},
            f"instance: after the kill instance a served {served_after.get('a', 0)} answers,"
            f" b none ({dict(served_after)})",
        )
        # A request HAProxy sent to b as it died (in flight, or into its listening socket in
        # the instant before the kernel closed it): HAProxy answers 503 (its JSON error file)
        # or closes the client's connection unanswered (it does so for a request that was not
        # the first on the client's connection, which a client may retry as after any close).
        # Reads among them HAProxy retries on a; writes it never sends twice.
        malformed = [
            e
            for e in bad
            if not (e["status"] == 503 and e["json"])
            and not (e["status"] == 0 and "RemoteDisconnected" in (e["error"] or ""))
        ]
        late = [e for e in bad if e["t0"] > marks["instance_killed"] + 1]
        report.check(
            len(bad) <= args.threads and not malformed and not late,
            f"instance: {len(bad)} errors, all sent to b as it died (within 1 s of the kill, at"
            f" most one per client: {args.threads}), each a JSON 503 or the connection closed"
            " unanswered; none later",
            *[
                f"{at(e['t0'])}-{at(e['t1'])} {e['method']} {e['path']}: {e['status']} {e['error']}"
                for e in bad[:10]
            ],
        )
    acknowledged_writes_kept(report, entries, args.primary)
    report.exit()


# --- HAProxy ---------------------------------------------------------------------------------
def haproxy_command(path: str, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(5)
        conn.connect(path)
        conn.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def haproxy(args: argparse.Namespace) -> None:
    answer = haproxy_command(args.socket, args.command).strip()
    if answer:
        print(answer)


def haproxy_up(args: argparse.Namespace) -> None:
    rows = haproxy_command(args.socket, "show stat").splitlines()
    header = rows[0].lstrip("# ").split(",")
    for row in rows[1:]:
        values = dict(zip(header, row.split(","), strict=False))
        if values.get("svname") == args.server:
            sys.exit(0 if values.get("status") == "UP" else 1)
    sys.exit(1)


# --- command line ----------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def with_topology(name: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name)
        sub.add_argument("--base", required=True)
        sub.add_argument("--staff-token", required=True)
        sub.add_argument("--users", type=int, required=True)
        sub.add_argument("--exercises", type=int, required=True)
        sub.add_argument("--primary", required=True)
        sub.add_argument("--replica", required=True)
        return sub

    sub = commands.add_parser("settings")
    sub.add_argument("--bouncer", required=True)
    sub.add_argument("--primary", required=True)
    sub.add_argument("--replica", required=True)
    sub.set_defaults(run=check_settings)
    sub = with_topology("smoke")
    sub.add_argument("--metrics-token", required=True)
    sub.set_defaults(run=check_smoke)
    sub = with_topology("read-your-writes")
    sub.add_argument("--lag", required=True)
    sub.set_defaults(run=check_read_your_writes)
    sub = with_topology("events")
    sub.add_argument("--instances", required=True, help="URL_A,URL_B: each instance directly")
    sub.set_defaults(run=check_events)
    sub = commands.add_parser("wrk")
    for name in ("--base", "--label", "--groups"):
        sub.add_argument(name, required=True)
    for name in ("--seconds", "--warmup", "--connections", "--users", "--exercises"):
        sub.add_argument(name, type=int, required=True)
    sub.set_defaults(run=check_wrk)
    sub = with_topology("load")
    sub.add_argument("--seconds", type=float, required=True)
    sub.add_argument("--threads", type=int, required=True)
    sub.add_argument("--out", required=True)
    sub.set_defaults(run=run_load)
    sub = with_topology("verify")
    sub.add_argument("fault", choices=("replica", "pgbouncer", "instance"))
    sub.add_argument("--log", required=True)
    sub.add_argument("--marks", required=True)
    sub.add_argument("--threads", type=int, default=8)
    sub.add_argument("--recovery", type=float, default=7.0)
    sub.set_defaults(run=verify)
    sub = commands.add_parser("haproxy")
    sub.add_argument("socket")
    sub.add_argument("command")
    sub.set_defaults(run=haproxy)
    sub = commands.add_parser("haproxy-up")
    sub.add_argument("socket")
    sub.add_argument("server")
    sub.set_defaults(run=haproxy_up)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
