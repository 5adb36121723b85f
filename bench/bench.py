"""evalsvc's benchmark (Python standard library only; bench/run.sh calls it). See bench/README.md.

Self-starting (no BASE_URL): on loopback, a fresh database ``evalsvc_bench``, the fake users
service (bench/fake_users.py), evalsvc migrated and served by gunicorn under production
settings, a staff token, 1,000,000 seeded rows, every user's token presented once; then the
scenarios; then everything it started is stopped and the database dropped.

Against a running evalsvc (BASE_URL set): seeds through DATABASE_URL with psql (unless SEED=0),
takes the staff token from STAFF_TOKEN, and runs the same scenarios.

Each scenario: a warm-up with wrk (not recorded), then one measured wrk run (export: one
streamed download by bench/export.py, with the worker's memory sampled). The table goes to
stdout and to bench/results/<timestamp>.txt; logs and raw outputs to bench/results/<timestamp>/.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
ENV = os.environ
CLK_TCK = os.sysconf("SC_CLK_TCK")

SCENARIOS_ALL = ("get_one", "user_list", "upsert", "summary", "stats", "bulk", "export")
WRITES = {"upsert", "bulk"}
BULK_ITEMS = 1000  # per request, see wrk/bulk.lua
SEED_ROWS = 1_000_000


def env_int(name: str, default: int) -> int:
    try:
        return int(ENV.get(name) or default)
    except ValueError:
        sys.exit(f"bench: {name} must be an integer")


DURATION = env_int("DURATION", 10)
WARMUP = env_int("WARMUP", 2)
CONNECTIONS = env_int("CONNECTIONS", 16)
THREADS = env_int("THREADS", 2)
WARM_TOKENS = env_int("WARM_TOKENS", 10000)
WORKERS = env_int("WORKERS", 3)
APP_PORT = env_int("APP_PORT", 8300)
USERS_PORT = env_int("USERS_PORT", 8301)
READY_TIMEOUT = env_int("READY_TIMEOUT", 60)
EXPORT_TIMEOUT = env_int("EXPORT_TIMEOUT", 300)
SCENARIOS = (ENV.get("SCENARIOS") or " ".join(SCENARIOS_ALL)).split()
WRK_TIMEOUT = ENV.get("WRK_TIMEOUT", "30s")
CACHE_URL = ENV.get("CACHE_URL") or "redis://127.0.0.1:6379/13"
# Verdicts outlive the run (and not much more), so the token warm-up keeps every scenario's
# cache warm whatever its place in the sequence (production's 60 s would expire them during the
# later scenarios, which would then pay for users-service calls the earlier ones did not).
VERDICT_SECONDS = ENV.get("USERS_SERVICE_CACHE_SECONDS") or str(
    max(900, 2 * len(SCENARIOS) * (DURATION + WARMUP + 10) + 300)
)
BENCH_PG_URL = (ENV.get("BENCH_PG_URL") or "postgres://postgres@127.0.0.1:5432").rstrip("/")
BENCH_DB = "evalsvc_bench"
KEEP_DB = ENV.get("KEEP_DB", "0") == "1"
SEED = ENV.get("SEED", "1") != "0"
EVALSVC_VENV = ENV.get("EVALSVC_VENV") or os.path.join(REPO, ".venv")
GUNICORN_CONFIG = os.path.join(REPO, "evalsvc", "gunicorn.py")
RESULTS = ENV.get("BENCH_RESULTS") or os.path.join(BENCH, "results")
PIDFILE = ENV.get("BENCH_PIDFILE")  # run.sh's safety net: process groups to kill on exit
# 50+ characters, not a secret: the bench's throwaway instance only.
BENCH_SECRET_KEY = "bench-only-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKL"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ------------------------------------------------------------------------------ processes
class Started:
    """A process started in its own process group, stopped with the whole group."""

    registry: list[Started] = []

    def __init__(self, name: str, cmd: list[str], logpath: str, cwd: str, env: dict[str, str]):
        self.name, self.logpath = name, logpath
        with open(logpath, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.proc.pid
        Started.registry.append(self)
        Started.write_pidfile()
        log(f"  started {name} (pid {self.pid}), log {os.path.relpath(logpath, REPO)}")

    @classmethod
    def write_pidfile(cls) -> None:
        if PIDFILE:
            with open(PIDFILE, "w") as f:
                f.write("".join(f"{s.pid}\n" for s in cls.registry))

    def alive(self) -> bool:
        self.proc.poll()
        try:
            os.killpg(self.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL to what is left after 20 s."""
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            if not self.alive():
                break
            os.killpg(self.pid, sig)
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        left = " -- STILL ALIVE" if self.alive() else ""
        log(f"  stopped {self.name} (group {self.pid}){left}")
        Started.registry.remove(self)
        Started.write_pidfile()


