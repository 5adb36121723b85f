"""Locked down by default: production's security settings and headers, CORS closed unless
configured, the admin login lockout, the client address behind the proxy, no secret in any log
and none written into the settings.

Production's values are read from ``evalsvc.settings.production`` in a fresh interpreter (as
``test_settings.py`` does) and applied to the test process, so the headers are those production
sends. ``manage.py check --deploy`` under production settings is in ``test_settings.py``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.db.models import F
from django.test import Client, RequestFactory
from pytest_httpserver import HTTPServer
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from werkzeug import Request, Response

from scores.client_address import client_address
from scores.tests.conftest import USER_ID, UsersService, bearer_client
from scores.tests.test_settings import BASE_DIR, production_env, run

pytestmark = pytest.mark.django_db

# --- Production's settings, and the headers they make ----------------------------------------

SECURITY_SETTINGS = (
    "DEBUG",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "SECURE_REDIRECT_EXEMPT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "SECURE_CROSS_ORIGIN_OPENER_POLICY",
    "X_FRAME_OPTIONS",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "CSRF_COOKIE_SECURE",
    "CORS_ALLOWED_ORIGINS",
    "CORS_ALLOW_ALL_ORIGINS",
    "CORS_ALLOW_CREDENTIALS",
    "AXES_FAILURE_LIMIT",
)

PROBE = f"""
import json
from django.conf import settings
values = {{name: getattr(settings, name, "absent") for name in {SECURITY_SETTINGS!r}}}
values["AXES_COOLOFF_SECONDS"] = settings.AXES_COOLOFF_TIME.total_seconds()
values["NUM_PROXIES"] = settings.REST_FRAMEWORK["NUM_PROXIES"]
print(json.dumps(values))
"""


def production_settings(**env: str) -> dict[str, Any]:
    result = run(
        ["-c", PROBE],
        DJANGO_SETTINGS_MODULE="evalsvc.settings.production",
        **production_env(),
        **env,
    )
    assert (result.returncode, result.stderr) == (0, "")
    return json.loads(result.stdout)


LOCKED_DOWN = {
    "DEBUG": False,
    "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    "SECURE_SSL_REDIRECT": True,
    "SECURE_REDIRECT_EXEMPT": [r"^health/?$", r"^ready/?$"],
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
    "SECURE_CONTENT_TYPE_NOSNIFF": True,
    "SECURE_REFERRER_POLICY": "same-origin",
    "SECURE_CROSS_ORIGIN_OPENER_POLICY": "same-origin",
    "X_FRAME_OPTIONS": "DENY",
    "SESSION_COOKIE_SECURE": True,
    "SESSION_COOKIE_HTTPONLY": True,
    "CSRF_COOKIE_SECURE": True,
    "CORS_ALLOWED_ORIGINS": [],
    "CORS_ALLOW_ALL_ORIGINS": "absent",  # django-cors-headers' default: False
    "CORS_ALLOW_CREDENTIALS": "absent",  # likewise
    "AXES_FAILURE_LIMIT": 5,
    "AXES_COOLOFF_SECONDS": 900.0,
    "NUM_PROXIES": 0,
}


@pytest.fixture(scope="module")
def production() -> dict[str, Any]:
    return production_settings()


def test_production_is_locked_down_without_any_security_variable(production) -> None:
    assert production == LOCKED_DOWN


def test_production_takes_the_cors_proxy_and_lockout_variables_from_the_environment() -> None:
    values = production_settings(
        CORS_ALLOWED_ORIGINS="https://app.example.com,https://grader.example.com",
        TRUSTED_PROXY_COUNT="1",
        ADMIN_LOGIN_FAILURE_LIMIT="10",
        ADMIN_LOGIN_LOCKOUT_SECONDS="60",
    )

    assert values == {
        **LOCKED_DOWN,
        "CORS_ALLOWED_ORIGINS": ["https://app.example.com", "https://grader.example.com"],
        "NUM_PROXIES": 1,
        "AXES_FAILURE_LIMIT": 10,
        "AXES_COOLOFF_SECONDS": 60.0,
    }


@pytest.fixture
def production_like(settings, production) -> None:
    """The test process with production's security settings (clients made after this use them)."""
    for name in SECURITY_SETTINGS:
        if production[name] != "absent":
            setattr(settings, name, production[name])
    settings.SECURE_PROXY_SSL_HEADER = tuple(production["SECURE_PROXY_SSL_HEADER"])


