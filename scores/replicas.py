"""Reads on a replica, writes and a client's reads after its own writes on the primary.

Active only when ``DATABASE_REPLICA_URL`` is set (the ``replica`` alias). A request is pinned to
the primary when it writes (any unsafe method) and, for ``REPLICA_STICKY_SECONDS`` after a
successful write, every request carrying the same credentials: a client never reads a replica
that has not caught up with what it just wrote (replication lag is normally far below that).
The pins are kept in the cache, so with Redis they hold across workers and instances.

A replica that cannot answer does not fail reads: they go to the primary. A refused or
timed-out connection to it opens ``replica_breaker``, and for ``REPLICA_RETRY_SECONDS`` this
process reads from the primary without asking the replica again; a read the replica failed
midway (it was stopped, its connection was lost) is answered once more, from the primary.
Writes and pinned reads never touch the replica.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connections
from django.http import HttpRequest, HttpResponse

from scores.breakers import DependencyBreaker
from scores.exceptions import is_database_unavailable

logger = logging.getLogger(__name__)
_pinned: ContextVar[bool] = ContextVar("pinned_to_primary", default=False)
_read_replica: ContextVar[bool] = ContextVar("read_the_replica", default=False)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REPLICA_RETRY_SECONDS = 5  # a replica that failed is left alone this long (per process)

replica_breaker = DependencyBreaker(
    "replica",
    failure_threshold=1,
    recovery_timeout=REPLICA_RETRY_SECONDS,
    is_failure=is_database_unavailable,
)


def replica_answers() -> bool:
    """Whether reads may go to the replica: it is connected, or a connection to it succeeds
    (within ``DATABASE_CONNECT_TIMEOUT``). A failed attempt opens ``replica_breaker``; while it
    is open, False without asking."""
    if replica_breaker.opened:
        return False
    try:
        with replica_breaker:
            connections["replica"].ensure_connection()
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        return False
    return True


def replica_failed() -> bool:
    """After a read that used the replica was answered 503: whether the replica is what failed
    (its connection was lost or could not be made; it is then closed, and the next read
    connects anew or finds the replica down) rather than the primary."""
    replica = connections["replica"]
    if replica.connection is not None and replica.is_usable():
        return False
    replica.close()
    return True


class PrimaryReplicaRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        if _pinned.get() or not replica_answers():
            return "default"
        _read_replica.set(True)
        return "replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == "default"


def _client_key(request: HttpRequest) -> str | None:
    """The cache key of the client's pin, None for a request without credentials (which cannot
    write: the probes of a load balancer, anonymous reads) that then costs no cache call."""
    credentials = request.META.get("HTTP_AUTHORIZATION") or request.COOKIES.get("sessionid", "")
    if not credentials:
        return None
    return "evalsvc:wrote:" + hashlib.sha256(credentials.encode()).hexdigest()


class ReadYourWritesMiddleware:
    """Pins the request to the primary when it writes or its client wrote recently; answers a
    read again from the primary when the replica failed it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        writes = request.method not in SAFE_METHODS
        key = _client_key(request)
        try:
            pinned = writes or (key is not None and bool(cache.get(key)))
        except Exception:  # no cache: the primary is always right
            pinned = True
        response, read_replica = self._respond(request, pinned)
        if read_replica and response.status_code == 503 and replica_failed():
            logger.warning(
                "replica failed: %s %s answered from the primary", request.method, request.path
            )
            response, _ = self._respond(request, pinned=True)
        if writes and key is not None and response.status_code < 400:
            try:
                cache.set(key, 1, settings.REPLICA_STICKY_SECONDS)
            except Exception:
                logger.warning(
                    "cache unavailable: read-your-writes pin not recorded", exc_info=True
                )
        return response

    def _respond(self, request: HttpRequest, pinned: bool) -> tuple[HttpResponse, bool]:
        """The response, and whether any of its reads went to the replica."""
        pin, read = _pinned.set(pinned), _read_replica.set(False)
        try:
            return self.get_response(request), _read_replica.get()
        finally:
            _pinned.reset(pin)
            _read_replica.reset(read)