def tail(path: str, n: int = 25) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# ------------------------------------------------------------------------------ HTTP
@dataclass
class Target:
    host: str
    port: int
    base_url: str
    staff_token: str | None = None
    database_url: str | None = None
    app_pid: int | None = None  # gunicorn master (CPU and export memory)
    users_url: str | None = None  # our fake users service, when we started it
    users_pid: int | None = None


def request(
    target: Target,
    method: str,
    path: str,
    auth: str | None,
    body: Any = None,
    timeout: float = 30,
) -> tuple[int | None, bytes]:
    """Status and body of one request (no redirects followed); (None, b"") if no answer."""
    headers = {"Authorization": auth} if auth else {}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    try:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        content = response.read()
        conn.close()
        return response.status, content
    except (OSError, http.client.HTTPException):
        return None, b""


def users_calls(target: Target) -> int | None:
    """How many /auth/status calls our fake users service has answered (None if not ours)."""
    if not target.users_url:
        return None
    try:
        conn = http.client.HTTPConnection("127.0.0.1", USERS_PORT, timeout=5)
        conn.request("GET", "/_bench/calls")
        calls = json.loads(conn.getresponse().read())["calls"]
        conn.close()
        return int(calls)
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return None


def require_loopback(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise BenchError(f"BASE_URL must be http://HOST:PORT, got {url!r}")
    host = parts.hostname
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, parts.port or 80)}
    except OSError as exc:
        raise BenchError(f"cannot resolve {host}: {exc}") from exc
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise BenchError(f"BASE_URL {url} is not on loopback: the benchmark only targets loopback")
    return host, parts.port or 80


# ------------------------------------------------------------------------------ PostgreSQL
def psql(url: str, *args: str, timeout: float = 600) -> str:
    env = dict(ENV, PGOPTIONS="-c client_min_messages=warning", PGCONNECT_TIMEOUT="10")
    cmd = ["psql", "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-d", url, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"psql failed: {' '.join(args)}\n{done.stderr.strip()}")
    return done.stdout.strip()


def timed_psql(url: str, *args: str) -> float:
    t0 = time.monotonic()
    psql(url, *args)
    return time.monotonic() - t0


def has_history(url: str) -> bool:
    """Whether the schema has the attempt log (migration 0003)."""
    return psql(url, "-c", "SELECT to_regclass('score_attempts') IS NOT NULL") == "t"


def vacuum_sql(url: str) -> str:
    return "VACUUM (ANALYZE) scores" + (", score_attempts" if has_history(url) else "")