HEADERS = (
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "X-Frame-Options",
    "Cross-Origin-Opener-Policy",
)
OVER_TLS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains; preload",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TLS = {"HTTP_X_FORWARDED_PROTO": "https"}  # what the proxy that ends TLS sets


def security_headers(response: Any) -> dict[str, str | None]:
    return {name: response.headers.get(name) for name in HEADERS}


@pytest.mark.parametrize(
    ("caller", "path", "status"),
    [
        ("anon", "/scores/ping", 200),
        ("anon", "/scores", 401),
        ("staff", "/scores", 200),
        ("staff", "/scores/export.csv", 200),
        ("staff", "/no/such/route", 404),
    ],
)
def test_api_answers_over_tls_carry_the_security_headers(
    production_like, request, caller, path, status
) -> None:
    response = request.getfixturevalue(caller).get(path, **TLS)

    assert response.status_code == status
    assert security_headers(response) == OVER_TLS


def test_the_docs_page_over_tls_carries_the_security_headers(production_like, anon) -> None:
    response = anon.get("/docs", **TLS)

    assert response.status_code == 200
    assert security_headers(response) == OVER_TLS


# The Content-Security-Policy (django-csp) of the HTML pages: they load only what the service
# serves.
POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}


def directives(response: Any) -> dict[str, str]:
    """The answer's Content-Security-Policy, directive by directive."""
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def test_the_admin_pages_carry_the_content_security_policy(production_like, anon) -> None:
    assert directives(anon.get("/admin/login/", **TLS)) == POLICY


@pytest.mark.parametrize(
    "path", ["/scores/ping", "/scores", "/schema", "/no/such/route", "/docs?script", "/metrics"]
)
def test_answers_no_browser_renders_as_a_page_carry_no_policy(production_like, anon, path) -> None:
    response = anon.get(path, **TLS)

    assert not response["Content-Type"].startswith("text/html")
    assert "Content-Security-Policy" not in response


def test_the_swagger_page_allows_only_its_own_inline_style_by_nonce(production_like, anon) -> None:
    response = anon.get("/docs", **TLS)
    again = anon.get("/docs", **TLS)

    [nonce] = re.findall(r'<style nonce="([^"]+)">', response.content.decode())
    assert directives(response) == {**POLICY, "style-src": f"'self' 'nonce-{nonce}'"}
    assert "<script>" not in response.content.decode()  # its start-up script: /docs?script
    assert directives(again)["style-src"] != directives(response)["style-src"]


def test_the_redoc_page_allows_the_inline_styles_and_search_worker_redoc_makes(
    production_like, anon
) -> None:
    response = anon.get("/redoc", **TLS)

    assert directives(response) == {
        **POLICY,
        "style-src": "'self' 'unsafe-inline'",
        "worker-src": "blob:",
    }
    assert "<script>" not in response.content.decode()


def test_admin_pages_over_tls_carry_the_security_headers_and_secure_cookies(
    production_like, django_user_model
) -> None:
    django_user_model.objects.create_user("operator", password="pw-for-this-test", is_staff=True)
    browser = Client(**TLS)

    form = browser.get("/admin/login/")
    login = browser.post(
        "/admin/login/?next=/admin/", {"username": "operator", "password": "pw-for-this-test"}
    )
    index = browser.get("/admin/")

    assert [form.status_code, login.status_code, index.status_code] == [200, 302, 200]
    for response in (form, login, index):
        assert security_headers(response) == OVER_TLS
    session, csrf = login.cookies["sessionid"], form.cookies["csrftoken"]
    assert (session["secure"], session["httponly"], csrf["secure"]) == (True, True, True)


def test_plain_http_is_redirected_to_https_without_hsts(production_like, anon) -> None:
    response = anon.get("/scores/ping")

    assert response.status_code == 301
    assert response["Location"] == "https://testserver/scores/ping"
    assert "Strict-Transport-Security" not in response


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_the_load_balancers_probes_answer_over_plain_http(production_like, anon, path) -> None:
    assert anon.get(path).status_code == 200


