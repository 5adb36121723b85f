"""Fixed-window throttles on the shared cache (Redis here, per process without it), and refused
credentials spending the anonymous rate of their client address."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core.cache import caches
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from evalsvc.settings.base import caches as caches_for
from scores.tests.conftest import bearer_client

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/10"  # this module's own database


@pytest.fixture
def redis_cache(settings: Any) -> Iterator[Any]:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    configured = caches_for(REDIS_URL)
    configured["redis"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex}"
    settings.CACHES = configured
    yield caches["redis"]
    caches["default"].clear()


def rates(monkeypatch: pytest.MonkeyPatch, *, user: str, anon: str) -> None:
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": user, "anon": anon})


def test_a_caller_over_the_rate_gets_429_with_the_windows_remaining_seconds(
    redis_cache: Any, user: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates(monkeypatch, user="3/hour", anon="3/hour")

    statuses = [user.get("/scores").status_code for _ in range(4)]
    throttled = user.get("/scores")

    assert statuses == [200, 200, 200, 429]
    assert throttled.json()["detail"].startswith("Request was throttled.")
    assert 1 <= int(throttled["Retry-After"]) <= 3600


def test_callers_are_counted_separately(
    redis_cache: Any, user: APIClient, other: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates(monkeypatch, user="1/hour", anon="1/hour")

    assert [user.get("/scores").status_code, other.get("/scores").status_code] == [200, 200]
    assert [user.get("/scores").status_code, other.get("/scores").status_code] == [429, 429]


def test_each_request_is_one_atomic_increment_of_the_windows_shared_counter(
    redis_cache: Any, user: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates(monkeypatch, user="1000/hour", anon="1/hour")

    assert [user.get("/scores").status_code for _ in range(3)] == [200] * 3
    client = redis_cache.client.get_client()
    [key] = client.keys("*throttle:user:*")
    assert int(client.get(key)) == 3
    assert 0 < client.ttl(key) <= 3601


def test_another_processs_requests_count_too(
    redis_cache: Any, user: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates(monkeypatch, user="250/hour", anon="1/hour")
    assert user.get("/scores").status_code == 200
    client = redis_cache.client.get_client()
    [key] = client.keys("*throttle:user:*")
    client.set(key, 249, keepttl=True)  # the other processes' requests

    assert [user.get("/scores").status_code for _ in range(2)] == [200, 429]  # 251 > 250


def test_with_the_cache_down_each_process_throttles_on_its_own(
    settings: Any, user: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates(monkeypatch, user="2/hour", anon="1/hour")
    settings.CACHES = caches_for("redis://127.0.0.1:1/0")

    assert [user.get("/scores").status_code for _ in range(3)] == [200, 200, 429]
    caches["local"].clear()


# --- Refused credentials spend the anonymous rate --------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    ["Bearer random-{n}", "Token wrong-{n}", "Basic {n}", "Bearer", "Bearer a b {n}"],
    ids=["unknown-bearer-tokens", "unknown-drf-tokens", "unknown-scheme", "empty", "malformed"],
)
def test_refused_credentials_are_throttled_by_address_without_asking_anyone(
    users_service: Any,
    httpserver: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    authorization: str,
) -> None:
    rates(monkeypatch, user="1000/hour", anon="3/hour")

    statuses = []
    for n in range(6):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=authorization.format(n=n))
        statuses.append(client.get("/scores").status_code)
    calls = len(httpserver.log)
    throttled = APIClient()
    throttled.credentials(HTTP_AUTHORIZATION=authorization.format(n=99))
    response = throttled.get("/scores")

    assert statuses == [401, 401, 401, 429, 429, 429]
    assert (response.status_code, response.json()["detail"][:24]) == (
        429,
        "Request was throttled. E",
    )
    assert 1 <= int(response["Retry-After"]) <= 3600
    assert len(httpserver.log) == calls  # the users service was not asked past the rate
    assert calls <= 3


def test_a_token_known_to_be_good_is_served_while_its_address_is_over_the_rate(
    users_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates(monkeypatch, user="1000/hour", anon="2/hour")
    good = bearer_client(users_service.user(4))
    assert good.get("/scores").status_code == 200

    bad = [bearer_client(f"forged-{n}").get("/scores").status_code for n in range(3)]

    assert bad == [401, 401, 429]
    assert good.get("/scores").status_code == 200


def test_a_new_good_token_is_checked_while_under_the_rate_and_spends_nothing(
    users_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates(monkeypatch, user="1000/hour", anon="2/hour")

    statuses = [bearer_client(users_service.user(n)).get("/scores").status_code for n in (1, 2, 3)]

    assert statuses == [200, 200, 200]
    assert bearer_client("forged").get("/scores").status_code == 401
