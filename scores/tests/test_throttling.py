"""Fixed-window throttles on the shared cache (Redis here), and the cache's one-trip ``incr``."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches
from rest_framework.throttling import SimpleRateThrottle

from scores.cache import RedisCache

pytestmark = pytest.mark.django_db

REDIS = {
    "BACKEND": "scores.cache.RedisCache",
    "LOCATION": "redis://127.0.0.1:6379/10",
}  # this module's own database


@pytest.fixture
def redis_cache(settings):
    settings.CACHES = {"default": {**REDIS, "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    yield caches["default"]
    caches["default"].clear()


def test_incr_of_a_missing_key_raises_and_of_a_present_key_counts(redis_cache) -> None:
    with pytest.raises(ValueError, match="not found"):
        redis_cache.incr("counter")

    assert redis_cache.add("counter", 1, 30) is True
    assert [redis_cache.incr("counter"), redis_cache.incr("counter", 5)] == [2, 7]
    assert redis_cache.get("counter") == 7


def test_the_redis_backend_reuses_one_client(redis_cache) -> None:
    assert isinstance(redis_cache, RedisCache)
    redis_cache.set("a", 1)

    assert redis_cache._cache.get_client("a") is redis_cache._cache.get_client("b", write=True)


def test_a_caller_over_the_rate_gets_429_with_the_windows_remaining_seconds(
    redis_cache, user, monkeypatch
) -> None:
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "3/hour", "anon": "3/hour"})

    statuses = [user.get("/scores").status_code for _ in range(4)]
    throttled = user.get("/scores")

    assert statuses == [200, 200, 200, 429]
    assert throttled.json()["detail"].startswith("Request was throttled.")
    assert 1 <= int(throttled["Retry-After"]) <= 3600


def test_callers_are_counted_separately(redis_cache, user, other, monkeypatch) -> None:
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "1/hour", "anon": "1/hour"})

    assert [user.get("/scores").status_code, other.get("/scores").status_code] == [200, 200]
    assert [user.get("/scores").status_code, other.get("/scores").status_code] == [429, 429]


def test_throttling_fails_open_when_the_cache_is_down(settings, user, monkeypatch) -> None:
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "1/hour", "anon": "1/hour"})
    settings.CACHES = {"default": {**REDIS, "LOCATION": "redis://127.0.0.1:1/0"}}

    assert [user.get("/scores").status_code for _ in range(3)] == [200, 200, 200]


def shared_counts(redis_cache) -> list[int]:
    client = redis_cache._cache.get_client()
    return [int(client.get(key)) for key in client.keys("*throttle_user*")]


def test_a_process_adds_its_requests_to_the_shared_counter_a_batch_at_a_time(
    redis_cache, user, monkeypatch
) -> None:
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"user": "1000/hour", "anon": "1/hour"}
    )  # batch 10

    statuses = [user.get("/scores").status_code for _ in range(9)]
    assert (statuses, shared_counts(redis_cache)) == ([200] * 9, [])

    assert user.get("/scores").status_code == 200
    assert shared_counts(redis_cache) == [10]


def test_a_caller_found_over_the_rate_is_refused_until_the_window_ends(
    redis_cache, user, monkeypatch
) -> None:
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"user": "250/hour", "anon": "1/hour"}
    )  # batch 2
    assert [user.get("/scores").status_code for _ in range(2)] == [200, 200]
    client = redis_cache._cache.get_client()
    [key] = client.keys("*throttle_user*")
    client.set(key, 249)  # the other processes' requests

    assert [user.get("/scores").status_code for _ in range(2)] == [200, 429]  # 251 > 250
    client.delete(key)  # not asked again in this window
    assert user.get("/scores").status_code == 429
