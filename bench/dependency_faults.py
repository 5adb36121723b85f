#!/usr/bin/env python3
"""Dependency faults against evalsvc as production runs it: what callers get while PostgreSQL,
Redis or the users service fails, how fast, /health meanwhile, and how long the service takes
to recover. See bench/README.md, "Dependency faults".

    bench/dependency_faults.py [--seconds 5] [--quick] [--only lock,redis,users,kill]

Starts bin/serve (production settings, nginx in front of 3 sync gunicorn workers) on a scratch
PostgreSQL database with a private redis-server and a users-service double (bench/live_stack.py),
DATABASE_STATEMENT_TIMEOUT=1 (production: 5), seeded with 200 users x 10 exercises, every token
presented once. For each fault, 6 known callers call without pause (each on its own keep-alive
connection; 70 % GET /scores/<id> of one of their scores, 30 % PATCH /scores) and /health is
asked every 100 ms; 2 s of that, then the fault for ``--seconds``, then until the service has
recovered:

- lock:  ``LOCK TABLE scores IN ACCESS EXCLUSIVE MODE`` held (past the statement deadline);
- redis: the private redis-server stopped (SIGSTOP), then resumed (SIGCONT); recovered when a
  verdict the service fetched after SIGCONT is in Redis (it uses Redis again);
- users: the users service answering 1 s past USERS_SERVICE_TIMEOUT, while 6 more callers
  present a new (unknown) token on every request; recovered when the unknown tokens are served;
- kill:  every service connection to the database terminated (pg_terminate_backend) at once,
  then every second.

Recovered (lock, users, kill): the last answer other than a 2xx, counted from the end of the
fault, once 2 s of nothing but 2xx followed it. Exits 1 if the service broke its contract: an
answer that is neither a 2xx nor a JSON 503 with Retry-After (during the Redis fault: not a
2xx), no answer, an answer past the fault's bound, /health not a 200 within 1 s, or no
recovery within 30 s.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import live_stack
from live_stack import Answer, HealthWatch, LiveStack, health_summary, ms, percentile

USERS, EXERCISES = 200, 10
CLIENTS = 6  # known callers (and, in the users fault, as many unknown ones)
STATEMENT_TIMEOUT = "1"  # seconds, DATABASE_STATEMENT_TIMEOUT for the run
RECOVERY_LIMIT = 30.0  # seconds after the fault
DATABASE_DOWN = "The database is unavailable; retry later."

Call = tuple[str, str, Any, str]  # method, path, body, token


@dataclass
class Sample:
    caller: str  # "known" or "unknown"
    started: float  # time.monotonic()
    took: float
    status: int | None  # None: no answer
    label: str  # the status and its JSON detail, or the exception
    refusal: str = ""  # why a non-2xx answer is not the contract's JSON 503, if it is not

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def ended(self) -> float:
        return self.started + self.took


def classify(caller: str, started: float, took: float, answer: Answer) -> Sample:
    label = str(answer.status)
    refusal = ""
    if not 200 <= answer.status < 300:
        label = f"{answer.status} {answer.detail()!r}"
        if answer.status != 503:
            refusal = "not a 503"
        elif answer.headers.get("content-type") != "application/json":
            refusal = "a 503 that is not JSON"
        elif not answer.headers.get("retry-after", "").isdigit():
            refusal = "a 503 without Retry-After"
    return Sample(caller, started, took, answer.status, label, refusal)


class Callers:
    """``clients`` threads calling without pause, each on its own keep-alive connection, until
    stopped (or 120 s); every call is kept as a Sample."""

    def __init__(
        self, port: int, clients: int, caller: str, call: Callable[[random.Random], Call]
    ) -> None:
        self.port, self.caller, self.call = port, caller, call
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(seed,), daemon=True) for seed in range(clients)
        ]

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        conn: http.client.HTTPConnection | None = None
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            method, path, body, token = self.call(rng)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            started = time.monotonic()
            try:
                answer = live_stack.exchange(conn, method, path, body, token)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                took = time.monotonic() - started
                self.samples.append(
                    Sample(self.caller, started, took, None, f"no answer: {type(exc).__name__}")
                )
                continue
            self.samples.append(classify(self.caller, started, time.monotonic() - started, answer))
            if answer.headers.get("connection", "").lower() == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


def known_call(rng: random.Random) -> Call:
    user, exercise = rng.randint(1, USERS), rng.randint(1, EXERCISES)
    if rng.random() < 0.7:
        return "GET", f"/scores/{(exercise - 1) * USERS + user}", None, f"u{user}"
    return "PATCH", "/scores", {"exercise_id": exercise, "correct": rng.random() < 0.5}, f"u{user}"


_unknown = iter(range(100_000, 10**9))


def unknown_call(rng: random.Random) -> Call:
    return "GET", "/scores/user", None, f"u{next(_unknown)}"  # a token never seen before


@dataclass
class Fault:
    key: str
    title: str
    bound: float  # seconds: no answer may take longer
    inject: Callable[[], None]
    release: Callable[[], None]
    refusals_allowed: bool = True  # a JSON 503 keeps the contract (not for Redis)
    unknown_callers: bool = False
    # its own recovery measure: seconds after the fault (None: not within RECOVERY_LIMIT)
    recovered_after: Callable[[float], float | None] | None = None
    recovery_label: str = ""
    notes: list[str] = field(default_factory=list)  # more lines for the report


@dataclass
class Outcome:
    fault: Fault
    lines: list[str]
    breaches: list[str]


def counts(samples: list[Sample]) -> str:
    if not samples:
        return "none"
    return ", ".join(
        f"{label} x {count:,}" for label, count in sorted(Counter(s.label for s in samples).items())
    )


def timing(samples: list[Sample]) -> str:
    took = [sample.took for sample in samples]
    return (
        f"p50 {ms(percentile(took, 50))}, p99 {ms(percentile(took, 99))}, "
        f"max {ms(max(took, default=0))}"
    )


def run_fault(stack: LiveStack, fault: Fault, pre: float, hold: float, stable: float) -> Outcome:
    """Callers and /health probes before, during and after ``fault``; its figures and the
    contract's breaches."""
    breaches: list[str] = []
    with HealthWatch(stack.port) as health:
        callers = [Callers(stack.port, CLIENTS, "known", known_call)]
        if fault.unknown_callers:
            callers.append(Callers(stack.port, CLIENTS, "unknown", unknown_call))
        for group in callers:
            group.__enter__()
        try:
            time.sleep(pre)
            meter = stack.cpu_meter()
            start = time.monotonic()
            fault.inject()
            try:
                time.sleep(max(0.0, start + hold - time.monotonic()))
            finally:
                fault.release()
            end = time.monotonic()
            cpu = meter.read()
            own_recovery = fault.recovered_after(end) if fault.recovered_after else None
            while True:  # until `stable` seconds of nothing but 2xx after the last other answer
                time.sleep(0.2)
                now = time.monotonic()
                done = [s for group in callers for s in group.samples if s.ended >= end]
                last_bad = max((s.ended for s in done if not s.ok), default=end)
                if now - last_bad >= stable and any(s.started > last_bad for s in done):
                    break
                if now - end > RECOVERY_LIMIT:
                    breaches.append(f"not recovered {RECOVERY_LIMIT:.0f} s after the fault")
                    break
        finally:
            for group in callers:
                group.__exit__()
    samples = [s for group in callers for s in group.samples]
    during = [s for s in samples if start <= s.started < end]
    after = [s for s in samples if s.started > last_bad]
    lines = []
    for group in callers:
        mine = [s for s in during if s.caller == group.caller]
        who = f"{group.caller} callers" if fault.unknown_callers else "answers"
        lines.append(f"{who + ' during:':<24}{len(mine):,}: {counts(mine)}")
        lines.append(f"{'  time to answer:':<24}{timing(mine)} (bound {fault.bound:g} s)")
    health_line, _ = health_summary(health.between(start, end))
    lines.append(f"{'/health during:':<24}{health_line}")
    if fault.recovered_after is not None:
        back = "not within the limit" if own_recovery is None else f"{own_recovery:.1f} s"
        lines.append(f"{'recovered:':<24}{fault.recovery_label} {back} after the fault")
        if own_recovery is None:
            breaches.append(f"{fault.recovery_label}: not within {RECOVERY_LIMIT:.0f} s")
    recovery = max(0.0, last_bad - end)
    lines.append(
        f"{'after:':<24}"
        + (
            f"the last non-2xx {recovery:.1f} s after the fault"
            if recovery
            else "every answer after the fault a 2xx"
        )
        + f"; since then {len(after):,} answers, "
        + (f"{late_bad} not 2xx" if (late_bad := sum(not s.ok for s in after)) else "all 2xx")
        + f", {timing(after)}"
    )
    lines += fault.notes
    lines.append(f"{'during the fault:':<24}{cpu} (cores)")
    breaches += health_summary(health.probes)[1]  # before, during and after the fault
    for sample in samples:
        if sample.status is None:
            breaches.append(f"{sample.caller}: {sample.label} after {sample.took:.2f} s")
        elif sample.refusal or (not sample.ok and not fault.refusals_allowed):
            breaches.append(f"{sample.caller}: {sample.label} ({sample.refusal or 'not a 2xx'})")
        if sample.took > fault.bound:
            breaches.append(
                f"{sample.caller}: {sample.label} after {sample.took:.2f} s, "
                f"past the bound {fault.bound:g} s"
            )
    return Outcome(fault, lines, breaches)


