"""Who is calling (spec: "Callers and what they may do").

Bearer tokens are vouched for by the users service, here a real HTTP server on loopback
(pytest-httpserver); staff and service accounts are Django users (DRF token or session). The probe
endpoint is ``GET /scores``, which lists what the caller may see.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis
from django.conf import settings as django_settings
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient
from werkzeug import Request, Response

from evalsvc.settings.base import caches as caches_for
from scores.models import Score
from scores.resilient_cache import FallbackCache, redis_breaker
from scores.tests.conftest import ADMIN_ID, OTHER_ID, USER_ID, after_pause, bearer_client, trip
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import score_json
from scores.users_service import Verdict, local_verdicts
from scores.views import ScoreViewSet

pytestmark = pytest.mark.django_db

PROBE = "/scores"
EMPTY_PAGE = {"next": None, "previous": None, "results": []}
BEARER_CHALLENGE = 'Bearer realm="evalsvc"'

REJECTED = "Invalid, expired or inactive token."
MALFORMED_BEARER = "Malformed Authorization header: expected 'Bearer <token>'."
UNSUPPORTED_SCHEME = "Unsupported Authorization header: use 'Bearer <token>' or 'Token <key>'."
NO_CREDENTIALS = "Authentication credentials were not provided."
USERS_SERVICE_DOWN = "The users service is unavailable; retry later."
USERS_SERVICE_NOT_CONFIGURED = "The users service is not configured."

REDIS_URL = "redis://127.0.0.1:6379/15"


# --- Expected shapes ------------------------------------------------------------------------


def page_of(*scores: Score) -> dict[str, Any]:
    return {**EMPTY_PAGE, "results": [score_json(score) for score in scores]}


def assert_ok(response: Any, body: dict[str, Any]) -> None:
    assert (response.status_code, response.json()) == (200, body)


def assert_unauthorized(response: Any, detail: str) -> None:
    assert (response.status_code, response.json()) == (401, {"detail": detail})
    assert response.headers["WWW-Authenticate"] == BEARER_CHALLENGE


def assert_users_service_unavailable(response: Any, detail: str = USERS_SERVICE_DOWN) -> None:
    assert (response.status_code, response.json()) == (503, {"detail": detail})
    assert response.headers["Retry-After"] == str(django_settings.RETRY_AFTER_SECONDS)
    assert "WWW-Authenticate" not in response.headers


def client_with(authorization: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


def status_body(*, user_id: Any = 7, active: Any = True, admin: Any = False) -> dict[str, Any]:
    """A users-service ``/auth/status`` answer (the Flask users service's shape)."""
    data = {
        "id": user_id,
        "username": "someone",
        "email": "someone@example.com",
        "active": active,
        "admin": admin,
    }
    return {"status": "success", "data": data}


# --- Users-service doubles ------------------------------------------------------------------


@pytest.fixture
def users_service_url(httpserver: HTTPServer, settings: Any) -> HTTPServer:
    """The loopback server, configured as the users service but with no answer registered."""
    settings.USERS_SERVICE_URL = httpserver.url_for("/")
    return httpserver


@dataclass
class Switchable:
    """Delegates to a handler, except while ``down``: then answers 500."""

    handler: Any
    down: bool = True

    def handle(self, request: Request) -> Response:
        if self.down:
            return Response("<h1>Internal Server Error</h1>", status=500, mimetype="text/html")
        return self.handler(request)


@pytest.fixture
def flaky_users_service(users_service: Any, httpserver: HTTPServer) -> Switchable:
    """The standard users service, failing with 500s until ``.down`` is set to False."""
    switch = Switchable(handler=users_service.handle)
    httpserver.clear_all_handlers()
    httpserver.expect_request("/auth/status", method="GET").respond_with_handler(switch.handle)
    return switch


@pytest.fixture
def slow_users_service(users_service_url: HTTPServer, settings: Any) -> Iterator[None]:
    """A users service that answers only after 1 s (released at teardown); the timeout is 0.2 s."""
    settings.USERS_SERVICE_TIMEOUT = 0.2
    released = threading.Event()

    def handle(request: Request) -> Response:
        released.wait(timeout=1)
        return Response(orjson.dumps(status_body()), status=200, mimetype="application/json")

    users_service_url.expect_request("/auth/status", method="GET").respond_with_handler(handle)
    yield
    released.set()


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Cache spies and overrides --------------------------------------------------------------


@dataclass
class CacheWrites:
    """Every ``set`` on the default cache: (key, value, timeout)."""

    calls: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [key for key, _, _ in self.calls]

    @property
    def timeouts(self) -> list[Any]:
        return [timeout for _, _, timeout in self.calls]


@pytest.fixture
def cache_writes() -> Iterator[CacheWrites]:
    backend = caches["default"]
    original = backend.set
    writes = CacheWrites()

    def spy(key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Any:
        writes.calls.append((key, value, timeout))
        return original(key, value, timeout, version)

    backend.set = spy  # type: ignore[method-assign]
    yield writes
    del backend.set


@pytest.fixture
def no_throttling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Throttles also write to the cache; without them the only write is the token's verdict."""
    monkeypatch.setattr(ScoreViewSet, "throttle_classes", [])


@pytest.fixture
def redis_server() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    yield client
    client.close()


@pytest.fixture
def redis_cache(settings: Any, redis_server: redis.Redis) -> Iterator[str]:
    """The default cache on Redis, under a key prefix of its own (other tests share db 15)."""
    prefix = f"evalsvc-test-{uuid.uuid4().hex}"
    configured = caches_for(REDIS_URL)
    configured["redis"]["KEY_PREFIX"] = prefix
    settings.CACHES = configured
    assert isinstance(caches["default"], FallbackCache)
    yield prefix
    caches["local"].clear()
    for key in redis_server.scan_iter(f"{prefix}:*"):
        redis_server.delete(key)


def redis_keys(server: redis.Redis, prefix: str) -> list[str]:
    """The verdicts' keys."""
    return sorted(key.decode() for key in server.scan_iter(f"{prefix}:*:evalsvc:verdict:*"))


# --- Accepted bearer tokens -----------------------------------------------------------------


def test_an_accepted_token_makes_the_caller_the_user_the_users_service_names(
    users_service: Any, httpserver: HTTPServer
) -> None:
    token = users_service.user(USER_ID)
    own = ScoreFactory(user_id=USER_ID)
    ScoreFactory(user_id=OTHER_ID)

    assert_ok(bearer_client(token).get(PROBE), page_of(own))

    [(request, _)] = httpserver.log
    assert (request.method, request.path) == ("GET", "/auth/status")
    assert request.headers["Authorization"] == f"Bearer {token}"


def test_a_user_with_no_scores_sees_an_empty_list(user: APIClient) -> None:
    ScoreFactory(user_id=OTHER_ID)

    assert_ok(user.get(PROBE), EMPTY_PAGE)


def test_the_bearer_scheme_is_case_insensitive(users_service: Any) -> None:
    own = ScoreFactory(user_id=USER_ID)

    response = client_with(f"bearer {users_service.user(USER_ID)}").get(PROBE)

    assert_ok(response, page_of(own))


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:{port}", "http://127.0.0.1:{port}/"])
def test_the_users_service_url_may_end_with_a_slash_or_not(
    users_service: Any, httpserver: HTTPServer, settings: Any, base_url: str
) -> None:
    settings.USERS_SERVICE_URL = base_url.format(port=httpserver.port)

    assert_ok(bearer_client(users_service.user(USER_ID)).get(PROBE), EMPTY_PAGE)


def test_an_admin_of_the_users_service_is_privileged_and_sees_everyones_scores(
    admin: APIClient,
) -> None:
    scores = [ScoreFactory(user_id=USER_ID), ScoreFactory(user_id=OTHER_ID)]

    assert_ok(admin.get(PROBE), page_of(*scores))


def test_a_user_who_is_not_admin_sees_only_their_own_scores(
    user: APIClient, other: APIClient
) -> None:
    mine = ScoreFactory(user_id=USER_ID)
    theirs = ScoreFactory(user_id=OTHER_ID)
    ScoreFactory(user_id=ADMIN_ID)

    assert_ok(user.get(PROBE), page_of(mine))
    assert_ok(other.get(PROBE), page_of(theirs))


# --- Rejected bearer tokens: 401 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        pytest.param(
            200, "application/json", orjson.dumps(status_body(active=False)), id="inactive"
        ),
        pytest.param(
            200,
            "application/json",
            orjson.dumps({"status": "fail", "message": "Invalid token. Please log in again."}),
            id="status-fail",
        ),
        pytest.param(
            200,
            "application/json",
            orjson.dumps({**status_body(), "status": "error"}),
            id="status-error-with-valid-data",
        ),
        pytest.param(
            200,
            "application/json",
            orjson.dumps({"data": status_body()["data"]}),
            id="status-missing",
        ),
        pytest.param(
            401,
            "application/json",
            orjson.dumps({"status": "fail", "message": "Invalid token. Please log in again."}),
            id="401-json",
        ),
        pytest.param(401, "text/html", b"<h1>Unauthorized</h1>", id="401-html"),
        pytest.param(401, "text/plain", b"", id="401-empty"),
        pytest.param(
            403,
            "application/json",
            orjson.dumps({"status": "fail", "message": "You do not have permission."}),
            id="403-json",
        ),
        pytest.param(403, "text/html", b"<h1>Forbidden</h1>", id="403-html"),
    ],
)
def test_a_token_the_users_service_rejects_is_a_401_with_a_bearer_challenge(
    users_service_url: HTTPServer, status: int, content_type: str, body: bytes
) -> None:
    users_service_url.expect_request("/auth/status", method="GET").respond_with_data(
        body, status=status, content_type=content_type
    )
    ScoreFactory(user_id=7)

    assert_unauthorized(bearer_client("some-token").get(PROBE), REJECTED)


