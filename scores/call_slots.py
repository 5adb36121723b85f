"""A bound on how many workers of one server may wait on one slow dependency at the same time.

With sync workers, a users service that answers slowly holds each worker that asks it for as
long as it takes; a run of requests with unknown tokens would then hold them all, and the
callers whose tokens are known would wait behind them. ``CallSlots`` lets at most ``size``
callers, across every process of the server, wait at once; the others are told at once that
the dependency is busy (a 503), so at least one worker is always left for everything else.

The slots are files locked with ``flock`` in a directory the server's processes share
(``bin/serve`` gives its run directory, ``CALL_SLOTS_DIR``): the kernel releases a lock when
its process dies, so a killed worker never leaks a slot. Without a directory (a single
process: runserver, tests) the slots are this process's threads'.

The processes also share what they learn of the dependency's health: ``mark_failing`` after a
failed call (until ``mark_answering``), ``mark_open`` when a process's breaker opens. While it
is failing, one caller at a time probes it and the others are answered at once; while a breaker
is open, no process asks. Each worker would otherwise pay the dependency's timeout several
times to learn alone what another has just learned.
Both marks are a file's modification time (one ``stat`` to read).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

RETRY_EVERY = 0.01  # seconds between two looks for a free slot


class CallSlots:
    def __init__(self, name: str, size: int, directory: str | None) -> None:
        self.name = name
        self.size = max(1, size)
        self.directory = Path(directory) if directory else None
        self._local = threading.BoundedSemaphore(self.size)
        self._probe = threading.Lock()
        self._marks: dict[str, float] = {}  # without a directory: mark name -> until (epoch)

    def mark_failing(self, seconds: float) -> None:
        """A call failed: for ``seconds`` (or until ``mark_answering``), callers probe."""
        self._mark("failing", seconds)

    def mark_answering(self) -> None:
        """A call succeeded: the dependency is no longer failing."""
        if self.failing():
            self._mark("failing", 0)

    def mark_open(self, seconds: float) -> None:
        """A breaker opened: for ``seconds``, no process calls the dependency."""
        self._mark("open", seconds)

    def failing(self) -> bool:
        return self._remaining("failing") > 0

    def open_remaining(self) -> float:
        """Seconds left of the last ``mark_open`` of any process (0 when none)."""
        return self._remaining("open")

    def clear_marks(self) -> None:
        """Forget both marks: the dependency is asked again at once."""
        for mark in ("failing", "open"):
            self._mark(mark, 0)

    def _mark(self, mark: str, seconds: float) -> None:
        until = time.time() + seconds
        if self.directory is None:
            self._marks[mark] = until
            return
        path = self.directory / f"{self.name}.{mark}"
        with contextlib.suppress(OSError):  # a mark is advice: never fail the request for it
            path.touch()
            os.utime(path, (until, until))

    def _remaining(self, mark: str) -> float:
        if self.directory is None:
            until = self._marks.get(mark, 0.0)
        else:
            try:
                until = (self.directory / f"{self.name}.{mark}").stat().st_mtime
            except OSError:
                return 0.0
        return max(0.0, until - time.time())

    @contextlib.contextmanager
    def hold(self, wait: float, *, probe: bool = False) -> Iterator[bool]:
        """Hold a slot for the block, waiting up to ``wait`` seconds for one; yields whether one
        was free (the block must not call the dependency otherwise). A ``probe`` takes only the
        first slot, at once: one caller at a time finds out whether a failing dependency is
        back, the others are told at once."""
        if self.directory is None:
            acquired = self._local.acquire(timeout=0 if probe else wait)
            probing = acquired and probe
            if probing and not self._probe.acquire(blocking=False):
                self._local.release()
                acquired = probing = False
            try:
                yield acquired
            finally:
                if probing:
                    self._probe.release()
                if acquired:
                    self._local.release()
            return
        descriptor = self._acquire(self.directory, 0 if probe else wait, 1 if probe else self.size)
        try:
            yield descriptor is not None
        finally:
            if descriptor is not None:
                os.close(descriptor)  # closing the file releases its lock

    def _acquire(self, directory: Path, wait: float, size: int) -> int | None:
        deadline = time.monotonic() + wait
        while True:
            for slot in range(size):
                path = directory / f"{self.name}.{slot}.lock"
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(descriptor)
                    continue
                return descriptor
            if time.monotonic() >= deadline:
                return None
            time.sleep(RETRY_EVERY)