# --- CORS ------------------------------------------------------------------------------------

APP_ORIGIN = "https://app.example.com"
FOREIGN_ORIGIN = "https://evil.example"


def preflight(client: APIClient, origin: str) -> Any:
    return client.options(
        "/scores",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="PATCH",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )


@pytest.mark.parametrize("origin", [FOREIGN_ORIGIN, APP_ORIGIN])
def test_cors_is_closed_to_every_origin_by_default(anon, staff, origin) -> None:
    simple = staff.get("/scores", HTTP_ORIGIN=origin)
    options = preflight(anon, origin)

    assert simple.status_code == 200
    assert "Access-Control-Allow-Origin" not in simple
    assert "Access-Control-Allow-Origin" not in options


def test_cors_opens_to_a_configured_origin_only(settings, anon, staff) -> None:
    settings.CORS_ALLOWED_ORIGINS = [APP_ORIGIN]

    allowed = staff.get("/scores", HTTP_ORIGIN=APP_ORIGIN)
    allowed_preflight = preflight(anon, APP_ORIGIN)
    foreign = staff.get("/scores", HTTP_ORIGIN=FOREIGN_ORIGIN)
    foreign_preflight = preflight(anon, FOREIGN_ORIGIN)

    assert allowed["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert allowed_preflight["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "PATCH" in allowed_preflight["Access-Control-Allow-Methods"]
    assert "authorization" in allowed_preflight["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in allowed  # no cookies cross-origin
    assert "Access-Control-Allow-Origin" not in foreign
    assert "Access-Control-Allow-Origin" not in foreign_preflight


# --- Admin login lockout ---------------------------------------------------------------------

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def operator(django_user_model) -> Any:
    return django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)


def log_in(browser: Client, password: str) -> Any:
    return browser.post(
        "/admin/login/?next=/admin/", {"username": "operator", "password": password}
    )


@pytest.mark.parametrize("run", ["first", "again, with nothing left over from the first"])
def test_admin_login_locks_a_client_out_after_the_failure_limit(settings, operator, run) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    browser = Client()
    first = log_in(browser, PASSWORD)  # no lockout carried over from another test
    browser.post("/admin/logout/")

    failures = [log_in(browser, f"wrong-{n}").status_code for n in range(3)]
    locked = log_in(browser, PASSWORD)

    assert first.status_code == 302
    assert failures == [200, 200, 429]  # the third failure is the limit: it locks
    assert locked.status_code == 429
    assert locked["Retry-After"] == "900"
    assert locked.content == b"Too many failed logins from this address; try again later.\n"
    assert "Access-Control-Allow-Origin" not in locked
    assert locked.cookies.get("sessionid") is None or locked.cookies["sessionid"].value == ""
    assert browser.get("/admin/").status_code == 302  # to the login: not logged in


def test_a_lockout_is_per_client_and_ends_after_the_lockout_time(settings, operator) -> None:
    settings.AXES_FAILURE_LIMIT = 2
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for n in range(2):
        log_in(attacker, f"wrong-{n}")

    colleague = log_in(Client(REMOTE_ADDR="203.0.113.8"), PASSWORD)
    still_locked = log_in(attacker, PASSWORD)
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=901))
    after_the_lockout = log_in(attacker, PASSWORD)

    assert [colleague.status_code, still_locked.status_code] == [302, 429]
    assert after_the_lockout.status_code == 302