def test_a_token_unknown_to_the_standard_users_service_is_a_401(
    users_service: Any, httpserver: HTTPServer
) -> None:
    assert_unauthorized(bearer_client("not-a-token").get(PROBE), REJECTED)
    assert users_service.calls == 1


def test_an_inactive_user_of_the_standard_users_service_is_a_401(users_service: Any) -> None:
    token = users_service.user(USER_ID, active=False)
    ScoreFactory(user_id=USER_ID)

    assert_unauthorized(bearer_client(token).get(PROBE), REJECTED)


# --- Users service unusable: 503 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        pytest.param(500, "text/html", b"<h1>Internal Server Error</h1>", id="500"),
        pytest.param(502, "text/html", b"<html>Bad Gateway</html>", id="502"),
        pytest.param(503, "application/json", b'{"status": "fail"}', id="503"),
        pytest.param(504, "text/plain", b"", id="504"),
        pytest.param(404, "application/json", b'{"status": "fail"}', id="404"),
        pytest.param(429, "application/json", b'{"status": "fail"}', id="429"),
        pytest.param(302, "text/html", b"", id="302-redirect"),
        pytest.param(200, "text/html", b"<!doctype html><h1>It works!</h1>", id="200-html"),
        pytest.param(200, "application/octet-stream", b"\xff\xfe\x00\x81garbage", id="200-bytes"),
        pytest.param(200, "application/json", b"", id="200-empty"),
        pytest.param(200, "application/json", b'{"status": "success", "da', id="200-truncated"),
        pytest.param(200, "application/json", orjson.dumps([status_body()]), id="200-json-list"),
        pytest.param(200, "application/json", b'"success"', id="200-json-string"),
        pytest.param(200, "application/json", b"null", id="200-json-null"),
        pytest.param(200, "application/json", b"42", id="200-json-number"),
    ],
)
def test_a_users_service_answer_that_is_no_verdict_is_a_503_with_retry_after(
    users_service_url: HTTPServer, status: int, content_type: str, body: bytes
) -> None:
    users_service_url.expect_request("/auth/status", method="GET").respond_with_data(
        body, status=status, content_type=content_type
    )

    assert_users_service_unavailable(bearer_client("some-token").get(PROBE))


