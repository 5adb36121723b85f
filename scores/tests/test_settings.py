"""Each settings module, imported in a fresh interpreter with an environment the test controls.

Settings are read once per process, so every case starts ``python`` with the variables the
settings read removed from the environment and only the case's own put back.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]

READ_BY_SETTINGS = (
    "DJANGO_SETTINGS_MODULE",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "DATABASE_TEST_URL",
    "DATABASE_REPLICA_URL",
    "DATABASE_LISTEN_URL",
    "CONN_MAX_AGE",
    "PREPARED_STATEMENTS",
    "CACHE_URL",
    "CSRF_TRUSTED_ORIGINS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "CORS_ALLOWED_ORIGINS",
    "TRUSTED_PROXY_COUNT",
    "ADMIN_LOGIN_FAILURE_LIMIT",
    "ADMIN_LOGIN_LOCKOUT_SECONDS",
    "REDIS_TIMEOUT",
    "DATABASE_STATEMENT_TIMEOUT",
    "DATABASE_CONNECT_TIMEOUT",
    "SCORE_POLICY",
)
REQUIRED_IN_PRODUCTION = ("SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS")

POSTGRES_URL = "postgres://scores:s3cret@db.internal:5433/scores_db"
POSTGRES = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "scores_db",
    "HOST": "db.internal",
    "PORT": 5433,
    "USER": "scores",
    "CONN_MAX_AGE": 60,
    "CONN_HEALTH_CHECKS": True,
}


def sqlite(filename: str) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE_DIR / filename),
        "HOST": "",
        "PORT": "",
        "USER": "",
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": None,
    }


def production_env() -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),  # 67 characters, none of Django's warnings
        "DATABASE_URL": POSTGRES_URL,
        "ALLOWED_HOSTS": "scores.example.com,scores.internal",
    }


PROBE = """
import json
import os
from django.conf import settings

database = settings.DATABASES["default"]
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "TESTING": getattr(settings, "TESTING", "absent"),
    "USE_TZ": settings.USE_TZ,
    "TIME_ZONE": settings.TIME_ZONE,
    "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
    "DATABASE": {
        key: database.get(key)
        for key in ("ENGINE", "NAME", "HOST", "PORT", "USER", "CONN_MAX_AGE", "CONN_HEALTH_CHECKS")
    },
    "CACHE": settings.CACHES["default"],
}))
"""


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` in the project directory, with only ``env`` of the settings' inputs."""
    environment = {k: v for k, v in os.environ.items() if k not in READ_BY_SETTINGS}
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def settings_of(module: str, **env: str) -> dict[str, Any]:
    result = run(["-c", PROBE], DJANGO_SETTINGS_MODULE=f"evalsvc.settings.{module}", **env)
    assert (result.returncode, result.stderr) == (0, "")
    return json.loads(result.stdout)


DEFAULT_HOSTS = ["localhost", "127.0.0.1"]
LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": ""}
UTC = {"USE_TZ": True, "TIME_ZONE": "UTC"}


@pytest.mark.parametrize(
    ("module", "env", "expected"),
    [
        pytest.param(
            "development",
            {},
            {"DEBUG": True, "TESTING": "absent", "DATABASE": sqlite("db.sqlite3")},
            id="development-without-DATABASE_URL-uses-sqlite",
        ),
        pytest.param(
            "development",
            {"DATABASE_URL": POSTGRES_URL},
            {"DEBUG": True, "TESTING": "absent", "DATABASE": POSTGRES},
            id="development-with-DATABASE_URL-uses-it",
        ),
        pytest.param(
            "testing",
            {},
            {"DEBUG": True, "TESTING": True, "DATABASE": sqlite("db.test.sqlite3")},
            id="testing-without-DATABASE_TEST_URL-uses-sqlite",
        ),
        pytest.param(
            "testing",
            {"DATABASE_URL": "postgres://app@db.internal/production"},
            {"DEBUG": True, "TESTING": True, "DATABASE": sqlite("db.test.sqlite3")},
            id="testing-ignores-DATABASE_URL",
        ),
        pytest.param(
            "testing",
            {"DATABASE_TEST_URL": POSTGRES_URL},
            {"DEBUG": True, "TESTING": True, "DATABASE": POSTGRES},
            id="testing-with-DATABASE_TEST_URL-uses-it",
        ),
    ],
)
def test_development_and_testing_choose_their_database_from_their_own_variable(
    module: str, env: dict[str, str], expected: dict[str, Any]
) -> None:
    assert settings_of(module, **env) == {
        **expected,
        **UTC,
        "ALLOWED_HOSTS": DEFAULT_HOSTS,
        "CACHE": LOCMEM,
    }