# === The faults ==============================================================================


def lock_fault(stack: LiveStack) -> Fault:
    import psycopg

    # connected before the fault, so the lock is asked for the moment the fault begins
    locker = psycopg.connect(stack.url, application_name=live_stack.CHECKER)

    def inject() -> None:
        asked = time.monotonic()
        locker.execute("LOCK TABLE scores IN ACCESS EXCLUSIVE MODE")
        fault.notes.append(
            f"{'lock:':<24}granted {ms(time.monotonic() - asked)} after it was asked"
        )

    def release() -> None:
        locker.rollback()
        locker.close()

    timeout = stack.setting("DATABASE_STATEMENT_TIMEOUT")
    fault = Fault(
        "lock",
        f"scores locked (ACCESS EXCLUSIVE), DATABASE_STATEMENT_TIMEOUT {timeout:g} s",
        # each worker waits the deadline until its breaker opens; a caller queues a round
        bound=timeout * live_stack.WORKERS + 2,
        inject=inject,
        release=release,
    )
    return fault


def redis_fault(stack: LiveStack) -> Fault:
    import redis

    fault = Fault(
        "redis",
        f"Redis stopped (SIGSTOP), REDIS_TIMEOUT {stack.setting('REDIS_TIMEOUT'):g} s",
        bound=2.0,  # a few Redis calls' deadline, then none (the breaker)
        inject=lambda: stack.redis.send_signal(signal.SIGSTOP),
        release=lambda: stack.redis.send_signal(signal.SIGCONT),
        refusals_allowed=False,
        recovery_label="back on Redis (a verdict fetched after SIGCONT stored there)",
    )

    def back_on_redis(resumed: float) -> float | None:
        """Seconds from SIGCONT until a request with a new token leaves its verdict in Redis:
        the service uses Redis again (a request every 0.2 s, 30 s at most)."""
        client = redis.Redis(port=stack.redis_port, socket_timeout=2)
        try:
            for n in range(int(RECOVERY_LIMIT / 0.2)):
                token = f"u{900_000 + n}"
                asked = time.monotonic()
                live_stack.request(stack.port, "GET", "/scores/summary", token=token, timeout=10)
                digest = hashlib.sha256(token.encode()).hexdigest()
                if client.keys(f"*verdict:{digest}"):
                    return asked - resumed
                time.sleep(max(0.0, asked + 0.2 - time.monotonic()))
            return None
        finally:
            client.close()

    fault.recovered_after = back_on_redis
    return fault


