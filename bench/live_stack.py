"""evalsvc as production runs it, on loopback, for the fault measurements (bench/slow_clients.py
and bench/dependency_faults.py): ``bin/serve`` (nginx in front of gunicorn) under production
settings, on a scratch PostgreSQL database created, migrated and seeded here and dropped at the
end, with a private ``redis-server`` on its own port and a users-service double whose answers
can be switched (up, down, slow...).

The same approach as the ``live`` fixture of scores/tests/test_faults.py, with the same
users-service double (scores/tests/users_double.py). Needs the project's virtualenv for psycopg
and redis: ``ensure_venv()`` builds it with bin/_venv.sh and re-runs the script under it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
CHECKER = "evalsvc-bench-checker"  # application_name of the bench's own connections
WORKERS = 3  # bin/serve's default WEB_CONCURRENCY
# Verdicts outlive the run (as bench/run.sh and bench/load.sh do), so the warmed callers stay
# known callers whatever a fault does to the users service.
VERDICT_SECONDS = 900

sys.path.insert(0, str(REPO))
from scores.tests.users_double import UsersServiceDouble, free_port  # noqa: E402 (needs REPO)


def ensure_venv() -> None:
    """Re-run this script under the project's virtualenv (built by bin/_venv.sh if missing)
    unless psycopg and redis can already be imported."""
    try:
        import psycopg  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        pass
    else:
        return
    if os.environ.get("EVALSVC_BENCH_REEXEC"):
        sys.exit("bench: psycopg and redis are missing from the virtualenv")
    subprocess.run(["bash", "-c", "venv_level=base; source bin/_venv.sh"], cwd=REPO, check=True)
    python = str(REPO / os.environ.get("VENV", ".venv") / "bin" / "python")
    os.environ["EVALSVC_BENCH_REEXEC"] = "1"
    os.execv(python, [python, *sys.argv])


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the script like Ctrl-C: everything it started is stopped and the
    scratch database dropped."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: sys.exit(128 + signum))


# === HTTP ====================================================================================


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def detail(self) -> str:
        """The JSON error's ``detail``, or the start of the body."""
        try:
            return str(self.json().get("detail"))
        except (ValueError, AttributeError):
            return self.body[:60].decode("latin-1")


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    timeout: float = 30,
) -> Answer:
    """One request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        return exchange(conn, method, path, body, token)
    finally:
        conn.close()


def exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
) -> Answer:
    """One request on ``conn`` (kept alive by the server unless it says otherwise)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    return Answer(
        response.status,
        {name.lower(): value for name, value in response.getheaders()},
        response.read(),
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


# === The users service double ================================================================


# === /health, asked every 100 ms =============================================================


@dataclass
class Probe:
    started: float  # time.monotonic()
    took: float  # seconds
    outcome: str  # "200", another status, or the exception's name


@dataclass
class HealthWatch:
    """Asks ``GET /health`` every 0.1 s, each on a new connection with a 5 s timeout, while it
    runs (a thread); keeps every probe."""

    port: int
    interval: float = 0.1
    probes: list[Probe] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthWatch:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _watch(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                outcome = str(request(self.port, "GET", "/health", timeout=5).status)
            except OSError as exc:
                outcome = type(exc).__name__
            self.probes.append(Probe(started, time.monotonic() - started, outcome))
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def between(self, start: float, end: float) -> list[Probe]:
        return [probe for probe in self.probes if start <= probe.started < end]


def health_summary(probes: list[Probe]) -> tuple[str, list[str]]:
    """One line on the probes (p50, p99, max, failures) and the contract's breaches among them:
    an answer other than 200, or one that took 1 s or more."""
    took = [probe.took for probe in probes]
    bad = [
        f"/health {probe.outcome} after {probe.took:.2f} s"
        for probe in probes
        if probe.outcome != "200" or probe.took >= 1
    ]
    line = (
        f"{len(probes)} probes, p50 {ms(percentile(took, 50))}, p99 {ms(percentile(took, 99))}, "
        f"max {ms(max(took, default=0))}, failures {len(bad)}"
    )
    return line, bad


# === CPU, from /proc ==========================================================================

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_ticks() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU ticks of the process and its reaped children) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            table[int(entry)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    return table


def _tree_ticks(table: dict[int, tuple[int, int]], roots: list[int]) -> int:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, list(roots)
    while todo:
        pid = todo.pop()
        total += table.get(pid, (0, 0))[1]
        todo.extend(children.get(pid, []))
    return total


def _machine_ticks() -> tuple[int, int]:
    """(busy, idle) ticks of the whole machine."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, idle


class CpuMeter:
    """Cores used between ``start()`` and ``read()``: ``service`` (bin/serve's nginx and
    gunicorn processes, and the private Redis), ``postgres`` (the whole PostgreSQL server: other
    work's databases too), ``bench`` (this script, its threads and wrk), ``other`` (the rest of
    the machine: other work), ``idle``. They add up to the machine's cores."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.start()

    def _snapshot(self) -> dict[str, int]:
        table = _process_ticks()
        snapshot = {name: _tree_ticks(table, roots) for name, roots in self.groups.items()}
        snapshot["_busy"], snapshot["_idle"] = _machine_ticks()
        return snapshot

    def start(self) -> None:
        self._started, self._before = time.monotonic(), self._snapshot()

    def read(self) -> str:
        after, wall = self._snapshot(), time.monotonic() - self._started
        cores = {name: (after[name] - self._before[name]) / CLK_TCK / wall for name in self.groups}
        busy = (after["_busy"] - self._before["_busy"]) / CLK_TCK / wall
        cores["other"] = max(0.0, busy - sum(cores.values()))
        cores["idle"] = (after["_idle"] - self._before["_idle"]) / CLK_TCK / wall
        return "cpu " + " ".join(f"{name} {value:.2f}" for name, value in cores.items())


# === The stack ===============================================================================


@dataclass
class LiveStack:
    """evalsvc under bin/serve on ``port`` with its scratch database, Redis and users double."""

    port: int
    database: str
    url: str  # the scratch database
    env: dict[str, str]  # bin/serve's environment
    log: Path
    serve: subprocess.Popen[bytes]
    redis: subprocess.Popen[bytes]
    redis_port: int
    users: UsersServiceDouble
    ready_after: float  # seconds from creating the database to /ready's 200
    postmaster: int | None  # the PostgreSQL server's pid, when it runs on this machine

    def cpu_meter(self) -> CpuMeter:
        """A CpuMeter of this stack, started."""
        return CpuMeter(
            {
                "service": [self.serve.pid, self.redis.pid],
                "postgres": [self.postmaster] if self.postmaster else [],
                "bench": [os.getpid()],
            }
        )

    def setting(self, name: str) -> float:
        return float(self.env[name])

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def seed(url: str, users: int, exercises: int, reader_scores: int) -> None:
    """The layout of bench/seed.sql, sized: users 1..``users`` x exercises 1..``exercises``,
    id = (exercise - 1) * users + user, each score as if written once through the API (one
    applied attempt in the log); and user ``users + 1`` (the slow readers' user) with
    ``reader_scores`` scores, so a page of theirs is a large answer."""
    import psycopg

    with psycopg.connect(url, application_name=CHECKER, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.42)")
        with conn.transaction():
            conn.execute(
                "INSERT INTO scores (user_id, exercise_id, correct, created_at, updated_at, "
                "attempts, last_attempted_at, first_correct_at, first_attempt_correct, "
                "attempts_to_correct) "
                "SELECT user_id, exercise_id, correct, now(), now(), 1, now(), "
                "CASE WHEN correct THEN now() END, correct, CASE WHEN correct THEN 1 END "
                "FROM (SELECT i %% %(users)s + 1 AS user_id, i / %(users)s + 1 AS exercise_id, "
                "random() < 0.5 AS correct FROM generate_series(0, %(rows)s - 1) AS i "
                "UNION ALL SELECT %(users)s + 1, e, true "
                "FROM generate_series(1, %(reader)s) AS e) AS seed",
                {"users": users, "rows": users * exercises, "reader": reader_scores},
            )
            conn.execute(
                "INSERT INTO score_attempts (score_id, user_id, exercise_id, correct, "
                "attempted_at, recorded_at, recorded_by, attempt_id, applied, created_score) "
                "SELECT id, user_id, exercise_id, correct, updated_at, updated_at, 'bench-seed', "
                "NULL, true, true FROM scores ORDER BY id"
            )
        conn.execute("VACUUM (ANALYZE)")


def warm_tokens(port: int, users: range, threads: int = 8) -> None:
    """Present every user's token once (``GET /scores/summary``), so its verdict is cached as in
    steady operation; each answer must be a 200."""
    from concurrent.futures import ThreadPoolExecutor

    def present(user: int) -> int:
        return request(port, "GET", "/scores/summary", token=f"u{user}").status

    with ThreadPoolExecutor(threads) as pool:
        statuses = list(pool.map(present, users))
    if set(statuses) != {200}:
        raise RuntimeError(f"token warm-up answered {sorted(set(statuses))}")


def _postmaster(url: str) -> int | None:
    """The parent of this connection's backend: the PostgreSQL server, if it is local."""
    import psycopg

    with psycopg.connect(url, application_name=CHECKER) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        try:
            with open(f"/proc/{row[0] if row else 0}/stat") as stat:
                return int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None


class PortTaken(RuntimeError):
    """A loopback port picked as free was taken before the server bound it (other work on the
    machine picks ports too): try another."""


def _start_redis(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server on a free loopback port, answering PING."""
    for _ in range(3):
        port = free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return process, port
            except OSError:
                time.sleep(0.1)
        _stop(process)
    raise RuntimeError("redis-server did not start:\n" + log.read_text()[-2000:])


def _start_serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """bin/serve on a free loopback port, once /ready answers 200."""
    for _ in range(3):
        port = free_port()
        env["PORT"] = str(port)
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["bin/serve"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            _wait_until_ready(port, process, log)
        except PortTaken:
            _stop(process)
            continue
        except BaseException:
            _stop(process)
            raise
        return process, port
    raise RuntimeError("bin/serve found no free port:\n" + log.read_text()[-2000:])


def _wait_until_ready(port: int, serve: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if request(port, "GET", "/ready", timeout=5).status == 200:
                return
        except OSError:
            pass
        if serve.poll() is not None and "Address already in use" in log.read_text():
            raise PortTaken()
        if serve.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("bin/serve did not become ready:\n" + log.read_text()[-3000:])
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


@contextmanager
def live_stack(
    name: str,
    *,
    users: int,
    exercises: int,
    reader_scores: int = 0,
    settings: dict[str, str] | None = None,
) -> Iterator[LiveStack]:
    """Create the scratch database ``evalsvc_<name>_<pid>``, migrate and seed it (``seed``),
    start a Redis server, the users double and bin/serve (production settings, 3 sync workers
    behind nginx, ``settings`` on top); yield once /ready answers 200; stop them all and drop
    the database afterwards, however the block ends."""
    import psycopg

    begun = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f"evalsvc-{name}."))
    database = f"evalsvc_{name}_{os.getpid()}"
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")
    url = f"{PG_URL}/{database}"
    double = UsersServiceDouble(port=free_port())
    double.switch("up")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SERVE_USE_PATH": "1",
        "DJANGO_SETTINGS_MODULE": "evalsvc.settings.production",
        "SECRET_KEY": "bench-only-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEF",
        "DATABASE_URL": url,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback: no TLS proxy in front
        "USERS_SERVICE_URL": f"http://127.0.0.1:{double.port}",
        "USERS_SERVICE_CACHE_SECONDS": str(VERDICT_SECONDS),
        "THROTTLE_RATE_USER": "100000000/min",  # a 429 would hide what the fault does
        "THROTTLE_RATE_ANON": "100000000/min",
        "WEB_CONCURRENCY": str(WORKERS),
        "HOST": "127.0.0.1",  # PORT and CACHE_URL: the ports found free (below)
        **(settings or {}),
    }
    for unset in ("CONN_MAX_AGE", "DATABASE_REPLICA_URL", "LOG_FORMAT", "TRUSTED_PROXY_COUNT"):
        env.pop(unset, None)  # production's defaults: persistent connections, JSON logs
    # The deadlines in force, production's defaults unless set above or in the environment.
    defaults = {
        "DATABASE_STATEMENT_TIMEOUT": "5",
        "DATABASE_CONNECT_TIMEOUT": "3",
        "REDIS_TIMEOUT": "0.25",
        "USERS_SERVICE_TIMEOUT": "2",
        "CLIENT_TIMEOUT": "10",
        "REQUEST_TIMEOUT": "30",
    }
    for setting, default in defaults.items():
        env.setdefault(setting, default)
    log = tmp / "serve.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        migrated = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=REPO, env=env, capture_output=True, check=False,
        )  # fmt: skip
        if migrated.returncode:
            raise RuntimeError("migrate failed:\n" + migrated.stderr.decode()[-3000:])
        seed(url, users, exercises, reader_scores)
        redis_server, redis_port = _start_redis(log)
        processes.append(redis_server)
        env["CACHE_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        serve, port = _start_serve(env, log)
        processes.append(serve)
        yield LiveStack(
            port=port,
            database=database,
            url=url,
            env=env,
            log=log,
            serve=serve,
            redis=redis_server,
            redis_port=redis_port,
            users=double,
            ready_after=time.monotonic() - begun,
            postmaster=_postmaster(url),
        )
    finally:
        double.released.set()
        double.stop()
        for process in reversed(processes):
            _stop(process)
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for path in sorted(tmp.iterdir()):
            path.unlink()
        tmp.rmdir()


def header(title: str, stack: LiveStack, extra: str = "") -> str:
    """The lines that say what ran where: commit, machine load, the stack and its deadlines."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h %cs"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    deadlines = ", ".join(
        f"{name}={stack.env[name]}"
        for name in (
            "DATABASE_STATEMENT_TIMEOUT",
            "DATABASE_CONNECT_TIMEOUT",
            "REDIS_TIMEOUT",
            "USERS_SERVICE_TIMEOUT",
            "CLIENT_TIMEOUT",
            "REQUEST_TIMEOUT",
        )
    )
    return (
        f"{title}: commit {commit or '?'}{' (work tree changed)' if dirty else ''}, "
        f"{os.cpu_count()} cores, load average {load}\n"
        f"  bin/serve on 127.0.0.1:{stack.port} (production settings, {WORKERS} sync workers "
        f"behind nginx), scratch database {stack.database}, redis-server on :{stack.redis_port}, "
        f"users double on :{stack.users.port}{extra}; ready after {stack.ready_after:.0f} s "
        "(migrated, seeded)\n"
        f"  {deadlines}"
    )