def _without(key: str) -> dict[str, Any]:
    body = status_body()
    del body["data"][key]
    return body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_without("id"), id="id-missing"),
        pytest.param(status_body(user_id=None), id="id-null"),
        pytest.param(status_body(user_id="7"), id="id-string"),
        pytest.param(status_body(user_id=7.0), id="id-float"),
        pytest.param(status_body(user_id=True), id="id-boolean"),
        pytest.param(status_body(user_id=0), id="id-zero"),
        pytest.param(status_body(user_id=-7), id="id-negative"),
        pytest.param(status_body(user_id=2_147_483_648), id="id-over-integer-range"),
        pytest.param(status_body(user_id={"id": 7}), id="id-object"),
        pytest.param({"status": "success"}, id="data-missing"),
        pytest.param({"status": "success", "data": None}, id="data-null"),
        pytest.param({"status": "success", "data": [status_body()["data"]]}, id="data-list"),
    ],
)
def test_a_success_without_a_usable_user_id_is_a_503(
    users_service_url: HTTPServer, body: dict[str, Any]
) -> None:
    users_service_url.expect_request("/auth/status", method="GET").respond_with_json(body)

    assert_users_service_unavailable(bearer_client("some-token").get(PROBE))


def test_a_users_service_slower_than_the_timeout_is_a_503(slow_users_service: None) -> None:
    assert_users_service_unavailable(bearer_client("some-token").get(PROBE))


