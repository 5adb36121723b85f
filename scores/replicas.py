"""Reads on a replica, writes and a client's reads after its own writes on the primary.

Active only when ``DATABASE_REPLICA_URL`` is set (the ``replica`` alias). A request is pinned to
the primary when it writes (any unsafe method) and, for ``REPLICA_STICKY_SECONDS`` after a
successful write, every request carrying the same credentials: a client never reads a replica
that has not caught up with what it just wrote (replication lag is normally far below that).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)
_pinned: ContextVar[bool] = ContextVar("pinned_to_primary", default=False)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class PrimaryReplicaRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "default" if _pinned.get() else "replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == "default"


def _client_key(request: HttpRequest) -> str:
    credentials = request.META.get("HTTP_AUTHORIZATION") or request.COOKIES.get("sessionid", "")
    return "evalsvc:wrote:" + hashlib.sha256(credentials.encode()).hexdigest()


class ReadYourWritesMiddleware:
    """Pins the request to the primary when it writes or its client wrote recently."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        writes = request.method not in SAFE_METHODS
        key = _client_key(request)
        try:
            pinned = writes or bool(cache.get(key))
        except Exception:  # no cache: the primary is always right
            pinned = True
        token = _pinned.set(pinned)
        try:
            response = self.get_response(request)
        finally:
            _pinned.reset(token)
        if writes and response.status_code < 400:
            try:
                cache.set(key, 1, settings.REPLICA_STICKY_SECONDS)
            except Exception:
                logger.warning(
                    "cache unavailable: read-your-writes pin not recorded", exc_info=True
                )
        return response
