"""Export scenario: stream ``GET /scores/export.csv`` once, count its rows, and sample the memory
of the gunicorn workers while it runs (Python standard library only).

    python3 bench/export.py --base-url http://127.0.0.1:8300 --token KEY [--pid GUNICORN_MASTER]
                            [--expected ROWS] [--path /scores/export.csv] [--timeout 300]

Prints one parseable line:

    EXPORT status=200 rows=1000000 bytes=... duration_s=... rows_per_s=... ttfb_ms=...
           rss_growth_mb=... rss_baseline_mb=... rss_peak_mb=... rss_worker=PID error=-

* rows: data lines received (the header line excluded), counted as they stream in; the body
  must start with the CSV header and end with a newline, and, with ``--expected``, hold that
  many rows, or ``error`` says what is wrong (and the exit status is 1).
* duration_s: from sending the request to the last byte; rows_per_s = rows / duration_s;
  ttfb_ms: time to the response's first byte (a streamed export starts at once).
* Memory: ``--pid`` is the gunicorn master (its children, the workers, are watched) or one
  worker. Each worker's RSS is read from /proc just before the request (baseline) and every
  ``--interval`` seconds while it runs; the peak also takes the kernel's high-water mark
  (VmHWM) when that rose during the export, so a short spike between two samples is not missed.
  rss_growth_mb = max over the workers of (peak - baseline); rss_worker is the worker that used
  the most CPU meanwhile (the one that served the export). Without ``--pid``: ``n/a``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import threading
import time
import urllib.parse

CSV_HEADER = b"id,user_id,exercise_id,correct,created_at,updated_at,points,max_points\n"
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


class MemorySampler(threading.Thread):
    """Peak RSS of each pid, sampled every ``interval`` seconds until ``stop()``."""

    def __init__(self, pids: list[int], interval: float) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.baseline = {pid: rss(pid) or 0 for pid in pids}
        self.hwm_before = {pid: hwm(pid) or 0 for pid in pids}
        self.cpu_before = {pid: cpu_ticks(pid) for pid in pids}
        self.peak = dict(self.baseline)
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for pid in self.pids:
                value = rss(pid)
                if value is not None and value > self.peak[pid]:
                    self.peak[pid] = value
            self.samples += 1
            self._done.wait(self.interval)

    def stop(self) -> dict[str, object]:
        self._done.set()
        self.join()
        growth: dict[int, int] = {}
        for pid in self.pids:
            peak = self.peak[pid]
            after = hwm(pid) or 0
            if after > self.hwm_before[pid]:  # a new high-water mark was set during the export
                peak = max(peak, after)
            self.peak[pid] = peak
            growth[pid] = peak - self.baseline[pid]
        busiest = max(self.pids, key=lambda pid: cpu_ticks(pid) - self.cpu_before[pid])
        worst = max(self.pids, key=lambda pid: growth[pid])
        return {
            "rss_growth_mb": f"{growth[worst] / MB:.1f}",
            "rss_baseline_mb": f"{self.baseline[busiest] / MB:.1f}",
            "rss_peak_mb": f"{self.peak[busiest] / MB:.1f}",
            "rss_worker": busiest,
            "rss_samples": self.samples,
        }


def export(args: argparse.Namespace) -> dict[str, object]:
    url = urllib.parse.urlsplit(args.base_url)
    pids: list[int] = []
    if args.pid:
        pids = children(args.pid) or [args.pid]
    sampler = MemorySampler(pids, args.interval) if pids else None
    result: dict[str, object] = {"status": 0, "rows": 0, "bytes": 0, "error": "-"}

    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=args.timeout)
    if sampler:
        sampler.start()
    t0 = time.monotonic()
    lines = size = 0
    last = b""
    try:
        conn.request(
            "GET", args.path, headers={"Authorization": f"Token {args.token}", "Accept": "text/csv"}
        )
        response = conn.getresponse()
        result["status"] = response.status
        first = response.read1(1 << 20)
        result["ttfb_ms"] = f"{(time.monotonic() - t0) * 1000:.1f}"
        if response.status != 200:
            result["error"] = f"HTTP_{response.status}:" + first[:80].decode(errors="replace")
        elif not first.startswith(CSV_HEADER):
            result["error"] = "no_csv_header:" + first[:80].decode(errors="replace")
        chunk = first
        while chunk:
            lines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk
            chunk = response.read1(1 << 20)
    except (OSError, http.client.HTTPException) as exc:
        result["error"] = f"{type(exc).__name__}:{exc}"
    finally:
        duration = time.monotonic() - t0
        conn.close()
        if sampler:
            result.update(sampler.stop())

    rows = max(lines - 1, 0)
    result.update(rows=rows, bytes=size, duration_s=f"{duration:.3f}")
    result["rows_per_s"] = f"{rows / duration:.1f}" if duration > 0 else "0"
    if result["error"] == "-":
        if last and not last.endswith(b"\n"):
            result["error"] = "truncated_last_line"
        elif args.expected is not None and rows != args.expected:
            result["error"] = f"expected_{args.expected}_rows"
    if not sampler:
        result.update(rss_growth_mb="n/a", rss_baseline_mb="n/a", rss_peak_mb="n/a")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=os.environ.get("BASE_URL", "http://127.0.0.1:8300"))
    parser.add_argument("--token", default=os.environ.get("STAFF_TOKEN"), help="staff API token")
    parser.add_argument("--path", default="/scores/export.csv")
    parser.add_argument("--pid", type=int, help="gunicorn master pid (or one worker's)")
    parser.add_argument("--expected", type=int, help="rows the export must have")
    parser.add_argument("--timeout", type=float, default=300, help="socket timeout, seconds")
    parser.add_argument("--interval", type=float, default=0.01, help="RSS sampling period, s")
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or STAFF_TOKEN) is required")
    result = export(args)
    print("EXPORT " + " ".join(f"{k}={str(v).replace(' ', '_')}" for k, v in result.items()))
    return 0 if result["error"] == "-" else 1


if __name__ == "__main__":
    sys.exit(main())