def test_an_unreachable_users_service_is_a_503(settings: Any, closed_port: int) -> None:
    settings.USERS_SERVICE_URL = f"http://127.0.0.1:{closed_port}"

    assert_users_service_unavailable(bearer_client("some-token").get(PROBE))


def test_an_unconfigured_users_service_is_a_503(settings: Any) -> None:
    settings.USERS_SERVICE_URL = ""

    assert_users_service_unavailable(
        bearer_client("some-token").get(PROBE), USERS_SERVICE_NOT_CONFIGURED
    )


# --- Malformed Authorization headers: 401 without asking anyone -----------------------------


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        ("Bearer", MALFORMED_BEARER),
        ("Bearer ", MALFORMED_BEARER),
        ("Bearer     ", MALFORMED_BEARER),
        ("Bearer a b", MALFORMED_BEARER),
        ("Basic abc", UNSUPPORTED_SCHEME),
        ("Basic dXNlcjpwYXNz", UNSUPPORTED_SCHEME),
        ("Token", "Invalid token header. No credentials provided."),
        ("Token a b", "Invalid token header. Token string should not contain spaces."),
        ("Token wrongkey", "Invalid token."),
        ("Foo", UNSUPPORTED_SCHEME),
        ("Foo bar", UNSUPPORTED_SCHEME),
    ],
)
def test_a_malformed_or_unknown_authorization_header_is_a_401_without_a_users_service_call(
    users_service: Any, httpserver: HTTPServer, authorization: str, detail: str
) -> None:
    assert_unauthorized(client_with(authorization).get(PROBE), detail)
    assert httpserver.log == []


# --- Verdict cache --------------------------------------------------------------------------


def test_a_burst_of_requests_with_one_token_costs_one_users_service_call(
    users_service: Any, httpserver: HTTPServer
) -> None:
    own = ScoreFactory(user_id=USER_ID)
    client = bearer_client(users_service.user(USER_ID))

    for _ in range(10):
        assert_ok(client.get(PROBE), page_of(own))

    assert (users_service.calls, len(httpserver.log)) == (1, 1)


def test_each_token_gets_its_own_verdict(users_service: Any) -> None:
    mine = ScoreFactory(user_id=USER_ID)
    theirs = ScoreFactory(user_id=OTHER_ID)
    user = bearer_client(users_service.user(USER_ID))
    other = bearer_client(users_service.user(OTHER_ID))

    for _ in range(2):
        assert_ok(user.get(PROBE), page_of(mine))
        assert_ok(other.get(PROBE), page_of(theirs))

    assert users_service.calls == 2


def test_a_rejected_token_is_remembered_until_its_verdict_expires(
    users_service: Any, httpserver: HTTPServer
) -> None:
    token = users_service.user(USER_ID)
    data = users_service.tokens.pop(token)  # not (yet) known to the users service
    client = bearer_client(token)

    assert_unauthorized(client.get(PROBE), REJECTED)
    assert_unauthorized(client.get(PROBE), REJECTED)
    assert users_service.calls == 1

    users_service.tokens[token] = data  # the user logs in
    caches["default"].clear()  # the negative verdict expires...
    local_verdicts.clear()  # ...everywhere

    assert_ok(client.get(PROBE), EMPTY_PAGE)
    assert users_service.calls == 2