def test_behind_the_proxy_the_lockout_follows_the_address_the_proxy_forwarded(
    settings, operator
) -> None:
    settings.AXES_FAILURE_LIMIT = 2
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    via_proxy = {"REMOTE_ADDR": "10.0.0.2"}
    attacker = Client(**via_proxy, HTTP_X_FORWARDED_FOR="203.0.113.7")
    for n in range(2):
        log_in(attacker, f"wrong-{n}")

    # The attacker puts a made-up address first; the proxy appends the real one.
    spoofing = log_in(
        Client(**via_proxy, HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7"), PASSWORD
    )
    colleague = log_in(Client(**via_proxy, HTTP_X_FORWARDED_FOR="203.0.113.8"), PASSWORD)

    assert [spoofing.status_code, colleague.status_code] == [429, 302]


# --- The client's address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        pytest.param(0, None, "192.0.2.1", id="direct"),
        pytest.param(0, "203.0.113.7", "192.0.2.1", id="no-proxy-trusted-header-ignored"),
        pytest.param(1, None, "192.0.2.1", id="proxy-trusted-no-header"),
        pytest.param(1, "203.0.113.7", "203.0.113.7", id="one-proxy"),
        pytest.param(1, "198.51.100.1, 203.0.113.7", "203.0.113.7", id="client-made-entry-ignored"),
        pytest.param(2, "198.51.100.1, 203.0.113.7, 10.0.0.5", "203.0.113.7", id="two-proxies"),
    ],
)
def test_the_client_address_is_the_one_the_trusted_proxies_saw(
    settings, proxies, forwarded_for, expected
) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": proxies}
    headers = {} if forwarded_for is None else {"HTTP_X_FORWARDED_FOR": forwarded_for}

    assert client_address(RequestFactory().get("/", REMOTE_ADDR="192.0.2.1", **headers)) == expected