def seed(url: str) -> tuple[str, float]:
    """1,000,000 rows (seed.sql), then VACUUM (ANALYZE) and CHECKPOINT; a line and its time."""
    log("  seeding 1,000,000 rows (10,000 users x 100 exercises) ...")
    load = timed_psql(url, "-f", os.path.join(BENCH, "seed.sql"))
    vacuum = timed_psql(url, "-c", vacuum_sql(url))
    try:  # needs superuser or pg_checkpoint; only a flush of dirty pages, so optional
        checkpoint = timed_psql(url, "-c", "CHECKPOINT")
    except BenchError:
        checkpoint = 0.0
    history = has_history(url)
    attempts = "(SELECT count(*) FROM score_attempts)" if history else "0"
    rows, stats, logged = psql(
        url,
        "-c",
        "SELECT (SELECT count(*) FROM scores),"
        f" (SELECT coalesce(sum(attempted), 0) FROM exercise_stats), {attempts}",
    ).split("|")
    if int(rows) != SEED_ROWS:
        raise BenchError(f"seed: scores has {rows} rows, expected {SEED_ROWS}")
    total = load + vacuum + checkpoint
    log_note = f", {int(logged):,} attempts logged" if history else ""
    line = (
        f"{int(rows):,} rows (10,000 users x 100 exercises{log_note}) in {total:.1f} s: "
        f"load {load:.1f} s (triggers filled exercise_stats: {int(stats):,} attempted), "
        f"VACUUM ANALYZE {vacuum:.1f} s, CHECKPOINT {checkpoint:.1f} s"
    )
    log(f"  seeded {line}")
    return line, total


# ------------------------------------------------------------------------------ CPU from /proc
def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime ticks) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table


def tree_ticks(table: dict[int, tuple[int, int]], root: int) -> int:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += table.get(pid, (0, 0))[1]
        stack.extend(children.get(pid, []))
    return total


def machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    idle = v[3] + v[4]
    return sum(v) - idle, idle


class CpuMeter:
    """Cores used per process group between start() and stop(): app (gunicorn master and
    workers), pg (the whole PostgreSQL server), users (fake users service), load (wrk or the
    export client), other (everything else busy on the machine), idle."""

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups

    def _snap(self) -> dict[str, int]:
        table = proc_table()
        snap = {name: tree_ticks(table, pid) for name, pid in self.groups.items()}
        snap["_busy"], snap["_idle"] = machine_ticks()
        return snap

    def start(self) -> None:
        self.t0, self.before = time.monotonic(), self._snap()

    def stop(self, load_cpu_seconds: float) -> dict[str, float]:
        after, wall = self._snap(), time.monotonic() - self.t0
        cores = {n: (after[n] - self.before[n]) / CLK_TCK / wall for n in self.groups}
        cores["load"] = load_cpu_seconds / wall
        busy = (after["_busy"] - self.before["_busy"]) / CLK_TCK / wall
        cores["other"] = max(0.0, busy - sum(cores.values()))
        cores["idle"] = (after["_idle"] - self.before["_idle"]) / CLK_TCK / wall
        return cores


