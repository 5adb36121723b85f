#!/usr/bin/env python3
"""Slow clients against evalsvc as production runs it: 300 slow connections held open while a
normal load runs, and /health asked every 100 ms. See bench/README.md, "Slow clients".

    bench/slow_clients.py [--seconds 15] [--quick]

Starts bin/serve (production settings, nginx in front of 3 sync gunicorn workers) on a scratch
PostgreSQL database with a private redis-server and a users-service double (bench/live_stack.py),
seeded with 1,000 users x 10 exercises, every user's token presented once. Then, each phase
``--seconds`` long:

1. without slow clients: wrk's get_one load (-t2 -c16, bench/wrk/get_one.lua, each answer within
   10 s) and a /health probe started every 100 ms (a new connection each, 5 s timeout);
2. with 300 slow clients connected, the same load and probes. The slow clients:
   - 100 slowloris: a request line, then one header byte a second, never ending the head;
   - 100 slow bodies: the whole head of PATCH /scores with Content-Length: 100000, then one
     body byte a second;
   - 100 slow readers: SO_RCVBUF 4096, GET /scores/user?page_size=1000 of a user with 1,000
     scores (a 240 KB answer; ``--reader-answers N`` pipelines N of them), never reading a byte.
   A connection the server drops (TCP_INFO no longer ESTABLISHED, checked every second, or a
   send that fails) is counted and opened again at once, like a persistent attacker.

Prints both phases' throughput, p50, p99 and errors, /health's p50, p99, max and failures, and
the slow connections the server dropped. Exits 1 if the service broke its contract: a normal
request answered other than 2xx or not within 10 s, or /health not a 200 within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field

import live_stack
from live_stack import LiveStack, Probe, health_summary

USERS, EXERCISES = 1000, 10
READER = USERS + 1  # the slow readers' user: READER_SCORES scores, a large page
READER_SCORES = 1000
PER_KIND = 100
WRK_TIMEOUT = 10  # seconds: a normal request not answered by then is a hang
TCP_ESTABLISHED = 1
KINDS = ("slowloris", "slow_body", "slow_reader")


@dataclass
class KindStats:
    connects: int = 0
    connected: int = 0
    drops: int = 0
    lifetimes: list[float] = field(default_factory=list)  # of the dropped connections


def tcp_state(sock: socket.socket) -> int:
    try:
        return int(struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0])
    except OSError:
        return -1


async def slow_client(
    kind: str, n: int, port: int, answers: int, stats: KindStats, stop: asyncio.Event
) -> None:
    """One slow connection of ``kind``, opened again whenever the server drops it."""
    loop = asyncio.get_running_loop()
    host = f"127.0.0.1:{port}"
    while not stop.is_set():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if kind == "slow_reader":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 10)
        except (OSError, TimeoutError):
            sock.close()
            await asyncio.sleep(1)
            continue
        opened = time.monotonic()
        stats.connects += 1
        stats.connected += 1
        trickle: bytes | None
        try:
            if kind == "slowloris":
                head = f"GET /scores/user HTTP/1.1\r\nHost: {host}\r\nX-Slow: "
                trickle = b"a"
            elif kind == "slow_body":
                head = (
                    f"PATCH /scores HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer u{n + 1}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                )
                trickle = b" "
            else:
                head = (
                    f"GET /scores/user?page_size={READER_SCORES} HTTP/1.1\r\nHost: {host}\r\n"
                    f"Authorization: Bearer u{READER}\r\n\r\n"
                ) * answers
                trickle = None
            await loop.sock_sendall(sock, head.encode())
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if stop.is_set():
                    break
                if tcp_state(sock) != TCP_ESTABLISHED:
                    raise ConnectionError("dropped by the server")
                if trickle is not None:
                    await asyncio.wait_for(loop.sock_sendall(sock, trickle), 5)
        except (OSError, TimeoutError):
            stats.drops += 1
            stats.lifetimes.append(time.monotonic() - opened)
        finally:
            stats.connected -= 1
            sock.close()


async def probe(port: int) -> Probe:
    started = time.monotonic()

    async def ask() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = await reader.read()
        writer.close()
        return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "no answer"

    try:
        outcome = await asyncio.wait_for(ask(), 5)
    except (OSError, TimeoutError) as exc:
        outcome = type(exc).__name__
    return Probe(started, time.monotonic() - started, outcome)


async def probes_for(port: int, seconds: float) -> list[Probe]:
    """A /health probe started every 100 ms for ``seconds`` (each on its own, however long
    the previous takes)."""
    tasks = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tasks.append(asyncio.ensure_future(probe(port)))
        await asyncio.sleep(0.1)
    return list(await asyncio.gather(*tasks))


async def wrk(port: int, seconds: float) -> dict[str, float]:
    """wrk's get_one load for ``seconds``: its BENCH line's figures."""
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t2", "-c16", f"-d{seconds:g}s", f"--timeout={WRK_TIMEOUT}s",
        "-s", str(live_stack.BENCH / "wrk" / "get_one.lua"), f"http://127.0.0.1:{port}",
        env={**os.environ, "LOAD_USERS": str(USERS), "LOAD_EXERCISES": str(EXERCISES)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await process.communicate())[0].decode()
    found = re.search(r"^BENCH (.*)$", out, re.MULTILINE)
    if not found:
        raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")
    return {key: float(value) for key, value in (pair.split("=") for pair in found[1].split())}


@dataclass
class Phase:
    name: str
    load: dict[str, float]
    probes: list[Probe]
    cpu: str


async def loaded_phase(name: str, stack: LiveStack, seconds: float) -> Phase:
    meter = stack.cpu_meter()
    load, probes = await asyncio.gather(wrk(stack.port, seconds), probes_for(stack.port, seconds))
    return Phase(name, load, probes, meter.read())


async def measure(
    stack: LiveStack, seconds: float, warmup: float, ramp: float, settle: float, answers: int
) -> int:
    port = stack.port
    if warmup:
        await wrk(port, warmup)  # not recorded: workers, connections and caches warm
    phases = [await loaded_phase("without slow clients", stack, seconds)]
    await asyncio.sleep(1)

    stop = asyncio.Event()
    stats = {kind: KindStats() for kind in KINDS}
    clients = []
    for n in range(PER_KIND):
        for kind in KINDS:
            clients.append(
                asyncio.ensure_future(slow_client(kind, n, port, answers, stats[kind], stop))
            )
        await asyncio.sleep(ramp / PER_KIND)
    await asyncio.sleep(settle)
    at_start = {kind: stats[kind].connected for kind in KINDS}
    drops_before = {kind: stats[kind].drops for kind in KINDS}
    phases.append(await loaded_phase(f"with {PER_KIND * len(KINDS)} slow clients", stack, seconds))
    at_end = {kind: stats[kind].connected for kind in KINDS}
    drops_during = {kind: stats[kind].drops - drops_before[kind] for kind in KINDS}
    stop.set()
    await asyncio.wait_for(asyncio.gather(*clients, return_exceptions=True), 15)

    breaches: list[str] = []
    print(
        f"\n{'phase':<24}{'req/s':>9}{'p50':>10}{'p99':>10}{'requests':>10}{'non-2xx':>9}"
        f"{'socket errors':>15}   /health"
    )
    for phase in phases:
        load = phase.load
        line, bad = health_summary(phase.probes)
        print(
            f"{phase.name:<24}{load['rps']:>9,.1f}"
            f"{load['p50_ms']:>7.1f} ms{load['p99_ms']:>7.1f} ms"
            f"{load['requests']:>10,.0f}{load['non2xx']:>9,.0f}{load['socket_errors']:>15,.0f}"
            f"   {line}"
        )
        breaches += [f"{phase.name}: {breach}" for breach in bad]
        if load["non2xx"] or load["socket_errors"]:
            breaches.append(
                f"{phase.name}: {load['non2xx']:.0f} non-2xx answers, "
                f"{load['socket_errors']:.0f} socket errors (timeouts past {WRK_TIMEOUT} s)"
            )
    for phase in phases:
        print(f"{phase.name:<24}{phase.cpu} (cores)")
    base, slow = phases[0].load, phases[1].load
    print(
        f"with / without slow clients: throughput x{slow['rps'] / base['rps']:.2f}, "
        f"p99 x{slow['p99_ms'] / base['p99_ms']:.2f}"
    )
    print(
        f"\n{'slow connections':<18}{'connected at start/end':>24}{'opened':>8}"
        f"{'dropped by the server':>23}{'(during the phase)':>20}{'median life':>13}"
    )
    for kind in KINDS:
        kind_stats = stats[kind]
        life = f"{statistics.median(kind_stats.lifetimes):.1f} s" if kind_stats.lifetimes else "-"
        print(
            f"{kind:<18}{f'{at_start[kind]} / {at_end[kind]}':>24}{kind_stats.connects:>8}"
            f"{kind_stats.drops:>23}{drops_during[kind]:>20}{life:>13}"
        )
    if breaches:
        print("\nCONTRACT BROKEN:")
        for breach in breaches[:20]:
            print(f"  {breach}")
        return 1
    print("\ncontract held: every normal request a 2xx within 10 s, /health a 200 within 1 s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15, help="length of each phase (15)")
    parser.add_argument(
        "--quick", action="store_true", help="5 s phases and shorter warm-up and ramp"
    )
    parser.add_argument(
        "--reader-answers",
        type=int,
        default=1,
        help="answers each slow reader asks for, pipelined (1)",
    )
    args = parser.parse_args()
    seconds = 5.0 if args.quick and args.seconds == 15 else args.seconds
    if not 1 <= seconds <= 60 or not 1 <= args.reader_answers <= 50:
        parser.error("--seconds must be within 1..60 and --reader-answers within 1..50")
    warmup, ramp, settle = (1.0, 2.0, 2.0) if args.quick else (3.0, 3.0, 3.0)
    if not shutil.which("wrk"):
        sys.exit("bench/slow_clients.py needs wrk (apt-get install wrk)")
    live_stack.ensure_venv()
    live_stack.stop_on_signals()
    started = time.monotonic()
    with live_stack.live_stack(
        "slowclients", users=USERS, exercises=EXERCISES, reader_scores=READER_SCORES
    ) as stack:
        live_stack.warm_tokens(stack.port, range(1, READER + 1))
        page = live_stack.request(
            stack.port, "GET", f"/scores/user?page_size={READER_SCORES}", token=f"u{READER}"
        )
        print(
            live_stack.header(
                "slow clients",
                stack,
                f"; {USERS:,} users x {EXERCISES} exercises, every token presented once",
            )
        )
        print(
            f"  normal load: wrk -t2 -c16 --timeout {WRK_TIMEOUT}s -s bench/wrk/get_one.lua, "
            f"{seconds:g} s a phase; /health asked every 100 ms\n"
            f"  slow clients: {PER_KIND} slowloris (a header byte a second), {PER_KIND} slow "
            f"bodies (a body byte a second of 100,000), {PER_KIND} slow readers (SO_RCVBUF 4096, "
            f"{args.reader_answers} answer(s) of {len(page.body):,} bytes, never read)"
        )
        status = asyncio.run(measure(stack, seconds, warmup, ramp, settle, args.reader_answers))
        if status:
            print(f"\nthe service's log, last lines:\n{stack.log_tail()}")
    print(f"\nslow clients: done in {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