@pytest.mark.usefixtures("no_throttling")
@pytest.mark.parametrize(
    ("known", "expected_status", "setting"),
    [
        (True, 200, "USERS_SERVICE_CACHE_SECONDS"),
        (False, 401, "USERS_SERVICE_NEGATIVE_CACHE_SECONDS"),
    ],
)
def test_a_verdict_is_cached_for_the_seconds_its_setting_names(
    users_service: Any,
    settings: Any,
    cache_writes: CacheWrites,
    known: bool,
    expected_status: int,
    setting: str,
) -> None:
    settings.USERS_SERVICE_CACHE_SECONDS = 42
    settings.USERS_SERVICE_NEGATIVE_CACHE_SECONDS = 7
    token = users_service.user(USER_ID) if known else "unknown-token"

    assert bearer_client(token).get(PROBE).status_code == expected_status

    assert cache_writes.timeouts == [getattr(settings, setting)]


def test_an_outage_is_not_cached_and_the_next_request_asks_again(
    flaky_users_service: Switchable, users_service: Any, httpserver: HTTPServer
) -> None:
    own = ScoreFactory(user_id=USER_ID)
    client = bearer_client(users_service.user(USER_ID))

    assert_users_service_unavailable(client.get(PROBE))
    assert_users_service_unavailable(client.get(PROBE))
    assert len(httpserver.log) == 2

    flaky_users_service.down = False

    assert_ok(client.get(PROBE), page_of(own))
    assert_ok(client.get(PROBE), page_of(own))
    assert len(httpserver.log) == 3


@pytest.mark.usefixtures("no_throttling")
@pytest.mark.parametrize(
    "fault",
    ["unreachable", "unconfigured", "garbage"],
)
def test_no_outage_writes_a_verdict_to_the_cache(
    users_service_url: HTTPServer,
    settings: Any,
    closed_port: int,
    cache_writes: CacheWrites,
    fault: str,
) -> None:
    if fault == "unreachable":
        settings.USERS_SERVICE_URL = f"http://127.0.0.1:{closed_port}"
    elif fault == "unconfigured":
        settings.USERS_SERVICE_URL = ""
    else:
        users_service_url.expect_request("/auth/status").respond_with_data(b"<html>", status=200)

    assert bearer_client("some-token").get(PROBE).status_code == 503

    assert cache_writes.calls == []


def test_the_cache_never_holds_the_raw_token(users_service: Any, cache_writes: CacheWrites) -> None:
    accepted = "accepted-0123456789abcdef0123456789abcdef"
    rejected = "rejected-0123456789abcdef0123456789abcdef"
    users_service.tokens[accepted] = status_body(user_id=USER_ID)["data"]

    assert_ok(bearer_client(accepted).get(PROBE), EMPTY_PAGE)
    assert_unauthorized(bearer_client(rejected).get(PROBE), REJECTED)

    assert len(cache_writes.calls) >= 2
    for key, value, _ in cache_writes.calls:
        for token in (accepted, rejected):
            assert token not in key
            assert token not in repr(value)


# --- Verdict cache on Redis -----------------------------------------------------------------


@pytest.mark.usefixtures("no_throttling")
def test_on_redis_the_verdict_is_stored_in_redis_and_reused(
    users_service: Any, redis_server: redis.Redis, redis_cache: str, settings: Any
) -> None:
    settings.USERS_SERVICE_CACHE_SECONDS = 30
    own = ScoreFactory(user_id=USER_ID)
    token = users_service.user(USER_ID)
    client = bearer_client(token)

    assert_ok(client.get(PROBE), page_of(own))
    [key] = redis_keys(redis_server, redis_cache)
    assert token not in key
    assert 0 < redis_server.ttl(key) <= 30

    assert_ok(client.get(PROBE), page_of(own))
    assert users_service.calls == 1

    local_verdicts.clear()  # another process: it has only Redis to go by

    assert_ok(client.get(PROBE), page_of(own))
    assert users_service.calls == 1

    redis_server.delete(key)
    local_verdicts.clear()

    assert_ok(client.get(PROBE), page_of(own))
    assert users_service.calls == 2