def test_a_made_up_x_forwarded_for_does_not_dodge_the_anonymous_throttle(anon, monkeypatch) -> None:
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "2/hour", "anon": "2/hour"})

    statuses = [
        anon.get("/scores/ping", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code
        for n in range(3)
    ]

    assert statuses == [200, 200, 429]


# --- No secret in any log --------------------------------------------------------------------


@pytest.fixture
def every_log(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG for every logger, including django.server, which does not propagate."""
    caplog.set_level(logging.DEBUG)
    for name in ("django", "django.request", "django.server", "django.security", "axes"):
        caplog.set_level(logging.DEBUG, logger=name)
    server = logging.getLogger("django.server")
    server.addHandler(caplog.handler)
    yield caplog
    server.removeHandler(caplog.handler)


def echoing_failure(request: Request) -> Response:
    """A failing users service that repeats the credentials it was sent in its answer."""
    return Response(f"boom: {request.headers.get('Authorization')}", status=500)


def echoing_garbage(request: Request) -> Response:
    return Response(f"<html>{request.headers.get('Authorization')}</html>", status=200)


def test_no_token_password_or_key_reaches_any_log(
    every_log,
    users_service: UsersService,
    httpserver: HTTPServer,
    settings,
    django_user_model,
    monkeypatch,
) -> None:
    bearer, rejected, failing, garbled, unreachable = (secrets.token_urlsafe(24) for _ in range(5))
    password, wrong_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    users_service.tokens[bearer] = {"id": USER_ID, "active": True, "admin": False}
    staff = django_user_model.objects.create_user("operator", password=password, is_staff=True)
    token = Token.objects.create(user=staff).key
    grader = APIClient()
    grader.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    browser = Client()

    # A user's bearer token: accepted, then a write; a rejected one.
    assert bearer_client(bearer).get("/scores").status_code == 200
    assert (
        bearer_client(bearer).patch("/scores", {"exercise_id": 3, "correct": True}, format="json")
    ).status_code == 201
    assert bearer_client(rejected).get("/scores").status_code == 401
    # A staff token: a read, a refused write, and a bug (a logged 500 with its traceback).
    assert grader.get("/scores").status_code == 200
    assert grader.post("/scores", {"exercise_id": 3}, format="json").status_code == 400
    monkeypatch.setattr("scores.views.score_visible", _broken)
    grader.raise_request_exception = False
    assert grader.get("/scores/1").status_code == 500
    # The admin: a failed and a successful session login.
    assert log_in_as(browser, "operator", wrong_password).status_code == 200
    assert log_in_as(browser, "operator", password).status_code == 302
    session = browser.cookies["sessionid"].value
    assert browser.get("/admin/").status_code == 200
    # The users service failing, answering garbage, and unreachable.
    httpserver.clear()
    httpserver.expect_request("/auth/status").respond_with_handler(echoing_failure)
    assert bearer_client(failing).get("/scores").status_code == 503
    httpserver.clear()
    httpserver.expect_request("/auth/status").respond_with_handler(echoing_garbage)
    assert bearer_client(garbled).get("/scores").status_code == 503
    settings.USERS_SERVICE_URL = "http://127.0.0.1:9/"
    assert bearer_client(unreachable).get("/scores").status_code == 503

    logged = every_log.text + "\n".join(repr(vars(record)) for record in every_log.records)
    assert "users service answered 500" in logged  # the capture did see the failures
    assert "unhandled error on GET /scores/1" in logged
    assert "AXES: New login failure" in logged
    leaked = {
        name: secret
        for name, secret in {
            "bearer token": bearer,
            "rejected bearer token": rejected,
            "bearer token the users service failed on": failing,
            "bearer token the users service garbled": garbled,
            "bearer token of an unreachable users service": unreachable,
            "DRF token": token,
            "password": password,
            "wrong password": wrong_password,
            "session id": session,
            "SECRET_KEY": django_settings.SECRET_KEY,
        }.items()
        if secret in logged
    }
    assert leaked == {}


def _broken(**kwargs: Any) -> None:
    raise RuntimeError("boom")


def log_in_as(browser: Client, username: str, password: str) -> Any:
    return browser.post("/admin/login/?next=/admin/", {"username": username, "password": password})


# --- No secret in the settings modules -----------------------------------------------------------

SETTINGS_DIR = BASE_DIR / "evalsvc" / "settings"
PLACEHOLDERS = {
    "development.py": {"development-only-not-secret"},
    "testing.py": {"testing-only-not-secret"},
}
SECRET_NAME = r"\w*(?:SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL)\w*"
STRING = r"[rbuf]?['\"]"
HARD_CODED = [
    # NAME = "..."  /  "NAME": "..."
    re.compile(rf"^\s*{SECRET_NAME}\s*=\s*{STRING}", re.IGNORECASE | re.MULTILINE),
    re.compile(rf"['\"]{SECRET_NAME}['\"]\s*:\s*{STRING}", re.IGNORECASE),
    # a URL with a password in it: postgres://user:password@host
    re.compile(r"\w+://[^\s/'\"@:]+:[^\s/'\"@]+@"),
]
DEFAULT_OF_A_SECRET = re.compile(
    rf"['\"]{SECRET_NAME}['\"][^\n]*default\s*=\s*{STRING}([^'\"]+)['\"]", re.IGNORECASE
)


def hard_coded_secrets(source: str) -> tuple[list[str], set[str]]:
    """What in ``source`` looks like a secret written into it, and the defaults of secrets."""
    found = [match.group(0) for pattern in HARD_CODED for match in pattern.finditer(source)]
    return found, {match.group(1) for match in DEFAULT_OF_A_SECRET.finditer(source)}


@pytest.mark.parametrize(
    "source",
    [
        'SECRET_KEY = "k3y"',
        "DB_PASSWORD = r'pw'",
        'DATABASES = {"default": {"PASSWORD": "pw"}}',
        'DATABASE_URL = env.str("DATABASE_URL", default="postgres://app:pw@db/prod")',
    ],
)
def test_the_settings_scan_finds_a_hard_coded_secret(source: str) -> None:
    assert hard_coded_secrets(source)[0] != []


def test_the_settings_scan_finds_the_default_of_a_secret() -> None:
    source = 'SECRET_KEY = env.str("SECRET_KEY", default="k3y")'

    assert hard_coded_secrets(source) == ([], {"k3y"})


def test_the_settings_modules_hold_no_secret_beyond_the_development_placeholders() -> None:
    modules = sorted(SETTINGS_DIR.glob("*.py"))
    found = {module.name: hard_coded_secrets(module.read_text()) for module in modules}

    assert {name for name, (hard_coded, _) in found.items() if hard_coded} == set()
    assert {name: defaults for name, (_, defaults) in found.items() if defaults} == PLACEHOLDERS
    production = (SETTINGS_DIR / "production.py").read_text()
    assert 'SECRET_KEY = require("SECRET_KEY")' in production
    assert 'database(require("DATABASE_URL"))' in production