def users_fault(stack: LiveStack) -> Fault:
    timeout = stack.setting("USERS_SERVICE_TIMEOUT")
    return Fault(
        "users",
        f"users service answering after {timeout + 1:g} s (USERS_SERVICE_TIMEOUT {timeout:g} s), "
        "unknown tokens on every request",
        bound=timeout + 2,  # an unknown token: the deadline, after a short wait for a slot
        inject=lambda: stack.users.switch(f"slow:{timeout + 1:g}"),
        release=lambda: stack.users.switch("up"),
        unknown_callers=True,
    )


def kill_fault(stack: LiveStack) -> Fault:
    import psycopg

    stop = threading.Event()
    killed: list[int] = []
    # connected before the fault (the killer thread uses it alone)
    conn = psycopg.connect(
        f"{live_stack.PG_URL}/postgres", application_name=live_stack.CHECKER, autocommit=True
    )

    def killer() -> None:
        with conn:
            while True:  # at once, then every second until released
                terminated = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name <> %s",
                    [stack.database, live_stack.CHECKER],
                ).fetchone()
                killed.append(int(terminated[0]) if terminated else 0)
                if stop.wait(1.0):
                    return

    thread = threading.Thread(target=killer, daemon=True)

    def release() -> None:
        stop.set()
        thread.join(10)
        fault.notes.append(f"{'terminated:':<24}service connections, kill by kill: {killed}")

    connect = stack.setting("DATABASE_CONNECT_TIMEOUT")
    fault = Fault(
        "kill",
        "the service's PostgreSQL connections terminated at once, then every second",
        bound=connect + stack.setting("DATABASE_STATEMENT_TIMEOUT") + 1,
        inject=thread.start,
        release=release,
    )
    return fault