@pytest.mark.usefixtures("no_throttling")
def test_a_process_keeps_a_verdict_no_longer_than_redis_does(
    users_service: Any, redis_server: redis.Redis, redis_cache: str, settings: Any
) -> None:
    settings.USERS_SERVICE_CACHE_SECONDS = 30
    client = bearer_client(users_service.user(USER_ID))
    assert_ok(client.get(PROBE), EMPTY_PAGE)
    [key] = redis_keys(redis_server, redis_cache)
    local_verdicts.clear()
    assert_ok(client.get(PROBE), EMPTY_PAGE)  # read from Redis, kept by this process

    [(expires_at, refresh_at, user_id, admin)] = local_verdicts._entries.values()

    assert (user_id, admin) == (USER_ID, False)
    assert refresh_at < expires_at
    assert expires_at == pytest.approx(time.time() + redis_server.pttl(key) / 1000, abs=1)


def test_on_redis_a_rejected_token_is_remembered_too(
    users_service: Any, redis_server: redis.Redis, redis_cache: str
) -> None:
    client = bearer_client("unknown-token")

    assert_unauthorized(client.get(PROBE), REJECTED)
    assert_unauthorized(client.get(PROBE), REJECTED)

    assert users_service.calls == 1
    [key] = redis_keys(redis_server, redis_cache)
    assert 0 < redis_server.ttl(key) <= django_settings.USERS_SERVICE_NEGATIVE_CACHE_SECONDS


@pytest.fixture
def unreachable_redis_cache(settings: Any, closed_port: int) -> Iterator[None]:
    settings.CACHES = caches_for(f"redis://127.0.0.1:{closed_port}/15")
    assert isinstance(caches["default"], FallbackCache)
    yield
    caches["local"].clear()  # what the process kept meanwhile is not the next test's


@pytest.mark.usefixtures("unreachable_redis_cache", "no_throttling")
def test_with_redis_unreachable_the_process_keeps_the_verdicts_itself(
    users_service: Any,
) -> None:
    own = ScoreFactory(user_id=USER_ID)
    client = bearer_client(users_service.user(USER_ID))

    assert_ok(client.get(PROBE), page_of(own))
    assert_ok(client.get(PROBE), page_of(own))  # the process's own copy of the verdict
    local_verdicts.clear()
    assert_ok(client.get(PROBE), page_of(own))  # kept in the process's fallback cache
    assert_unauthorized(bearer_client("unknown-token").get(PROBE), REJECTED)
    assert_unauthorized(bearer_client("unknown-token").get(PROBE), REJECTED)

    assert users_service.calls == 2
    assert redis_breaker.opened  # no longer asked on every request


@pytest.mark.usefixtures("unreachable_redis_cache")
def test_with_redis_unreachable_requests_still_succeed_with_default_throttling(
    users_service: Any,
) -> None:
    own = ScoreFactory(user_id=USER_ID)
    client = bearer_client(users_service.user(USER_ID))

    assert_ok(client.get(PROBE), page_of(own))
    local_verdicts.clear()
    caches["local"].clear()  # another process
    assert_ok(client.get(PROBE), page_of(own))

    assert users_service.calls == 2


@pytest.mark.usefixtures("no_throttling")
def test_redis_is_used_again_once_it_answers(
    users_service: Any, redis_server: redis.Redis, redis_cache: str, monkeypatch: Any
) -> None:
    trip(redis_breaker)
    client = bearer_client(users_service.user(USER_ID))
    assert_ok(client.get(PROBE), EMPTY_PAGE)
    assert redis_keys(redis_server, redis_cache) == []  # kept by the process meanwhile

    after_pause(redis_breaker, monkeypatch)
    local_verdicts.clear()
    caches["local"].clear()
    assert_ok(client.get(PROBE), EMPTY_PAGE)

    assert redis_breaker.closed
    assert len(redis_keys(redis_server, redis_cache)) == 1
    assert users_service.calls == 2