@pytest.mark.parametrize("module", ["production", "staging"])
def test_production_and_staging_run_without_debug_on_a_persistent_checked_connection(
    module: str,
) -> None:
    assert settings_of(module, **production_env()) == {
        "DEBUG": False,
        "TESTING": "absent",
        **UTC,
        "ALLOWED_HOSTS": ["scores.example.com", "scores.internal"],
        "DATABASE": POSTGRES,
        "CACHE": LOCMEM,
    }


@pytest.mark.parametrize("how", ["unset", "empty"])
@pytest.mark.parametrize("missing", REQUIRED_IN_PRODUCTION)
@pytest.mark.parametrize("module", ["production", "staging"])
def test_production_and_staging_without_a_required_variable_stop_naming_it(
    module: str, missing: str, how: str
) -> None:
    env = production_env()
    if how == "unset":
        del env[missing]
    else:
        env[missing] = ""

    result = run(["-c", PROBE], DJANGO_SETTINGS_MODULE=f"evalsvc.settings.{module}", **env)

    lines = result.stderr.splitlines()
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert [name for name in REQUIRED_IN_PRODUCTION if name in lines[0]] == [missing]


EVERY_SECURITY_VARIABLE = {
    "CORS_ALLOWED_ORIGINS": "https://app.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://scores.example.com",
    "TRUSTED_PROXY_COUNT": "1",
    "ADMIN_LOGIN_FAILURE_LIMIT": "10",
    "ADMIN_LOGIN_LOCKOUT_SECONDS": "60",
}


@pytest.mark.parametrize(
    "extra", [{}, EVERY_SECURITY_VARIABLE], ids=["defaults", "every-security-variable-set"]
)
@pytest.mark.parametrize("module", ["production", "staging"])
def test_the_deployment_checks_of_production_identify_no_issues_at_all(
    module: str, extra: dict[str, str]
) -> None:
    result = run(
        ["manage.py", "check", "--deploy"],
        DJANGO_SETTINGS_MODULE=f"evalsvc.settings.{module}",
        **production_env(),
        **extra,
    )

    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "System check identified no issues (0 silenced).\n",
        "",
    )


@pytest.mark.parametrize(
    ("cache_url", "expected"),
    [
        pytest.param(None, LOCMEM, id="default-per-process"),
        pytest.param("locmem://", LOCMEM, id="locmem"),
        pytest.param(
            "redis://127.0.0.1:6379/3",
            {
                "BACKEND": "scores.resilient_cache.FallbackCache",
                "OPTIONS": {"SHARED": "redis", "LOCAL": "local"},
            },
            id="redis",
        ),
    ],
)
def test_cache_url_selects_the_cache_backend(cache_url: str | None, expected: dict) -> None:
    env = {} if cache_url is None else {"CACHE_URL": cache_url}

    assert settings_of("development", **env)["CACHE"] == expected


