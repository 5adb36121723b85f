"""Rate limits: fixed-window counters in Django's cache, one atomic increment per request.

DRF's own throttles keep every request time of the window per caller in one cache entry and
read and rewrite it whole on each request: two round trips, an entry of up to 6,000 times for
the grader's rate, and lost counts when two workers rewrite it at once. Here a counter per
window is incremented atomically (the cache's ``incr``: on Redis one round trip, django-redis's
script; the window's first request creates it with ``add``), as DRF documents for custom
throttles, at the price of allowing up to twice the rate across a window boundary. The counters
live in the shared cache, or per process while Redis is away (``scores.resilient_cache``).

Requests whose credentials are refused count against the anonymous rate of their client
address (``refused_credentials``): one client cannot make the service ask the users service
without bound.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache import cache
from rest_framework import throttling
from rest_framework.request import Request

from scores.resilient_cache import count_in

logger = logging.getLogger(__name__)


class FixedWindowThrottle(throttling.SimpleRateThrottle):
    """``SimpleRateThrottle``'s rates, scopes and keys, counted per fixed window."""

    num_requests: int
    duration: int

    def window(self, now: float) -> tuple[str, float]:
        """The counter key of ``now``'s window for this throttle's key, and the window's end."""
        start = int(now // self.duration) * self.duration
        return f"{self.key}:{start}", float(start + self.duration)

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        return self.count(add=1) <= self.num_requests

    def count(self, *, add: int) -> int:
        """Add ``add`` to the current window's counter and return it (0: only read it)."""
        self.now = time.time()
        key, self.window_end = self.window(self.now)
        if not add:
            return int(cache.get(key) or 0)
        return count_in(cache, key, add, self.duration + 1)

    def wait(self) -> float:
        return max(1.0, self.window_end - self.now)


class UserRateThrottle(FixedWindowThrottle):
    """Per authenticated caller: ``THROTTLE_RATE_USER``."""

    scope = "user"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not (request.user and request.user.is_authenticated):
            return None
        return f"throttle:user:{request.user.pk}"


class AnonRateThrottle(FixedWindowThrottle):
    """Per anonymous client address: ``THROTTLE_RATE_ANON`` (requests without credentials to
    the public routes, and requests whose credentials were refused)."""

    scope = "anon"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.address_key(request)

    def address_key(self, request: Request) -> str:
        return f"throttle:anon:{self.get_ident(request)}"


class RefusedCredentials:
    """The anonymous rate of a client address, spent by refused credentials."""

    def __init__(self, request: Request) -> None:
        self.throttle = AnonRateThrottle()
        self.throttle.key = self.throttle.address_key(request)

    def exhausted(self) -> float | None:
        """Seconds to wait if the address is over its rate, else None."""
        if self.throttle.rate is None:
            return None
        if self.throttle.count(add=0) < self.throttle.num_requests:
            return None
        return self.throttle.wait()

    def spend(self) -> None:
        if self.throttle.rate is not None:
            self.throttle.count(add=1)
