"""Browser sessions (Django's own middleware): the admin and staff using the API from the admin's
login have their session, CSRF protects their writes; bearer-token calls never touch a session,
set no cookie and keep every security header."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_browser(django_user_model: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_user("browser", is_staff=True))
    return client


def test_a_bearer_call_reads_no_session_and_sets_no_cookie(user) -> None:
    response = user.get("/scores")
    request = response.wsgi_request

    assert response.status_code == 200
    assert (request.session.accessed, request.session.modified) == (False, False)
    assert "Set-Cookie" not in response.headers


def test_a_bearer_call_keeps_the_security_headers(user) -> None:
    response = user.get("/scores")

    assert (response["X-Frame-Options"], response["X-Content-Type-Options"]) == (
        "DENY",
        "nosniff",
    )


def test_the_admin_gets_its_session_user_and_messages(staff_browser) -> None:
    response = staff_browser.get("/admin/")
    request = response.wsgi_request

    assert response.status_code == 200
    assert request.user.username == "browser"
    assert [hasattr(request, name) for name in ("session", "_messages")] == [True, True]


def test_an_api_call_with_the_session_cookie_is_the_staff_session(staff_browser) -> None:
    response = staff_browser.get("/scores")

    assert response.status_code == 200
    assert response.wsgi_request.user.username == "browser"


def test_a_session_write_without_the_csrf_token_is_a_json_403(staff_browser) -> None:
    response = staff_browser.patch(
        "/scores", {"exercise_id": 1, "correct": True}, content_type="application/json"
    )

    assert (response.status_code, response["Content-Type"], response.json()) == (
        403,
        "application/json",
        {"detail": "CSRF Failed: CSRF cookie not set."},
    )


def test_a_session_write_with_the_csrf_token_is_applied(staff_browser) -> None:
    token = staff_browser.get("/admin/").context["csrf_token"]

    response = staff_browser.patch(
        "/scores",
        {"user_id": 7, "exercise_id": 1, "correct": True},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=str(token),
    )

    assert (response.status_code, response.json()["user_id"]) == (201, 7)


def test_the_admin_login_form_still_checks_csrf() -> None:
    response = APIClient(enforce_csrf_checks=True).post("/admin/login/")

    assert response.status_code == 403


def test_a_bad_session_cookie_on_an_api_call_is_anonymous(anon) -> None:
    anon.cookies["sessionid"] = "not-a-session"

    response = anon.get("/scores")

    assert (response.status_code, response.wsgi_request.user) == (401, None)


def test_the_system_checks_pass_with_none_silenced(capsys) -> None:
    call_command("check", fail_level="WARNING")

    assert settings.SILENCED_SYSTEM_CHECKS == []
    assert "no issues (0 silenced)" in capsys.readouterr().out
