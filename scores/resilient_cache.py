"""A Django cache backend for "Redis is an accelerator, not a dependency": every call goes to
the shared cache (django-redis, ``CACHE_URL``) while it answers within ``REDIS_TIMEOUT``; while
it fails or hangs, to this process's own memory (``LocMemCache``), so verdicts and throttle
counters go on per process. A breaker (``scores.breakers``) stops asking Redis after a few
failures and tries again after a while, so a hung Redis costs a few deadlines, not one per
request, and the service returns to it by itself.

Configured by ``evalsvc.settings.base`` when ``CACHE_URL`` is a Redis URL::

    CACHES = {
        "default": {"BACKEND": "scores.resilient_cache.FallbackCache",
                    "OPTIONS": {"SHARED": "redis", "LOCAL": "local"}},
        "redis": {...django-redis...},
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from scores.breakers import DependencyBreaker

logger = logging.getLogger(__name__)

UNAVAILABLE = (ConnectionInterrupted, RedisError, OSError)

redis_breaker = DependencyBreaker(
    "redis",
    failure_threshold=3,
    recovery_timeout=10,
    is_failure=lambda exception: isinstance(exception, UNAVAILABLE),
)


class FallbackCache(BaseCache):
    """The ``SHARED`` cache alias while it answers, else the ``LOCAL`` one (see the module)."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = params.get("OPTIONS", {})
        self._shared = options["SHARED"]
        self._local = options["LOCAL"]

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not redis_breaker.opened:
            try:
                with redis_breaker:
                    return getattr(caches[self._shared], method)(*args, **kwargs)
            except UNAVAILABLE as exc:
                logger.warning("shared cache unavailable (%s); using this process's", exc)
        return getattr(caches[self._local], method)(*args, **kwargs)

    def add(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> bool:
        return bool(self._call("add", key, value, timeout, version))

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._call("get", key, default, version)

    def set(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> None:
        self._call("set", key, value, timeout, version)

    def touch(self, key: Any, timeout: Any = None, version: Any = None) -> bool:
        return bool(self._call("touch", key, timeout, version))

    def delete(self, key: Any, version: Any = None) -> bool:
        return bool(self._call("delete", key, version))

    def get_many(self, keys: Any, version: Any = None) -> dict[Any, Any]:
        return dict(self._call("get_many", keys, version))

    def set_many(self, data: Any, timeout: Any = None, version: Any = None) -> list[Any]:
        return list(self._call("set_many", data, timeout, version) or [])

    def delete_many(self, keys: Any, version: Any = None) -> None:
        self._call("delete_many", keys, version)

    def has_key(self, key: Any, version: Any = None) -> bool:
        return bool(self._call("has_key", key, version))

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        return int(self._call("incr", key, delta, version))

    def clear(self) -> None:
        self._call("clear")
        caches[self._local].clear()  # what was kept while the shared cache was away goes too

    def close(self, **kwargs: Any) -> None:
        caches[self._shared].close(**kwargs)


def count_in(cache: BaseCache, key: str, delta: int, timeout: int) -> int:
    """Add ``delta`` to the counter ``key`` of any Django cache (created for ``timeout`` seconds
    by its first ``add``) and return it: ``incr``, one round trip on Redis (django-redis)."""
    try:
        return int(cache.incr(key, delta))
    except ValueError:  # the counter's first request (or a lost race to create it)
        if cache.add(key, delta, timeout):
            return delta
        return int(cache.incr(key, delta))