def test_a_redis_cache_url_is_django_redis_with_the_redis_timeout_and_a_local_fallback() -> None:
    result = run(
        ["-c", "import json; from django.conf import settings; print(json.dumps(settings.CACHES))"],
        DJANGO_SETTINGS_MODULE="evalsvc.settings.development",
        CACHE_URL="redis://127.0.0.1:6379/3",
        REDIS_TIMEOUT="0.5",
    )
    caches = json.loads(result.stdout)

    assert caches["redis"] == {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/3",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    }
    assert caches["local"] == {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "evalsvc-fallback",
    }


SETTINGS_IN_USE = (
    "import json, os; from django.conf import settings; "
    "print(json.dumps([os.environ['DJANGO_SETTINGS_MODULE'], settings.SETTINGS_MODULE]))"
)


def entry_point(name: str) -> list[str]:
    if name == "manage.py":
        return ["manage.py", "shell", "--no-imports", "--verbosity", "0", "-c", SETTINGS_IN_USE]
    return ["-c", f"import {name}; {SETTINGS_IN_USE}"]


@pytest.mark.parametrize(
    ("entry", "chosen", "expected"),
    [
        ("evalsvc.wsgi", None, "evalsvc.settings.production"),
        ("evalsvc.asgi", None, "evalsvc.settings.production"),
        ("manage.py", None, "evalsvc.settings.development"),
        ("evalsvc.wsgi", "evalsvc.settings.staging", "evalsvc.settings.staging"),
        ("evalsvc.asgi", "evalsvc.settings.staging", "evalsvc.settings.staging"),
        ("manage.py", "evalsvc.settings.testing", "evalsvc.settings.testing"),
    ],
)
def test_entry_points_default_the_settings_module_and_respect_an_explicit_one(
    entry: str, chosen: str | None, expected: str
) -> None:
    env = production_env()
    if chosen is not None:
        env["DJANGO_SETTINGS_MODULE"] = chosen

    result = run(entry_point(entry), **env)

    assert result.returncode == 0, result.stderr  # stderr: WhiteNoise's "No directory at" warning
    assert json.loads(result.stdout) == [expected, expected]


DEADLINES = {"connect_timeout": 3, "options": "-c statement_timeout=5000 -c lock_timeout=5000"}

OPTIONS_PROBE = """
import json
from django.conf import settings

print(json.dumps(settings.DATABASES["default"].get("OPTIONS", {})))
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {}, {**DEADLINES, "server_side_binding": True, "prepare_threshold": 5}, id="default"
        ),
        pytest.param({"PREPARED_STATEMENTS": "false"}, DEADLINES, id="off-for-an-old-pgbouncer"),
    ],
)
def test_postgresql_statements_are_prepared_unless_turned_off(
    env: dict[str, str], expected: dict[str, Any]
) -> None:
    result = run(
        ["-c", OPTIONS_PROBE],
        DJANGO_SETTINGS_MODULE="evalsvc.settings.production",
        **production_env(),
        **env,
    )

    assert (result.returncode, result.stderr, json.loads(result.stdout or "null")) == (
        0,
        "",
        expected,
    )


SECONDARY_DATABASES_PROBE = """
import json
from django.conf import settings

print(json.dumps({
    alias: {key: database.get(key) for key in ("HOST", "PORT", "NAME", "OPTIONS", "TEST")}
    for alias, database in settings.DATABASES.items()
    if alias != "default"
}))
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, {}, id="unset-the-bell-listens-on-the-default-database"),
        pytest.param(
            {"DATABASE_LISTEN_URL": "postgres://scores@db-primary.internal:5432/scores_db"},
            {
                "listen": {
                    "HOST": "db-primary.internal",
                    "PORT": 5432,
                    "NAME": "scores_db",
                    "OPTIONS": DEADLINES,
                    "TEST": {"MIRROR": "default"},
                }
            },
            id="set-a-direct-connection-with-the-same-deadlines",
        ),
    ],
)
def test_database_listen_url_gives_the_events_bell_a_database_of_its_own(
    env: dict[str, str], expected: dict[str, Any]
) -> None:
    result = run(
        ["-c", SECONDARY_DATABASES_PROBE],
        DJANGO_SETTINGS_MODULE="evalsvc.settings.production",
        **production_env(),
        PREPARED_STATEMENTS="false",
        **env,
    )

    assert (result.returncode, result.stderr, json.loads(result.stdout or "null")) == (
        0,
        "",
        expected,
    )