FAULTS = {"lock": lock_fault, "redis": redis_fault, "users": users_fault, "kill": kill_fault}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5, help="how long each fault lasts (5)")
    parser.add_argument("--quick", action="store_true", help="3 s faults, shorter margins")
    parser.add_argument(
        "--only", default=",".join(FAULTS), help="which faults, in this order (all)"
    )
    args = parser.parse_args()
    keys = [key.strip() for key in args.only.split(",") if key.strip()]
    if unknown := set(keys) - set(FAULTS):
        parser.error(f"unknown faults {sorted(unknown)}; choose among {', '.join(FAULTS)}")
    hold = 3.0 if args.quick and args.seconds == 5 else args.seconds
    if not float(STATEMENT_TIMEOUT) < hold <= 60:
        parser.error(
            f"--seconds must be more than {STATEMENT_TIMEOUT} (the deadline) and 60 at most"
        )
    pre, stable = (1.0, 1.0) if args.quick else (2.0, 2.0)
    live_stack.ensure_venv()
    live_stack.stop_on_signals()
    started = time.monotonic()
    breaches: list[str] = []
    with live_stack.live_stack(
        "faults",
        users=USERS,
        exercises=EXERCISES,
        settings={"DATABASE_STATEMENT_TIMEOUT": STATEMENT_TIMEOUT},
    ) as stack:
        live_stack.warm_tokens(stack.port, range(1, USERS + 1))
        print(
            live_stack.header(
                "dependency faults",
                stack,
                f"; {USERS} users x {EXERCISES} exercises, every token presented once",
            )
        )
        print(
            f"  {CLIENTS} known callers without pause (70 % GET /scores/<id>, 30 % PATCH "
            f"/scores, keep-alive); /health every 100 ms; {pre:g} s before each fault, the "
            f"fault {hold:g} s, then until {stable:g} s of only 2xx"
        )
        for key in keys:
            fault = FAULTS[key](stack)
            outcome = run_fault(stack, fault, pre, hold, stable)
            print(f"\n({'abcd'[list(FAULTS).index(key)]}) {key}, {hold:g} s: {fault.title}")
            for line in outcome.lines:
                print(f"    {line}")
            breaches += [f"{key}: {breach}" for breach in outcome.breaches]
        if breaches:
            print(f"\nthe service's log, last lines:\n{stack.log_tail()}")
    if breaches:
        print(f"\nCONTRACT BROKEN ({len(breaches)}):")
        for breach in breaches[:30]:
            print(f"  {breach}")
    else:
        print(
            "\ncontract held: every answer a 2xx or a JSON 503 with Retry-After (Redis stopped: "
            "a 2xx) within its bound, /health a 200 within 1 s, recovered without a restart"
        )
    print(f"\ndependency faults: done in {time.monotonic() - started:.0f} s")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
