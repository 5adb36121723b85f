"""Who is calling: platform users vouched for by the users service, or staff accounts.

A ``Bearer`` token is checked with ``GET {USERS_SERVICE_URL}/auth/status``. Verdicts are cached
in Django's cache (``CACHE_URL``; Redis shares them between workers and instances): accepted
tokens for ``USERS_SERVICE_CACHE_SECONDS``, rejected ones for
``USERS_SERVICE_NEGATIVE_CACHE_SECONDS``, outages never. Each process also keeps the verdicts it
has seen (``LocalVerdicts``) until the moment the shared entry expires, never longer, so a
steady caller costs no cache round trip at all; with Redis, the verdicts any process fetched
reach the others in batches (``VerdictJournal``). Only a hash of the token is used as the cache
key. The users service being unreachable, slow, failing or answering garbage is a 503, never a
401 and never a 500.

Staff and service accounts are Django users: DRF ``Token`` keys or an admin session.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3
from django.conf import settings
from django.core.cache import cache
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, TokenAuthentication
from rest_framework.request import Request

from scores.exceptions import UsersServiceUnavailable
from scores.telemetry import USERS_SERVICE_CALLS, note_caller

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlatformUser:
    """A user of the platform, as the users service described them."""

    id: int
    is_admin: bool

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False

    @property
    def pk(self) -> str:
        """Throttling identity, distinct from Django account ids."""
        return f"platform:{self.id}"

    def __str__(self) -> str:
        return f"user {self.id}"


@dataclass(frozen=True)
class Caller:
    """What the rest of the app needs to know about whoever made a request.

    ``user_id`` is the platform user id (None for staff and service accounts, which are not
    platform users); ``privileged`` callers read and write anyone's scores.
    """

    user_id: int | None
    privileged: bool
    name: str


def caller_of(request: Request) -> Caller:
    """The caller of an authenticated request."""
    user: Any = request.user
    if isinstance(user, PlatformUser):
        return Caller(user_id=user.id, privileged=user.is_admin, name=str(user.id))
    return Caller(user_id=None, privileged=bool(user.is_staff), name=user.get_username())


class UsersServiceClient:
    """A kept-alive connection pool to the users service, one per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._pool: urllib3.PoolManager | None = None

    def _manager(self) -> urllib3.PoolManager:
        pid = os.getpid()
        if self._pool is None or self._pid != pid:  # never share sockets across a fork
            with self._lock:
                if self._pool is None or self._pid != pid:
                    self._pool = urllib3.PoolManager(num_pools=2, maxsize=8, retries=False)
                    self._pid = pid
        return self._pool

    def auth_status(self, token: str) -> tuple[int, bytes]:
        """Status and body of ``GET /auth/status`` for ``token``.

        Raises:
            UsersServiceUnavailable: not configured, unreachable or too slow.
        """
        base = settings.USERS_SERVICE_URL
        if not base:
            raise UsersServiceUnavailable("The users service is not configured.")
        timeout = settings.USERS_SERVICE_TIMEOUT
        try:
            response = self._manager().request(
                "GET",
                base.rstrip("/") + "/auth/status",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=urllib3.Timeout(total=timeout),
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            logger.warning("users service unreachable: %s", type(exc).__name__)
            raise UsersServiceUnavailable() from exc
        return response.status, response.data


users_service = UsersServiceClient()


_KEY_PREFIX = "evalsvc:verdict:"


def _cache_key(token: str) -> str:
    return _KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()


# A verdict: (expires_at, user_id, admin) for an accepted token, (expires_at,) for a rejected
# one; expires_at is a Unix time, so that every process and instance agrees on it.
Verdict = tuple[float, int, bool] | tuple[float]


class LocalVerdicts:
    """Verdicts this process has seen, kept until they expire in the shared cache.

    The shared cache (Redis) costs a network round trip per request; a verdict read from it is
    kept here until the same instant, so the lifetimes stay those of the settings. Bounded: when
    full, expired entries go, then everything (a full refill costs one shared-cache read per
    caller).
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, Verdict] = {}

    def get(self, key: str) -> Verdict | None:
        verdict = self._entries.get(key)
        if verdict is None:
            return None
        if verdict[0] <= time.time():
            self._entries.pop(key, None)
            return None
        return verdict

    def put(self, key: str, verdict: Verdict) -> None:
        if len(self._entries) >= self.max_entries:
            now = time.time()
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= self.max_entries:
                self._entries = {}
        self._entries[key] = verdict

    def clear(self) -> None:
        """Forget every verdict (e.g. after the shared cache was flushed)."""
        self._entries = {}


local_verdicts = LocalVerdicts(max_entries=100_000)


class VerdictJournal:
    """The verdicts other processes fetched from the users service, learnt in batches.

    Without it, each worker process reads a token's verdict from Redis once before keeping it
    (``LocalVerdicts``): with 3 workers, two Redis round trips per token, 8-12 % of the workers'
    time under the benchmarks (README, "Where the time goes"). Here a process that fetches a
    verdict from the users service also appends it to a Redis stream, and every process reads
    the stream's new entries at most once every ``interval`` seconds, in one round trip, into
    its ``LocalVerdicts``. An entry carries the cache key (a hash of the token, never the token)
    and the verdict with its expiry instant, so a verdict learnt this way lives exactly as long
    as the shared entry, as with a read. Only with the Redis cache (``journal_append``); a
    stream error is logged and the next read waits ``retry_after`` seconds (requests then read
    the verdicts themselves, as without a journal).
    """

    STREAM = "evalsvc:verdict-journal"
    BATCH = 10_000  # entries read in one round trip

    def __init__(self, *, interval: float, retry_after: float, max_entries: int) -> None:
        self.interval = interval
        self.retry_after = retry_after
        self.max_entries = max_entries
        self._next_read = 0.0
        self._last_id: str | None = None

    def reset(self) -> None:
        self._next_read = 0.0
        self._last_id = None

    def append(self, key: str, verdict: Verdict) -> None:
        append = getattr(cache, "journal_append", None)
        if append is None:
            return
        entry = " ".join([key.removeprefix(_KEY_PREFIX), repr(verdict[0])])
        if len(verdict) == 3:
            entry += f" {verdict[1]} {int(verdict[2])}"
        try:
            append(self.STREAM, entry, self.max_entries)
        except Exception:
            logger.warning("verdict journal unavailable", exc_info=True)

    def read_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_read:
            return
        read = getattr(cache, "journal_read", None)
        if read is None:
            self._next_read = float("inf")
            return
        self._next_read = now + self.interval
        if self._last_id is None:  # older entries have expired: start a lifetime ago
            lifetime = max(
                settings.USERS_SERVICE_CACHE_SECONDS, settings.USERS_SERVICE_NEGATIVE_CACHE_SECONDS
            )
            self._last_id = f"{int((time.time() - lifetime) * 1000)}-0"
        try:
            entries = read(self.STREAM, self._last_id, self.BATCH)
        except Exception:
            logger.warning("verdict journal unavailable", exc_info=True)
            self._next_read = now + self.retry_after
            return
        wall = time.time()
        for entry_id, entry in entries:
            learnt = self.parse(entry)
            if learnt is not None and learnt[1][0] > wall:
                local_verdicts.put(*learnt)
            self._last_id = entry_id
        if len(entries) == self.BATCH:
            self._next_read = now  # more waiting: read on with the next request

    @staticmethod
    def parse(entry: str) -> tuple[str, Verdict] | None:
        """``(cache key, verdict)`` of a journal entry, or None if it is not one."""
        parts = entry.split(" ")
        if len(parts) not in (2, 4) or len(parts[0]) != 64:
            return None
        try:
            int(parts[0], 16)
            expires_at = float(parts[1])
            if not math.isfinite(expires_at):
                return None
            if len(parts) == 2:
                return _KEY_PREFIX + parts[0], (expires_at,)
            user_id, admin = int(parts[2]), parts[3]
        except ValueError:
            return None
        if not 0 < user_id <= 2_147_483_647 or admin not in ("0", "1"):
            return None
        return _KEY_PREFIX + parts[0], (expires_at, user_id, admin == "1")


verdict_journal = VerdictJournal(interval=1.0, retry_after=10.0, max_entries=100_000)


def _cache_get(key: str) -> Verdict | None:
    verdict = local_verdicts.get(key)
    if verdict is not None:
        return verdict
    try:
        verdict = cache.get(key)
    except Exception:  # a cache outage costs a users-service call, not the request
        logger.warning("verdict cache unavailable", exc_info=True)
        return None
    if not isinstance(verdict, tuple) or verdict[0] <= time.time():
        return None  # absent, expired, or written by an older release
    local_verdicts.put(key, verdict)
    return verdict


def _cache_set(key: str, verdict: Verdict, seconds: int) -> None:
    local_verdicts.put(key, verdict)
    try:
        cache.set(key, verdict, seconds)
    except Exception:
        logger.warning("verdict cache unavailable", exc_info=True)
        return
    verdict_journal.append(key, verdict)


def verify_token(token: str) -> PlatformUser | None:
    """The platform user a bearer token belongs to, or None if the users service rejects it.

    Raises:
        UsersServiceUnavailable: the users service could not give a verdict.
    """
    verdict_journal.read_if_due()
    key = _cache_key(token)
    cached = _cache_get(key)
    if cached is not None:
        if len(cached) == 1:
            return None
        _, user_id, admin = cached
        return PlatformUser(id=user_id, is_admin=admin)

    try:
        status, body = users_service.auth_status(token)
        user = _verdict(status, body)
    except UsersServiceUnavailable:
        USERS_SERVICE_CALLS.labels("failed").inc()
        raise
    USERS_SERVICE_CALLS.labels("rejected" if user is None else "accepted").inc()
    if user is None:
        seconds = settings.USERS_SERVICE_NEGATIVE_CACHE_SECONDS
        _cache_set(key, (time.time() + seconds,), seconds)
    else:
        seconds = settings.USERS_SERVICE_CACHE_SECONDS
        _cache_set(key, (time.time() + seconds, user.id, user.is_admin), seconds)
    return user


def _verdict(status: int, body: bytes) -> PlatformUser | None:
    """Read the users service's answer; anything that is not a clear verdict is an outage."""
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
    if type(user_id) is not int or not 0 < user_id <= 2_147_483_647:
        logger.warning("users service answered success without a usable user id")
        raise UsersServiceUnavailable()
    return PlatformUser(id=user_id, is_admin=data.get("admin") is True)


class UsersServiceAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``, vouched for by the users service."""

    keyword = "bearer"

    def authenticate(self, request: Request) -> tuple[PlatformUser, str] | None:
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != self.keyword:
            return None
        token = token.strip()
        if not token or " " in token:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer <token>'."
            )
        user = verify_token(token)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or inactive token.")
        note_caller(request._request, user_id=user.id)
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="evalsvc"'


class ServiceTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>`` for staff and service accounts (DRF tokens)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is not None:
            note_caller(request._request, account=result[0].get_username())
        return result


class RejectUnknownAuthorization(BaseAuthentication):
    """Last in line: an Authorization header that nobody above understood is a 401."""

    def authenticate(self, request: Request) -> None:
        if request.META.get("HTTP_AUTHORIZATION"):
            raise exceptions.AuthenticationFailed(
                "Unsupported Authorization header: use 'Bearer <token>' or 'Token <key>'."
            )
        return None
