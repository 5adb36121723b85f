"""Who may do what, on every route: each route, method and kind of caller against the spec.

``MATRIX`` below is written from the spec ("Callers and what they may do" and the endpoint
table), not from the code's answers. Its routes are checked against the URL conf itself, so a
new route without a row makes ``test_every_route_of_the_url_conf_has_a_row_in_the_matrix`` fail.

Every request is about the scores of user 4 (``OWNER_ID``): the path's score is theirs, and
routes that take ``user_id`` name them in the query and in write bodies, which are valid so
that the status reflects authorization, not validation; ``{webhook}`` is a webhook subscription
that exists. The callers:

- ``anonymous``: no credentials;
- ``user``: user 4's bearer token (the owner);
- ``other_user``: user 5's bearer token: does not own the score in the path;
- ``inactive_user``: a bearer token the users service describes with ``active: false``;
- ``admin_bearer``: a bearer token of a users-service ``admin: true`` user (privileged);
- ``staff_token``: the DRF token of an ``is_staff`` account (privileged);
- ``non_staff_token``: the DRF token of an account without ``is_staff`` (not a scores caller).

Authentication and permission come before method dispatch (DRF's order), so a method a route
does not have is a 401 to callers without valid credentials, a 403 to a non-staff account and a
405 only to callers who may use the route. ``OPTIONS`` describes a route to whoever may use it
and says nothing about the score in the path (the same answer for a hidden and a missing one).

``/metrics`` is served as production serves it, only for ``Bearer <METRICS_TOKEN>``, which none
of these callers has.

The Django admin (``admin/`` and the ``admin`` redirect) is left out of the matrix: it ignores
API credentials and has its own login (see ``test_the_admin_answers_api_credentials_with_its_login``
here and the login throttle in ``test_security.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from rest_framework.test import APIClient

from scores.models import Attempt, Score, WebhookSubscription
from scores.tests.conftest import OTHER_ID, UsersService, bearer_client
from scores.tests.factories import ScoreFactory
from scores.webhooks import new_secret

pytestmark = pytest.mark.django_db

OWNER_ID = 4  # the ``user`` fixture's platform user
INACTIVE_ID = 6
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
CALLERS = (
    "anonymous",
    "user",
    "other_user",
    "inactive_user",
    "admin_bearer",
    "staff_token",
    "non_staff_token",
)
EXCLUDED_ROUTE_PREFIXES = ("admin",)  # the Django admin: see the module docstring

# One row per method; one status per caller, in the order of CALLERS.
#                   anon  user other inact admin staff non-staff
API_READ = (401, 200, 200, 401, 200, 200, 403)  # a list or an endpoint's description
OWNERS_READ = (401, 200, 404, 401, 200, 200, 403)  # another user's score is a 404
NOT_ALLOWED = (401, 405, 405, 401, 405, 405, 403)  # credentials first, then the 405
PRIVILEGED_READ = (401, 403, 403, 401, 200, 200, 403)  # privileged callers only
PUBLIC = (200, 200, 200, 200, 200, 200, 200)  # no credentials needed, any ignored
PUBLIC_NOT_ALLOWED = (405, 405, 405, 405, 405, 405, 405)
NOWHERE = (404, 404, 404, 404, 404, 404, 404)
METRICS_ONLY = (401, 401, 401, 401, 401, 401, 401)  # only the METRICS_TOKEN bearer, none of these


def public(*methods: str) -> dict[str, tuple[int, ...]]:
    """An anonymous route answering ``methods`` and 405 to every other one."""
    return {m: PUBLIC if m in methods else PUBLIC_NOT_ALLOWED for m in METHODS}


MATRIX: dict[str, dict[str, tuple[int, ...]]] = {
    "/scores?user_id=4": {
        "GET": API_READ,  # others' rows are filtered out, not refused
        "HEAD": API_READ,
        "OPTIONS": API_READ,
        "POST": (401, 201, 403, 401, 201, 201, 403),
        "PUT": NOT_ALLOWED,
        "PATCH": (401, 200, 403, 401, 200, 200, 403),
        "DELETE": NOT_ALLOWED,
    },
    "/scores/{id}": {
        "GET": OWNERS_READ,
        "HEAD": OWNERS_READ,
        "OPTIONS": API_READ,
        "POST": NOT_ALLOWED,
        "PUT": (401, 200, 404, 401, 200, 200, 403),
        "PATCH": (401, 200, 404, 401, 200, 200, 403),
        "DELETE": (401, 403, 404, 401, 204, 204, 403),  # privileged only; hidden is a 404
    },
    "/scores/{id}/attempts": {
        "GET": OWNERS_READ,
        "HEAD": OWNERS_READ,
        "OPTIONS": API_READ,
        "POST": NOT_ALLOWED,
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/scores/user?user_id=4": {
        "GET": API_READ,  # another user_id shows a user nothing
        "HEAD": API_READ,
        "OPTIONS": API_READ,
        "POST": NOT_ALLOWED,
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/scores/user/7?user_id=4": {
        "GET": OWNERS_READ,
        "HEAD": OWNERS_READ,
        "OPTIONS": API_READ,
        "POST": NOT_ALLOWED,
        "PUT": (401, 200, 403, 401, 200, 200, 403),  # naming another user to write: 403
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/scores/user/7/attempts?user_id=4": {
        "GET": OWNERS_READ,
        "HEAD": OWNERS_READ,
        "OPTIONS": API_READ,
        "POST": NOT_ALLOWED,
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/scores/summary?user_id=4": {
        "GET": (401, 200, 403, 401, 200, 200, 403),
        "HEAD": (401, 200, 403, 401, 200, 200, 403),
        "OPTIONS": API_READ,
        "POST": NOT_ALLOWED,
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/scores/stats/exercises": {
        "GET": API_READ,
        "HEAD": API_READ,
        "OPTIONS": API_READ,
        "POST": NOT_ALLOWED,
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/scores/bulk": {
        "GET": NOT_ALLOWED,
        "HEAD": NOT_ALLOWED,
        "OPTIONS": API_READ,
        "POST": (401, 403, 403, 401, 200, 200, 403),  # privileged only
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/scores/export.csv?user_id=4": {
        "GET": (401, 403, 403, 401, 200, 200, 403),  # privileged only
        "HEAD": (401, 403, 403, 401, 200, 200, 403),
        "OPTIONS": API_READ,
        "POST": NOT_ALLOWED,
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/events": {
        "GET": PRIVILEGED_READ,
        "HEAD": PRIVILEGED_READ,
        "OPTIONS": PRIVILEGED_READ,
        "POST": NOT_ALLOWED,
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/privacy/users/4": {
        "GET": OWNERS_READ,  # the user themself or privileged; anyone else a 404
        "HEAD": OWNERS_READ,
        "OPTIONS": API_READ,
        "POST": NOT_ALLOWED,
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": (401, 403, 404, 401, 200, 200, 403),  # privileged only; another's is a 404
    },
    "/webhooks": {
        "GET": PRIVILEGED_READ,
        "HEAD": PRIVILEGED_READ,
        "OPTIONS": PRIVILEGED_READ,
        "POST": (401, 403, 403, 401, 201, 201, 403),  # privileged only
        "PUT": NOT_ALLOWED,
        "PATCH": NOT_ALLOWED,
        "DELETE": NOT_ALLOWED,
    },
    "/webhooks/{webhook}": {
        "GET": PRIVILEGED_READ,
        "HEAD": PRIVILEGED_READ,
        "OPTIONS": PRIVILEGED_READ,
        "POST": NOT_ALLOWED,
        "PUT": NOT_ALLOWED,
        "PATCH": PRIVILEGED_READ,
        "DELETE": (401, 403, 403, 401, 204, 204, 403),
    },
    "/scores/ping": public("GET", "HEAD", "OPTIONS"),
    "/health": public("GET", "HEAD", "OPTIONS"),
    "/ready": public("GET", "HEAD", "OPTIONS"),
    "/schema": public("GET", "HEAD", "OPTIONS"),
    "/docs": public("GET", "HEAD", "OPTIONS"),
    "/redoc": public("GET", "HEAD", "OPTIONS"),
    "/metrics": dict.fromkeys(METHODS, METRICS_ONLY),
    "/no/such/route": dict.fromkeys(METHODS, NOWHERE),  # the catch-all: a JSON 404
}

# SCORES_SELF_REPORT=false: every write of a non-privileged caller is a 403, whatever the score.
SELF_REPORT_OFF: dict[tuple[str, str], tuple[int, ...]] = {
    ("/scores?user_id=4", "POST"): (401, 403, 403, 401, 201, 201, 403),
    ("/scores?user_id=4", "PATCH"): (401, 403, 403, 401, 200, 200, 403),
    ("/scores/{id}", "PUT"): (401, 403, 403, 401, 200, 200, 403),
    ("/scores/{id}", "PATCH"): (401, 403, 403, 401, 200, 200, 403),
    ("/scores/{id}", "DELETE"): (401, 403, 404, 401, 204, 204, 403),
    ("/scores/user/7?user_id=4", "PUT"): (401, 403, 403, 401, 200, 200, 403),
    ("/scores/bulk", "POST"): (401, 403, 403, 401, 200, 200, 403),
    ("/privacy/users/4", "DELETE"): (401, 403, 404, 401, 200, 200, 403),
}

# Valid bodies for the writes a route has (anything else gets its 405 before parsing).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/scores?user_id=4", "POST"): {"user_id": OWNER_ID, "exercise_id": 8, "correct": True},
    ("/scores?user_id=4", "PATCH"): {"user_id": OWNER_ID, "exercise_id": 7, "correct": True},
    ("/scores/{id}", "PUT"): {"correct": True},
    ("/scores/{id}", "PATCH"): {"correct": True},
    ("/scores/user/7?user_id=4", "PUT"): {"correct": True},
    ("/scores/bulk", "POST"): {
        "scores": [{"user_id": OWNER_ID, "exercise_id": 8, "correct": True}]
    },
    ("/webhooks", "POST"): {"url": "http://127.0.0.1:9/hook"},  # WEBHOOK_ALLOW_PRIVATE below
    ("/webhooks/{webhook}", "PATCH"): {"active": False},
}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def url_conf_routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[str]:
    """Every route of the URL conf, included ones (the router's) joined as Django joins them."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = str(pattern.pattern)
        if prefix:
            route = prefix + route.removeprefix("^")
        if isinstance(pattern, URLResolver):
            yield from url_conf_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route


def route_of(path: str) -> str:
    return resolve(urlsplit(path.format(id=1, webhook=1)).path).route


def test_every_route_of_the_url_conf_has_a_row_in_the_matrix() -> None:
    found = {r for r in url_conf_routes() if not r.startswith(EXCLUDED_ROUTE_PREFIXES)}
    in_matrix = [route_of(path) for path in MATRIX]

    assert sorted(found) == sorted(in_matrix)  # each route once: no gaps, no duplicates


def test_the_matrix_covers_every_method_and_the_writes_have_bodies() -> None:
    assert {path: tuple(rows) for path, rows in MATRIX.items()} == dict.fromkeys(MATRIX, METHODS)
    assert all(
        len(statuses) == len(CALLERS) for rows in MATRIX.values() for statuses in rows.values()
    )
    for path, method in BODIES:
        assert MATRIX[path][method][CALLERS.index("user")] != 405


@pytest.fixture(autouse=True)
def _metrics_behind_their_token(settings) -> None:
    """/metrics as production serves it: only for ``Bearer <METRICS_TOKEN>``."""
    settings.METRICS_TOKEN = "metrics-token-of-the-matrix"


@pytest.fixture(autouse=True)
def _loopback_webhooks_allowed(settings) -> None:
    """The webhook written by ``POST /webhooks`` is on loopback (nothing is sent to it)."""
    settings.WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def webhook() -> WebhookSubscription:
    """The webhook subscription in the paths."""
    return WebhookSubscription.objects.create(url="http://127.0.0.1:9/hook", secret=new_secret())


@pytest.fixture
def owners_score() -> Score:
    """The score in the paths: user 4's, exercise 7. User 5 has one for exercise 7 too."""
    ScoreFactory(user_id=OTHER_ID, exercise_id=7, correct=True)
    return ScoreFactory(user_id=OWNER_ID, exercise_id=7, correct=False)


@pytest.fixture
def client_of(request: pytest.FixtureRequest) -> Any:
    """The API client of a kind of caller (the accounts and tokens made on demand)."""

    def client(caller: str) -> APIClient:
        if caller == "inactive_user":
            service: UsersService = request.getfixturevalue("users_service")
            return bearer_client(service.user(INACTIVE_ID, active=False))
        fixture = {
            "anonymous": "anon",
            "user": "user",
            "other_user": "other",
            "admin_bearer": "admin",
            "staff_token": "staff",
            "non_staff_token": "non_staff",
        }[caller]
        return request.getfixturevalue(fixture)

    return client


def stored_state() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every score and attempt-log row, whole."""
    return (
        list(Score.objects.order_by("id").values()),
        list(Attempt.objects.order_by("id").values()),
    )


def assert_answers(
    client: APIClient,
    path: str,
    method: str,
    expected: int,
    score: Score,
    webhook: WebhookSubscription,
):
    body = BODIES.get((path, method))
    before = stored_state()

    response = client.generic(
        method,
        path.format(id=score.id, webhook=webhook.id),
        json.dumps(body) if body is not None else "",
        content_type="application/json",
    )

    assert response.status_code == expected, response.content[:300]
    if expected >= 400 or method not in WRITES:
        assert stored_state() == before
    if expected == 401:  # the spec: a 401 says how to authenticate
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer realm=")
    if expected >= 400 and method != "HEAD":
        assert response["Content-Type"] == "application/json"
        assert isinstance(response.json()["detail"], str)


CASES = [
    pytest.param(path, method, caller, rows[method][i], id=f"{method} {path} {caller}")
    for path, rows in MATRIX.items()
    for method in METHODS
    for i, caller in enumerate(CALLERS)
]


@pytest.mark.parametrize(("path", "method", "caller", "expected"), CASES)
def test_the_route_answers_the_caller_as_the_spec_says(
    client_of, owners_score, webhook, path, method, caller, expected
) -> None:
    assert_answers(client_of(caller), path, method, expected, owners_score, webhook)


SELF_REPORT_OFF_CASES = [
    pytest.param(path, method, caller, statuses[i], id=f"{method} {path} {caller}")
    for (path, method), statuses in SELF_REPORT_OFF.items()
    for i, caller in enumerate(CALLERS)
]


@pytest.mark.parametrize(("path", "method", "caller", "expected"), SELF_REPORT_OFF_CASES)
def test_without_self_report_only_privileged_callers_write(
    settings, client_of, owners_score, webhook, path, method, caller, expected
) -> None:
    settings.SCORES_SELF_REPORT = False

    assert_answers(client_of(caller), path, method, expected, owners_score, webhook)


def test_options_of_a_hidden_score_is_the_options_of_a_missing_one(other, owners_score):
    hidden = other.options(f"/scores/{owners_score.id}")
    missing = other.options(f"/scores/{owners_score.id + 1000}")

    assert hidden.status_code == missing.status_code == 200
    assert hidden.json() == missing.json()


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("path", ["/admin/", "/admin/scores/score/"])
def test_the_admin_answers_api_credentials_with_its_login(client_of, caller, path) -> None:
    response = client_of(caller).get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"
