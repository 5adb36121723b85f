"""Every error is JSON in one shape, including Django's own 404/405/413/415/500 and 503s."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from scores import selectors
from scores.models import Score
from scores.tests.helpers import stored

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/nope", "/scores/abc", "/scores/1/nope", "/api/scores", "/"])
def test_unknown_routes_are_a_json_404(user, method, path) -> None:
    response = getattr(user, method)(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_write_to_an_unknown_route_is_a_json_404_with_csrf_checks_on(method) -> None:
    client = APIClient(enforce_csrf_checks=True)  # as under a real server

    response = getattr(client, method)("/scores/abc")

    assert (response.status_code, response["Content-Type"], response.json()) == (
        404,
        "application/json",
        {"detail": "Not found."},
    )


def test_more_query_parameters_than_django_reads_is_a_json_400(user) -> None:
    response = user.get("/scores?" + "&".join(["a=1"] * 1001))  # DATA_UPLOAD_MAX_NUMBER_FIELDS

    assert (response.status_code, response.json()) == (
        400,
        {
            "detail": "The number of GET/POST parameters exceeded "
            "settings.DATA_UPLOAD_MAX_NUMBER_FIELDS."
        },
    )


def test_a_host_not_allowed_is_a_json_400(anon) -> None:
    response = anon.get("/health", HTTP_HOST="elsewhere.example")

    assert (response.status_code, response["Content-Type"], response.json()) == (
        400,
        "application/json",
        {"detail": "Bad request."},
    )


def test_a_csrf_failure_outside_the_admin_is_a_json_403() -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.cookies["sessionid"] = "any"  # a request that could ride on a staff session

    response = client.post("/metrics")

    assert (response.status_code, response.json()) == (
        403,
        {"detail": "CSRF Failed: CSRF cookie not set."},
    )


def test_a_csrf_failure_in_the_admin_keeps_djangos_page() -> None:
    response = APIClient(enforce_csrf_checks=True).post("/admin/login/")

    assert response.status_code == 403
    assert response["Content-Type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/scores"),
        ("put", "/scores"),
        ("post", "/scores/1"),
        ("post", "/scores/user"),
        ("delete", "/scores/user/3"),
        ("post", "/health"),
        ("delete", "/scores/ping"),
    ],
)
def test_a_method_a_route_does_not_have_is_a_json_405(admin, method, path) -> None:
    response = getattr(admin, method)(path)

    assert response.status_code == 405
    assert response.json() == {"detail": f'Method "{method.upper()}" not allowed.'}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_body_that_is_not_json_is_a_415(user, content_type) -> None:
    response = user.generic(
        "PATCH", "/scores", b"exercise_id=3&correct=1", content_type=content_type
    )

    assert response.status_code == 415
    assert response.json() == {"detail": f'Unsupported media type "{content_type}" in request.'}
    assert stored() == []


def test_a_body_over_one_mebibyte_is_a_413(user) -> None:
    raw = b'{"exercise_id": 3, "correct": true, "pad": "' + b"x" * (1024 * 1024) + b'"}'

    response = user.generic("PATCH", "/scores", raw, content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than 1048576 bytes."}
    assert stored() == []


def test_a_body_just_under_the_limit_is_read(user) -> None:
    prefix = b'{"exercise_id": 3, "correct": true, "pad": "'
    raw = prefix + b"x" * (1024 * 1024 - len(prefix) - 2) + b'"}'

    response = user.generic("PATCH", "/scores", raw, content_type="application/json")

    assert response.status_code == 201


def test_a_bug_is_a_json_500_and_is_logged(user, monkeypatch, caplog) -> None:
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("scores.views.score_visible", broken)
    user.raise_request_exception = False

    response = user.get("/scores/1")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}
    assert "unhandled error on GET /scores/1" in caplog.text


def test_a_database_outage_is_a_503_with_retry_after(user, monkeypatch) -> None:
    def down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("scores.views.score_visible", down)

    response = user.get("/scores/1")

    assert response.status_code == 503
    assert response.json() == {"detail": "The database is unavailable; retry later."}
    assert response["Retry-After"] == "5"


def test_ready_is_a_503_when_the_database_does_not_answer(anon, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("django.db.backends.utils.CursorWrapper.execute", refuse)

    response = anon.get("/ready")

    assert response.status_code == 503
    assert response.json() == {"detail": "The database is unavailable; retry later."}
    assert response["Retry-After"] == "5"


def test_throttled_callers_get_a_429_with_retry_after(user, monkeypatch) -> None:
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "2/min", "anon": "2/min"})

    statuses = [user.get("/scores").status_code for _ in range(3)]
    response = user.get("/scores")

    assert statuses == [200, 200, 429]
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Request was throttled.")
    assert 0 < int(response["Retry-After"]) <= 60


def test_anonymous_callers_are_throttled_by_the_anon_rate(anon, monkeypatch) -> None:
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "100/min", "anon": "1/min"})

    assert [anon.get("/scores/ping").status_code for _ in range(2)] == [200, 429]


@pytest.mark.parametrize("origin", ["https://app.example.com"])
def test_cors_allows_configured_origins_only(settings, user, origin) -> None:
    settings.CORS_ALLOWED_ORIGINS = [origin]

    allowed = user.get("/scores", HTTP_ORIGIN=origin)
    other = user.get("/scores", HTTP_ORIGIN="https://evil.example.com")
    preflight = APIClient().options(
        "/scores",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="PATCH",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type",
    )

    assert allowed["Access-Control-Allow-Origin"] == origin
    assert "Access-Control-Allow-Origin" not in other
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == origin
    assert "authorization" in preflight["Access-Control-Allow-Headers"]


def test_cors_is_closed_by_default(user) -> None:
    response = user.get("/scores", HTTP_ORIGIN="https://app.example.com")

    assert "Access-Control-Allow-Origin" not in response


def test_the_ids_of_a_deleted_score_cannot_be_reused_by_update(admin, monkeypatch) -> None:
    """A score deleted between the visibility check and the update is a 404, not a resurrection."""
    response = admin.post(
        "/scores", {"user_id": 3, "exercise_id": 3, "correct": True}, format="json"
    )
    score_id = response.json()["id"]
    real = selectors.score_visible

    def then_delete(**kwargs):
        row = real(**kwargs)
        Score.objects.filter(id=score_id).delete()
        return row

    monkeypatch.setattr("scores.views.score_visible", then_delete)

    response = admin.put(f"/scores/{score_id}", {"correct": False}, format="json")

    assert response.status_code == 404
    assert stored() == []