def postmaster_pid(url: str) -> int | None:
    """The parent of the backend serving a psql session (PostgreSQL on this machine)."""
    proc = subprocess.Popen(
        ["psql", "-X", "-Atq", "-d", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdin
        assert proc.stdout
        proc.stdin.write("SELECT pg_backend_pid();\n")
        proc.stdin.flush()
        backend = int(proc.stdout.readline())
        return proc_table()[backend][0]
    except (ValueError, KeyError, OSError):
        return None
    finally:
        proc.communicate("")


def listener_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:port whose parent does not (a gunicorn master)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{cols[9]}]")
        except OSError:
            continue
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                pids.add(int(entry))
        except OSError:
            continue
    table = proc_table()
    roots = [p for p in pids if table.get(p, (0, 0))[0] not in pids]
    return roots[0] if len(roots) == 1 else None


# ------------------------------------------------------------------------------ scenarios
PREFLIGHT: dict[str, tuple[str, str, Any, str]] = {  # method, path, body, who (user|staff)
    "get_one": ("GET", "/scores/1", None, "user"),
    "user_list": ("GET", "/scores/user", None, "user"),
    "upsert": ("PATCH", "/scores", {"exercise_id": 1, "correct": True}, "user"),
    "summary": ("GET", "/scores/summary", None, "user"),
    "stats": ("GET", "/scores/stats/exercises", None, "user"),
    "bulk": (
        "POST",
        "/scores/bulk",
        {"scores": [{"user_id": 1, "exercise_id": 1, "correct": True}]},
        "staff",
    ),
    "export": ("GET", "/scores/export.csv?exercise_id=1", None, "staff"),
}


@dataclass
class Result:
    scenario: str
    rate: float | None = None
    unit: str = "req/s"
    p50: float | None = None
    p99: float | None = None
    errors: int = 0
    notes: list[str] = field(default_factory=list)
    cpu: dict[str, float] | None = None
    failed: str | None = None  # the scenario did not run (preflight, tool failure)


def auth_for(who: str, target: Target) -> str:
    return f"Token {target.staff_token}" if who == "staff" else "Bearer u1"


def preflight(scenario: str, target: Target) -> str | None:
    """None if one request of the scenario answers 2xx, else why not."""
    method, path, body, who = PREFLIGHT[scenario]
    if who == "staff" and not target.staff_token:
        return "needs STAFF_TOKEN"
    status, content = request(target, method, path, auth_for(who, target), body)
    if status is None or not 200 <= status < 300:
        return f"preflight {method} {path} answered {status}: {content[:200]!r}"
    if scenario == "user_list":
        rows = len(json.loads(content).get("results", []))
        if rows != 100:
            log(f"  note: user u1 has {rows} scores on the first page (seed gives 100)")
    return None


def warm_tokens(target: Target) -> str:
    """Present each user's token once (GET /scores/<u>, a score user u owns in the seed), so
    the verdict cache is as warm as in steady operation, as the shared harness does."""
    if WARM_TOKENS <= 0:
        return "token warm-up off (WARM_TOKENS=0)"
    log(f"  presenting {WARM_TOKENS:,} user tokens once ...")
    calls0 = users_calls(target)
    t0 = time.monotonic()

    def one(user: int) -> int | None:
        return request(target, "GET", f"/scores/{user}", f"Bearer u{user}")[0]

    with concurrent.futures.ThreadPoolExecutor(min(CONNECTIONS, 16)) as pool:
        codes = list(pool.map(one, range(1, WARM_TOKENS + 1)))
    bad = sum(1 for c in codes if c is None or not 200 <= c < 300)
    line = f"{WARM_TOKENS:,} user tokens presented once in {time.monotonic() - t0:.1f} s" + (
        f" ({bad} not 2xx!)" if bad else " (all 2xx)"
    )
    calls1 = users_calls(target)
    if calls0 is not None and calls1 is not None:
        line += f", users-service calls {calls1 - calls0:,}"
    log(f"  {line}")
    return line


RESULT_LINE = re.compile(r"^(BENCH|EXPORT) (.*)$", re.M)


def parse_line(out: str) -> dict[str, str] | None:
    match = RESULT_LINE.search(out)
    if not match:
        return None
    return dict(kv.split("=", 1) for kv in match.group(2).split())


RUNNING: list[subprocess.Popen] = []  # the load generator in flight, stopped on interrupt


def run_load(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, float]:
    """Run wrk or export.py in the foreground: exit code, output, CPU seconds it used."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    RUNNING[:] = [proc]
    killer = threading.Timer(timeout, proc.kill)  # bounded in time whatever happens
    killer.start()
    try:
        assert proc.stdout
        out = proc.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        killer.cancel()
        RUNNING.clear()
    return proc.returncode, out, usage.ru_utime + usage.ru_stime


def wrk(scenario: str, target: Target, seconds: int) -> tuple[int, str, float]:
    cmd = [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT}",
        "-s",
        os.path.join(BENCH, "wrk", f"{scenario}.lua"),
        target.base_url,
    ]
    env = dict(ENV, STAFF_TOKEN=target.staff_token or "")
    return run_load(cmd, env, seconds + 60)


def cpu_note(cpu: dict[str, float]) -> str:
    return "cpu " + " ".join(f"{k} {v:.2f}" for k, v in cpu.items())


def run_wrk_scenario(scenario: str, target: Target, meter: CpuMeter, logdir: str) -> Result:
    result = Result(scenario)
    if WARMUP > 0:
        wrk(scenario, target, WARMUP)
    calls0 = users_calls(target)
    meter.start()
    code, out, load_cpu = wrk(scenario, target, DURATION)
    result.cpu = meter.stop(load_cpu)
    calls1 = users_calls(target)
    with open(os.path.join(logdir, f"wrk-{scenario}.txt"), "w") as f:
        f.write(out)
    values = parse_line(out)
    if code != 0 or values is None:
        result.failed = f"wrk failed ({code}): {out.strip()[-300:]}"
        return result
    rps = float(values["rps"])
    requests, non2xx = int(values["requests"]), int(values["non2xx"])
    sockerr = int(values["socket_errors"])
    result.p50, result.p99 = float(values["p50_ms"]), float(values["p99_ms"])
    result.errors = non2xx + sockerr
    if scenario == "bulk":
        result.rate, result.unit = rps * BULK_ITEMS, "scores/s"
        result.notes.append(f"{rps:.1f} req/s x {BULK_ITEMS} scores, {requests:,} requests")
    else:
        result.rate = rps
        result.notes.append(f"{requests:,} requests")
    if result.errors:
        result.notes.append(f"non2xx {non2xx}, socket errors {sockerr}: NOT a valid figure")
    if calls0 is not None and calls1 is not None and scenario != "bulk":
        result.notes.append(f"users-service calls {calls1 - calls0:,}")
    result.notes.append(cpu_note(result.cpu))
    return result


def settle(target: Target) -> str | None:
    """Before the export: VACUUM (ANALYZE) and CHECKPOINT, so the dead rows and dirty pages
    the write scenarios left are not cleaned up by autovacuum or a checkpoint meanwhile."""
    if not target.database_url:
        return None
    vacuum = timed_psql(target.database_url, "-c", vacuum_sql(target.database_url))
    try:
        checkpoint = timed_psql(target.database_url, "-c", "CHECKPOINT")
    except BenchError:
        checkpoint = 0.0
    return f"after VACUUM ANALYZE {vacuum:.1f} s + CHECKPOINT {checkpoint:.1f} s"


def run_export(target: Target, meter: CpuMeter, logdir: str, wrote: bool) -> Result:
    result = Result("export", unit="rows/s")
    settled = settle(target) if wrote else None
    if WARMUP > 0:  # a few small exports (10,000 rows each) warm the workers' code paths
        for _ in range(3):
            request(target, "GET", "/scores/export.csv?exercise_id=1", auth_for("staff", target))
    expected = None
    if target.database_url:
        expected = int(psql(target.database_url, "-c", "SELECT count(*) FROM scores"))
    cmd = [
        sys.executable,
        os.path.join(BENCH, "export.py"),
        "--base-url",
        target.base_url,
        "--timeout",
        str(EXPORT_TIMEOUT),
    ]
    if target.app_pid:
        cmd += ["--pid", str(target.app_pid)]
    if expected is not None:
        cmd += ["--expected", str(expected)]
    meter.start()
    code, out, load_cpu = run_load(
        cmd, dict(ENV, STAFF_TOKEN=target.staff_token or ""), EXPORT_TIMEOUT + 30
    )
    result.cpu = meter.stop(load_cpu)
    with open(os.path.join(logdir, "export.txt"), "w") as f:
        f.write(out)
    values = parse_line(out)
    if values is None:
        result.failed = f"export.py failed ({code}): {out.strip()[-300:]}"
        return result
    result.rate = float(values["rows_per_s"])
    result.errors = 0 if values["error"] == "-" else 1
    growth = values["rss_growth_mb"]
    result.notes.append(
        f"{int(values['rows']):,} rows in {float(values['duration_s']):.2f} s"
        f" (first byte {values.get('ttfb_ms', '?')} ms)"
    )
    if growth == "n/a":
        result.notes.append("peak RSS growth n/a (set APP_PID to the gunicorn master)")
    else:
        result.notes.append(
            f"peak RSS growth {growth} MB (worker {values['rss_worker']}: "
            f"{values['rss_baseline_mb']} -> {values['rss_peak_mb']} MB)"
        )
    if result.errors:
        result.notes.append(f"ERROR {values['error']}")
    if settled:
        result.notes.append(settled)
    result.notes.append(cpu_note(result.cpu))
    return result


# ------------------------------------------------------------------------------ report
def fmt(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width},.{digits}f}"


def table(results: list[Result]) -> str:
    header = (
        f"{'scenario':<10} {'throughput':>12} {'unit':<8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6}  notes"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if r.failed:
            lines.append(
                f"{r.scenario:<10} {'-':>12} {'':<8} {'-':>8} {'-':>8} {'-':>6}  "
                f"NOT RUN: {r.failed}"
            )
            continue
        lines.append(
            f"{r.scenario:<10} {fmt(r.rate, 12)} {r.unit:<8} {fmt(r.p50, 8)} {fmt(r.p99, 8)} "
            f"{r.errors:>6}  {'; '.join(r.notes)}"
        )
    return "\n".join(lines)


def git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------------------ setup
def evalsvc_env(database_url: str) -> dict[str, str]:
    """Production settings on loopback; other evalsvc settings pass through from the caller."""
    return dict(
        ENV,
        DJANGO_SETTINGS_MODULE="evalsvc.settings.production",
        SECRET_KEY=BENCH_SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",
        DATABASE_URL=database_url,
        USERS_SERVICE_URL=f"http://127.0.0.1:{USERS_PORT}",
        CACHE_URL=CACHE_URL,
        THROTTLE_RATE_USER="100000000/min",
        THROTTLE_RATE_ANON="100000000/min",
        USERS_SERVICE_CACHE_SECONDS=VERDICT_SECONDS,
        PYTHONUNBUFFERED="1",
    )


def manage(env: dict[str, str], *args: str) -> str:
    python = os.path.join(EVALSVC_VENV, "bin", "python")
    done = subprocess.run(
        [python, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_http(target: Target, path: str, proc: Started | None, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.proc.poll() is not None:
            raise BenchError(f"{what} exited ({proc.proc.returncode}):\n{tail(proc.logpath)}")
        status, _ = request(target, "GET", path, None, timeout=2)
        if status == 200:
            return
        time.sleep(0.3)
    raise BenchError(f"{what} not answering 200 on {target.base_url}{path} after {READY_TIMEOUT}s")


def start_everything(logdir: str, info: list[str]) -> Target:
    """Self-starting mode: database, fake users service, evalsvc; returns the target."""
    for port, what in ((APP_PORT, "APP_PORT"), (USERS_PORT, "USERS_PORT")):
        if not port_free(port):
            raise BenchError(f"port {port} ({what}) is in use: pick another, e.g. {what}=8310")
    gunicorn = os.path.join(EVALSVC_VENV, "bin", "gunicorn")
    if not os.access(gunicorn, os.X_OK):
        raise BenchError(f"{gunicorn} not found: run bin/test once (or set EVALSVC_VENV)")
    if ENV.get("DATABASE_URL"):
        log(f"  note: DATABASE_URL is ignored without BASE_URL; using database {BENCH_DB}")

    admin_url = f"{BENCH_PG_URL}/postgres"
    database_url = f"{BENCH_PG_URL}/{BENCH_DB}"
    log(f"  database {BENCH_DB}: drop and create")
    psql(admin_url, "-c", f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    psql(admin_url, "-c", f'CREATE DATABASE "{BENCH_DB}"')

    users = Started(
        "fake users service",
        [sys.executable, os.path.join(BENCH, "fake_users.py"), str(USERS_PORT)],
        os.path.join(logdir, "fake_users.log"),
        BENCH,
        dict(ENV),
    )
    users_target = Target("127.0.0.1", USERS_PORT, f"http://127.0.0.1:{USERS_PORT}")
    wait_http(users_target, "/_bench/calls", users, "fake users service")

    env = evalsvc_env(database_url)
    t0 = time.monotonic()
    manage(env, "migrate", "--noinput")
    log(f"  migrated in {time.monotonic() - t0:.1f} s")
    out = manage(env, "create_service_token", "bench", "--rotate")
    match = re.search(r"Token ([0-9a-f]{20,})", out)
    if not match:
        raise BenchError(f"no token in create_service_token's output:\n{out}")

    # The project's gunicorn settings (evalsvc/gunicorn.py: timeouts, logs...) when it has them;
    # the worker count and the loopback address from the bench.
    config = ["-c", "python:evalsvc.gunicorn"] if os.path.exists(GUNICORN_CONFIG) else []
    args = [*config, "evalsvc.wsgi:application", "--workers", str(WORKERS)]
    args += ["--worker-class", "sync", "--bind", f"127.0.0.1:{APP_PORT}"]
    if (
        "--no-control-socket"
        in subprocess.run([gunicorn, "--help"], capture_output=True, text=True, check=False).stdout
    ):  # gunicorn >= 27: not the user-wide ~/.gunicorn/gunicorn.ctl another one may use
        args.append("--no-control-socket")
    app = Started(
        f"evalsvc (gunicorn, {WORKERS} sync workers)",
        [gunicorn, *args],
        os.path.join(logdir, "evalsvc.log"),
        REPO,
        env,
    )
    target = Target(
        "127.0.0.1",
        APP_PORT,
        f"http://127.0.0.1:{APP_PORT}",
        staff_token=match.group(1),
        database_url=database_url,
        app_pid=app.pid,
        users_url=users_target.base_url,
        users_pid=users.pid,
    )
    wait_http(target, "/ready", app, "evalsvc")
    version = psql(database_url, "-c", "SHOW server_version").split()[0]
    info.append(
        f"target:   evalsvc started here on {target.base_url}, production settings: "
        f"gunicorn {' '.join(args)}; CACHE_URL={CACHE_URL}, "
        f"USERS_SERVICE_CACHE_SECONDS={VERDICT_SECONDS}; database {BENCH_DB} "
        f"(PostgreSQL {version}); fake users service on :{USERS_PORT}"
    )
    return target


def external_target(info: list[str]) -> Target:
    base_url = ENV["BASE_URL"].rstrip("/")
    host, port = require_loopback(base_url)
    app_pid = env_int("APP_PID", 0) or listener_pid(port)
    target = Target(
        host,
        port,
        base_url,
        staff_token=ENV.get("STAFF_TOKEN") or None,
        database_url=ENV.get("DATABASE_URL") or None,
        app_pid=app_pid,
    )
    wait_http(target, "/health", None, "evalsvc")
    pid_note = f"gunicorn master pid {app_pid}" if app_pid else "server pid unknown (APP_PID)"
    info.append(f"target:   running evalsvc at {base_url} ({pid_note})")
    return target


# ------------------------------------------------------------------------------ main
def check_settings() -> None:
    unknown = [s for s in SCENARIOS if s not in SCENARIOS_ALL]
    if unknown:
        raise BenchError(f"unknown scenario(s) {unknown}; known: {' '.join(SCENARIOS_ALL)}")
    for tool in ("wrk", "psql"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed (apt-get install {tool})")
    if DURATION < 1:
        raise BenchError("DURATION must be at least 1 second")


def main() -> int:
    check_settings()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(RESULTS, stamp)
    os.makedirs(logdir, exist_ok=True)
    started_at = time.monotonic()
    info = [
        f"evalsvc benchmark {time.strftime('%Y-%m-%d %H:%M:%S')}, commit {git_describe()}, "
        f"{os.cpu_count()} cores shared by wrk, PostgreSQL, evalsvc and the users service"
    ]
    results: list[Result] = []
    external = bool(ENV.get("BASE_URL"))
    target: Target | None = None
    interrupted: BaseException | None = None
    try:
        log("setup")
        target = external_target(info) if external else start_everything(logdir, info)
        if SEED:
            if not target.database_url:
                raise BenchError("seeding needs DATABASE_URL (or SEED=0 to use the data as is)")
            line, _ = seed(target.database_url)
            info.append(f"seed:     {line}")
        else:
            info.append("seed:     skipped (SEED=0): the scenarios assume the seed's data")
        info.append(f"tokens:   {warm_tokens(target)}")
        info.append(
            f"load:     wrk -t{THREADS} -c{CONNECTIONS}, {DURATION} s per scenario after a "
            f"{WARMUP} s warm-up (not recorded); closed loop: latency includes queueing"
        )
        groups = {"app": target.app_pid} if target.app_pid else {}
        pg = postmaster_pid(target.database_url) if target.database_url else None
        if pg:
            groups["pg"] = pg
        if target.users_pid:
            groups["users"] = target.users_pid
        meter = CpuMeter(groups)

        wrote = False
        for scenario in SCENARIOS:
            log(f"scenario {scenario}")
            problem = preflight(scenario, target)
            if problem:
                log(f"  NOT RUN: {problem}")
                results.append(Result(scenario, failed=problem))
                continue
            try:
                if scenario == "export":
                    result = run_export(target, meter, logdir, wrote)
                else:
                    result = run_wrk_scenario(scenario, target, meter, logdir)
            except BenchError as exc:
                result = Result(scenario, failed=str(exc))
            wrote = wrote or scenario in WRITES
            results.append(result)
            if result.failed:
                log(f"  FAILED: {result.failed}")
            else:
                log(
                    f"  {fmt(result.rate, 0)} {result.unit}, p50 {fmt(result.p50, 0)} ms, "
                    f"p99 {fmt(result.p99, 0)} ms, errors {result.errors}"
                )
    except (KeyboardInterrupt, SystemExit) as exc:
        interrupted = exc
        log("interrupted")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # let the teardown finish
            signal.signal(sig, signal.SIG_IGN)
        for proc in RUNNING:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        if Started.registry:
            log("teardown")
        for started in reversed(list(Started.registry)):
            started.stop()
        if not external and not KEEP_DB:
            try:
                psql(
                    f"{BENCH_PG_URL}/postgres",
                    "-c",
                    f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)',
                )
                log(f"  dropped database {BENCH_DB} (KEEP_DB=1 keeps it)")
            except (BenchError, subprocess.TimeoutExpired) as exc:
                log(f"  could not drop {BENCH_DB}: {exc}")

    if interrupted is not None:
        if results:
            report(info, results, logdir, stamp, started_at)
        raise interrupted
    return report(info, results, logdir, stamp, started_at)


def report(
    info: list[str], results: list[Result], logdir: str, stamp: str, started_at: float
) -> int:
    """Print the table and write it to results/<stamp>.txt; the exit status."""
    lines = [*info, "", table(results)]
    noisy = [r.scenario for r in results if r.cpu and r.cpu.get("other", 0) > 0.15]
    if noisy:
        lines.append(
            f"\nWARNING: during {', '.join(noisy)}, processes outside the benchmark used more "
            "than 0.15 core ('other'): the machine was not quiet, these figures are noisy."
        )
    missing = [s for s in SCENARIOS if s not in {r.scenario for r in results}]
    if missing:
        lines.append(f"\nINTERRUPTED, not completed: {' '.join(missing)}")
    lines.append(
        f"\ntotal run time {time.monotonic() - started_at:.0f} s; "
        f"logs and raw outputs in {os.path.relpath(logdir, REPO)}/"
    )
    text = "\n".join(lines)
    path = os.path.join(RESULTS, f"{stamp}.txt")
    with open(path, "w") as f:
        f.write(text + "\n")
    print("\n" + text, flush=True)
    print(f"(written to {os.path.relpath(path, REPO)})", flush=True)
    return 1 if missing or any(r.failed or r.errors for r in results) else 0


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        sys.exit(main())
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted")
