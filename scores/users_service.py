"""The users service, which vouches for platform users' bearer tokens, and the verdicts it gave.

``GET {USERS_SERVICE_URL}/auth/status`` with the caller's ``Authorization: Bearer <token>``:
200 ``{"status": "success", "data": {"id", "active", "admin"}}`` accepts the token; 401/403, a
status other than success, or an inactive user reject it; anything else (unreachable, slower
than ``USERS_SERVICE_TIMEOUT``, 5xx, not JSON, no usable user) is an outage:
``UsersServiceUnavailable``, a 503, never a 401.

Verdicts are cached so that a burst of requests costs one call: accepted tokens for at most
``USERS_SERVICE_CACHE_SECONDS``, rejected ones for ``USERS_SERVICE_NEGATIVE_CACHE_SECONDS``,
outages never. They live in Django's cache (shared by every worker and instance with Redis),
and each process keeps the verdicts it has read until they expire there, never longer, so a
steady caller costs no cache round trip. Only a hash of the token is used as a key.

An accepted verdict is refreshed shortly before it expires, in the background, the first time
it is used past its refresh point (drawn between 50 % and 90 % of its lifetime): a token in use
is never checked on a request's path, and verdicts fetched at the same moment (a deploy, a
cache flush) are refreshed at spread moments instead of all at once. A verdict is never used
past its lifetime.

A users service that keeps failing is not asked for a while (``users_service_breaker``), and at
most ``USERS_SERVICE_MAX_WAITING`` callers of the whole server wait on it at once
(``scores.call_slots``), so slow answers to unknown tokens never take every worker: the others
are answered 503 at once, and callers whose tokens are known keep being served.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import orjson
import urllib3
from django.conf import settings
from django.core.cache import cache

from scores.breakers import DependencyBreaker
from scores.call_slots import CallSlots
from scores.callers import PlatformUser
from scores.exceptions import UsersServiceUnavailable
from scores.telemetry import USERS_SERVICE_CALLS
from scores.validation import MAX_ID

logger = logging.getLogger(__name__)

POOL_SIZE = 4  # kept-alive connections per process
QUEUE_SECONDS = 0.25  # a caller waits this long for a free slot, then gets a 503
REFRESH_BETWEEN = (0.5, 0.9)  # of a verdict's lifetime


class Verdict(NamedTuple):
    """What the users service said of a token: ``user_id`` None for a rejected token.
    ``expires_at`` and ``refresh_at`` are Unix times, so every process agrees on them."""

    expires_at: float
    refresh_at: float
    user_id: int | None = None
    admin: bool = False


BREAKER_RECOVERY_SECONDS = 5
users_service_breaker = DependencyBreaker(
    "users service",
    failure_threshold=5,
    recovery_timeout=BREAKER_RECOVERY_SECONDS,
    is_failure=lambda exception: isinstance(exception, UsersServiceUnavailable),
)


class UsersServiceClient:
    """A kept-alive connection pool to the users service, one per process; a call is made in
    one of the server's ``USERS_SERVICE_MAX_WAITING`` slots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._pool: urllib3.PoolManager | None = None
        self._slots: CallSlots | None = None

    def slots(self) -> CallSlots:
        if self._slots is None:
            self._slots = CallSlots(
                "users-service", settings.USERS_SERVICE_MAX_WAITING, settings.CALL_SLOTS_DIR
            )
        return self._slots

    def forget_health(self) -> None:
        """Forget what this server learned of the service's health (its breaker, the marks the
        processes share): the next caller asks it again."""
        users_service_breaker.reset()
        self.slots().clear_marks()

    def _manager(self) -> urllib3.PoolManager:
        pid = os.getpid()
        if self._pool is None or self._pid != pid:  # never share sockets across a fork
            with self._lock:
                if self._pool is None or self._pid != pid:
                    self._pool = urllib3.PoolManager(num_pools=2, maxsize=POOL_SIZE, retries=False)
                    self._pid = pid
        return self._pool

    def auth_status(self, token: str) -> tuple[int, bytes]:
        """Status and body of ``GET /auth/status`` for ``token``.

        Raises:
            UsersServiceUnavailable: not configured, unreachable, too slow, too busy, or
                failing lately (then without asking).
        """
        base = settings.USERS_SERVICE_URL
        if not base:
            raise UsersServiceUnavailable("The users service is not configured.")
        slots = self.slots()
        if users_service_breaker.opened:
            raise UsersServiceUnavailable(retry_after=users_service_breaker.retry_after())
        if remaining := slots.open_remaining():  # another process's breaker opened
            raise UsersServiceUnavailable(retry_after=max(1, int(remaining)))
        # While it is failing, one caller at a time asks: callers queueing for a slow service
        # would hold the workers that the callers it already vouched for need.
        with slots.hold(QUEUE_SECONDS, probe=slots.failing()) as free:
            if not free:
                raise UsersServiceUnavailable("The users service is busy; retry later.")
            try:
                with users_service_breaker:
                    answer = self._get(base, token)
            except UsersServiceUnavailable:
                slots.mark_failing(BREAKER_RECOVERY_SECONDS)
                if users_service_breaker.opened:
                    slots.mark_open(BREAKER_RECOVERY_SECONDS)
                raise
            slots.mark_answering()
            return answer

    def _get(self, base: str, token: str) -> tuple[int, bytes]:
        try:
            response = self._manager().request(
                "GET",
                base.rstrip("/") + "/auth/status",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=urllib3.Timeout(total=settings.USERS_SERVICE_TIMEOUT),
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            logger.warning("users service unreachable: %s", type(exc).__name__)
            raise UsersServiceUnavailable() from exc
        if response.status >= 500:
            logger.warning("users service answered %s", response.status)
            raise UsersServiceUnavailable()
        return response.status, response.data


users_service = UsersServiceClient()


def read_verdict(status: int, body: bytes) -> PlatformUser | None:
    """The users service's answer: the user, or None for a rejected token.

    Raises:
        UsersServiceUnavailable: anything that is not a clear verdict.
    """
    if status in (401, 403):
        return None
    if status != 200:
        logger.warning("users service answered %s", status)
        raise UsersServiceUnavailable()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        logger.warning("users service answered a body that is not JSON")
        raise UsersServiceUnavailable() from exc
    if not isinstance(payload, dict):
        raise UsersServiceUnavailable()
    if payload.get("status") != "success":
        return None
    data = payload.get("data")
    if not isinstance(data, dict):
        logger.warning("users service answered success without user data")
        raise UsersServiceUnavailable()
    if data.get("active") is not True:
        return None
    user_id = data.get("id")
    if type(user_id) is not int or not 0 < user_id <= MAX_ID:
        logger.warning("users service answered success without a usable user id")
        raise UsersServiceUnavailable()
    return PlatformUser(id=user_id, is_admin=data.get("admin") is True)


_KEY_PREFIX = "evalsvc:verdict:"


def cache_key(token: str) -> str:
    return _KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()


class Verdicts:
    """The verdicts this process knows (the one tier before Django's cache), kept until they
    expire there. Bounded: when full, expired entries go, then everything (a refill costs one
    cache read per caller)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, Verdict] = {}

    def get(self, key: str) -> Verdict | None:
        verdict = self._entries.get(key)
        if verdict is None:
            return None
        if verdict.expires_at <= time.time():
            self._entries.pop(key, None)
            return None
        return verdict

    def put(self, key: str, verdict: Verdict) -> None:
        if len(self._entries) >= self.max_entries:
            now = time.time()
            self._entries = {k: v for k, v in self._entries.items() if v.expires_at > now}
            if len(self._entries) >= self.max_entries:
                self._entries = {}
        self._entries[key] = verdict

    def clear(self) -> None:
        self._entries = {}


local_verdicts = Verdicts(max_entries=100_000)


def _shared_get(key: str) -> Verdict | None:
    value = cache.get(key)
    if not isinstance(value, tuple) or len(value) != len(Verdict._fields):
        return None  # absent, or written by an older release
    verdict = Verdict(*value)
    return verdict if verdict.expires_at > time.time() else None


def cached_verdict(key: str) -> Verdict | None:
    """The verdict for ``key`` from this process, else from Django's cache, or None."""
    verdict = local_verdicts.get(key)
    if verdict is None:
        verdict = _shared_get(key)
        if verdict is not None:
            local_verdicts.put(key, verdict)
    return verdict


def fetch_verdict(token: str, key: str) -> Verdict:
    """Ask the users service about ``token`` and keep its verdict here and in the cache.

    Raises:
        UsersServiceUnavailable: no verdict (nothing is cached).
    """
    try:
        user = read_verdict(*users_service.auth_status(token))
    except UsersServiceUnavailable:
        USERS_SERVICE_CALLS.labels("failed").inc()
        raise
    USERS_SERVICE_CALLS.labels("rejected" if user is None else "accepted").inc()
    now = time.time()
    if user is None:
        seconds = settings.USERS_SERVICE_NEGATIVE_CACHE_SECONDS
        verdict = Verdict(expires_at=now + seconds, refresh_at=now + seconds)
    else:
        seconds = settings.USERS_SERVICE_CACHE_SECONDS
        verdict = Verdict(
            expires_at=now + seconds,
            refresh_at=now + seconds * random.uniform(*REFRESH_BETWEEN),  # noqa: S311
            user_id=user.id,
            admin=user.is_admin,
        )
    local_verdicts.put(key, verdict)
    cache.set(key, tuple(verdict), seconds)
    return verdict


class Refresher:
    """Refreshes accepted verdicts in the background, one call at a time per process, each key
    once (another process that took the key's lock in the cache refreshes it instead)."""

    MAX_PENDING = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._pid = 0
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, token: str, key: str) -> None:
        with self._lock:
            if key in self._pending or len(self._pending) >= self.MAX_PENDING:
                return
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="verdict-refresh")
                self._pid = os.getpid()
                self._pending = set()
            self._pending.add(key)
            self._executor.submit(self._refresh, token, key)

    def _refresh(self, token: str, key: str) -> None:
        try:
            fresher = _shared_get(key)
            local = local_verdicts.get(key)
            if fresher is not None and (local is None or fresher.refresh_at > local.refresh_at):
                local_verdicts.put(key, fresher)  # another process refreshed it already
            elif cache.add(key + ":refreshing", 1, 10):
                fetch_verdict(token, key)
        except Exception:  # a failed refresh leaves the verdict to expire; it is not an error
            logger.info("verdict refresh failed", exc_info=True)
        finally:
            with self._lock:
                self._pending.discard(key)


refresher = Refresher()


def verify_token(token: str) -> PlatformUser | None:
    """The platform user a bearer token belongs to, or None if the users service rejects it.

    Raises:
        UsersServiceUnavailable: the users service could not give a verdict.
    """
    key = cache_key(token)
    verdict = cached_verdict(key)
    if verdict is None:
        verdict = fetch_verdict(token, key)
    elif verdict.user_id is not None and time.time() >= verdict.refresh_at:
        refresher.submit(token, key)
    if verdict.user_id is None:
        return None
    return PlatformUser(id=verdict.user_id, is_admin=verdict.admin)


def is_known_accepted(token: str) -> bool:
    """Whether ``token`` has an accepted verdict cached (no call, no refresh)."""
    verdict = cached_verdict(cache_key(token))
    return verdict is not None and verdict.user_id is not None


def clear_local_state() -> None:
    """Forget this process's verdicts (after the cache was flushed)."""
    local_verdicts.clear()