# --- Verdicts refreshed before they expire --------------------------------------------------


@pytest.mark.usefixtures("no_throttling")
def test_a_verdict_used_past_its_refresh_point_is_refreshed_in_the_background(
    users_service: Any,
) -> None:
    client = bearer_client(users_service.user(USER_ID))
    assert_ok(client.get(PROBE), EMPTY_PAGE)
    [key] = local_verdicts._entries
    first = local_verdicts._entries[key]
    assert first.expires_at - 60 < first.refresh_at < first.expires_at
    local_verdicts.put(key, first._replace(refresh_at=time.time() - 1))
    caches["default"].delete(key)

    assert_ok(client.get(PROBE), EMPTY_PAGE)  # answered with the verdict it has

    deadline = time.monotonic() + 5
    while users_service.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert users_service.calls == 2
    while (
        local_verdicts._entries[key]
        == first._replace(refresh_at=local_verdicts._entries[key].refresh_at)
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert local_verdicts._entries[key].expires_at > first.expires_at


def test_a_verdict_is_never_used_past_its_lifetime(users_service: Any) -> None:
    client = bearer_client(users_service.user(USER_ID))
    assert_ok(client.get(PROBE), EMPTY_PAGE)
    [key] = local_verdicts._entries
    expired = Verdict(expires_at=time.time() - 0.001, refresh_at=time.time() - 1, user_id=USER_ID)
    local_verdicts.put(key, expired)
    caches["default"].set(key, tuple(expired))
    users_service.tokens.clear()  # revoked meanwhile

    assert_unauthorized(client.get(PROBE), REJECTED)
    assert users_service.calls == 2


# --- Staff and service accounts -------------------------------------------------------------


def test_a_staff_api_token_is_privileged_and_sees_everyones_scores(
    staff: APIClient, httpserver: HTTPServer
) -> None:
    scores = [ScoreFactory(user_id=USER_ID), ScoreFactory(user_id=OTHER_ID)]

    assert_ok(staff.get(PROBE), page_of(*scores))
    assert httpserver.log == []


def test_a_token_of_an_account_that_is_not_staff_is_a_403(non_staff: APIClient) -> None:
    ScoreFactory(user_id=USER_ID)

    response = non_staff.get(PROBE)

    assert (response.status_code, response.json()) == (
        403,
        {"detail": "Only platform users and staff accounts may use the scores API."},
    )


@pytest.fixture
def session_of(django_user_model: Any) -> Any:
    def login(*, is_staff: bool) -> APIClient:
        account = django_user_model.objects.create_user(
            f"session-{'staff' if is_staff else 'user'}", is_staff=is_staff
        )
        client = APIClient()
        client.force_login(account)
        return client

    return login


def test_a_staff_session_is_privileged_and_sees_everyones_scores(session_of: Any) -> None:
    scores = [ScoreFactory(user_id=USER_ID), ScoreFactory(user_id=OTHER_ID)]

    assert_ok(session_of(is_staff=True).get(PROBE), page_of(*scores))


def test_a_session_of_an_account_that_is_not_staff_is_a_403(session_of: Any) -> None:
    response = session_of(is_staff=False).get(PROBE)

    assert (response.status_code, response.json()) == (
        403,
        {"detail": "Only platform users and staff accounts may use the scores API."},
    )


# --- Anonymous callers ----------------------------------------------------------------------


def test_an_anonymous_list_request_is_a_401_with_a_bearer_challenge(anon: APIClient) -> None:
    ScoreFactory(user_id=USER_ID)

    assert_unauthorized(anon.get(PROBE), NO_CREDENTIALS)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/scores/ping", {"status": "success", "message": "pong!"}),
        ("/health", {"status": "ok"}),
        ("/ready", {"status": "ok"}),
    ],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer a b", "Bearer unknown-token", "Token wrongkey", "Foo"],
)
def test_public_endpoints_answer_anyone_whatever_their_authorization_header(
    users_service: Any,
    httpserver: HTTPServer,
    path: str,
    body: dict[str, Any],
    authorization: str | None,
) -> None:
    client = APIClient() if authorization is None else client_with(authorization)

    assert_ok(client.get(path), body)
    assert httpserver.log == []
