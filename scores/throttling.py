"""Rate limits per caller: fixed-window counters in the shared cache, counted in batches,
failing open.

DRF's throttles keep a list of every request time of the window per caller and read and write
it whole on each request (two cache round trips and a list up to the rate's length, e.g. 6000
entries for the grader). Here a counter per window is incremented atomically (one round trip
on Redis: see ``scores.cache``), at the price of allowing up to twice the rate across a window
boundary.

Each process adds its requests to the shared counter in batches of up to ``MAX_BATCH`` (a
hundredth of the rate, so 1, i.e. exact, for rates under 200 per window): a caller far below
the limit costs no round trip on most requests. A caller may therefore exceed the rate by at
most ``batch - 1`` requests per worker process per window; once a flush finds the caller over
the rate, the process refuses them without asking again until the window ends. A cache outage
lets requests through rather than refusing everyone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache import cache
from rest_framework import throttling
from rest_framework.request import Request

logger = logging.getLogger(__name__)

MAX_BATCH = 10
EXHAUSTED = -1  # a caller found over the rate in this window


class WindowCounts:
    """This process's requests not yet added to the shared counters, for the current window of
    one duration only (older windows' leftovers are dropped: they can no longer matter)."""

    def __init__(self) -> None:
        self._windows: dict[int, tuple[int, dict[str, int]]] = {}

    def counts(self, duration: int, window: int) -> dict[str, int]:
        current = self._windows.get(duration)
        if current is None or current[0] != window:
            current = self._windows[duration] = (window, {})
        return current[1]

    def clear(self) -> None:
        self._windows = {}


window_counts = WindowCounts()


class FixedWindowMixin:
    """``allow_request`` and ``wait`` for a ``SimpleRateThrottle`` subclass."""

    num_requests: int
    duration: int
    rate: str | None

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)  # type: ignore[attr-defined]
        if ident is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        self.window_end = (window + 1) * self.duration
        self.now = now
        counts = window_counts.counts(self.duration, window)
        pending = counts.get(ident, 0)
        if pending == EXHAUSTED:
            return False
        pending += 1
        if pending < min(MAX_BATCH, max(1, self.num_requests // 100)):
            counts[ident] = pending
            return True
        counts[ident] = 0
        key = f"{ident}:{window}"
        try:
            try:
                count = cache.incr(key, pending)
            except ValueError:  # first flush of the window (or a lost race to create it)
                count = (
                    pending
                    if cache.add(key, pending, self.duration + 1)
                    else cache.incr(key, pending)
                )
        except Exception:
            logger.warning("throttle cache unavailable; request not throttled", exc_info=True)
            return True
        if count > self.num_requests:
            counts[ident] = EXHAUSTED
            return False
        return True

    def wait(self) -> float:
        return max(1.0, self.window_end - self.now)


class UserRateThrottle(FixedWindowMixin, throttling.UserRateThrottle):
    """Per authenticated caller: ``THROTTLE_RATE_USER``."""


class AnonRateThrottle(FixedWindowMixin, throttling.AnonRateThrottle):
    """Per anonymous client address: ``THROTTLE_RATE_ANON``."""
