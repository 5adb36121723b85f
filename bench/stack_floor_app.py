"""The floor of the prescribed stack for ``GET /scores/<id>``: a Django + DRF skeleton that does
only what ``FLOOR_LEVEL`` (environment) names, served by ``bench/stack_floor.py`` under gunicorn
exactly as evalsvc's API is (3 sync workers). Not evalsvc: no contract beyond this one route.

Levels, each adding one piece of the contract's per-request work to the one before it:

- ``constant``: a DRF ``APIView`` answering a constant score as JSON; no middleware, no
  authentication, no throttle.
- ``read``: + the score read from PostgreSQL by id (one statement on a kept connection, a plain
  cursor and a dict, as evalsvc's ``scores.selectors`` does).
- ``read-orm`` (beside the ladder): ``read`` done the idiomatic way, ``Model.objects.get`` and a
  ``ModelSerializer``.
- ``verdicts``: + the bearer token looked up in a per-process dict of verdicts, filled at
  start for every token the load uses and never expiring: an upper bound (evalsvc refreshes
  each verdict once per ``USERS_SERVICE_CACHE_SECONDS`` and shares them in Redis).
- ``throttle``: + the caller's counter in Redis (django-redis ``incr``), as a rate per caller
  shared by every worker needs.
- ``log``: + one JSON line per request on stderr.
- ``middleware``: + Django's standard middleware (security, sessions, common, CSRF,
  authentication, messages, clickjacking), which the admin needs.

Settings from the environment: ``DATABASE_URL`` (a ``scores`` table with the harness's columns),
``CACHE_URL`` (Redis), ``FLOOR_LEVEL``, ``FLOOR_USERS`` (tokens ``u1``..``u<N>``, default 10000).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import django
import environ
import orjson
from django.conf import settings

LADDER = ("constant", "read", "verdicts", "throttle", "log", "middleware")
LEVEL = os.environ.get("FLOOR_LEVEL", "constant")
ORM = LEVEL == "read-orm"
RANK = LADDER.index("read" if ORM else LEVEL)


def has(step: str) -> bool:
    """Whether this level does ``step`` of the ladder."""
    return LADDER.index(step) <= RANK


USERS = int(os.environ.get("FLOOR_USERS", "10000"))

_env = environ.Env()
settings.configure(
    DEBUG=False,
    SECRET_KEY="stack-floor-bench-only-" + "x" * 40,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    USE_TZ=True,
    TIME_ZONE="UTC",
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ]
    if has("middleware")
    else [],
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.sessions",
        "django.contrib.messages",
        "rest_framework",
    ],
    DATABASES={"default": {**_env.db_url_config(os.environ["DATABASE_URL"]), "CONN_MAX_AGE": 60}},
    CACHES={"default": _env.cache_url_config(os.environ["CACHE_URL"])},
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "DEFAULT_THROTTLE_CLASSES": [],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
        "UNAUTHENTICATED_USER": None,
    },
)
django.setup()

from django.core.cache import cache  # noqa: E402 (after settings)
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection, models  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework import exceptions, serializers  # noqa: E402
from rest_framework.authentication import BaseAuthentication  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.throttling import BaseThrottle  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

FIELDS = ("id", "user_id", "exercise_id", "correct", "created_at", "updated_at")
SELECT = f"SELECT {', '.join(FIELDS)} FROM scores WHERE id = %s"
CONSTANT = {
    "id": 1,
    "user_id": 1,
    "exercise_id": 1,
    "correct": True,
    "created_at": "2026-11-30T12:00:00Z",
    "updated_at": "2026-11-30T12:00:00Z",
}


class Score(models.Model):
    user_id = models.IntegerField()
    exercise_id = models.IntegerField()
    correct = models.BooleanField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        app_label = "auth"  # an installed app's label; the table is the harness's
        db_table = "scores"
        managed = False

    def __str__(self) -> str:
        return f"score {self.pk}"


class ScoreSerializer(serializers.ModelSerializer):
    class Meta:
        model = Score
        fields = list(FIELDS)


class Caller:
    is_authenticated = True

    def __init__(self, pk: int) -> None:
        self.pk = pk


# Every token of the load, known before the first request (the upper bound of a verdict cache).
VERDICTS = {f"u{n}": n for n in range(1, USERS + 1)}


class Bearer(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Caller, str]:
        token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")[2]
        user_id = VERDICTS.get(token)
        if user_id is None:
            raise exceptions.AuthenticationFailed()
        return Caller(user_id), token


class RatePerCaller(BaseThrottle):
    """A fixed-window counter per caller in the shared cache (6,000 a minute)."""

    def allow_request(self, request: Any, view: Any) -> bool:
        key = f"floor:{request.user.pk}:{int(time.time() // 60)}"
        try:
            count = cache.incr(key)
        except ValueError:
            cache.add(key, 0, 61)
            count = cache.incr(key)
        return bool(count <= 6000)


log = logging.getLogger("floor.request")
_handler = logging.StreamHandler(sys.stderr)
log.addHandler(_handler)
log.setLevel(logging.INFO)
log.propagate = False


class ScoreView(APIView):
    authentication_classes = [Bearer] if has("verdicts") else []
    throttle_classes = [RatePerCaller] if has("throttle") else []

    def get(self, request: Request, pk: int) -> Response:
        started = time.perf_counter()
        data: dict[str, Any]
        if RANK == 0:
            data = CONSTANT
        elif ORM:
            data = ScoreSerializer(Score.objects.get(pk=pk)).data
        else:
            with connection.cursor() as cursor:
                cursor.execute(SELECT, [pk])
                row = cursor.fetchone()
            if row is None:
                raise exceptions.NotFound()
            data = dict(zip(FIELDS, row, strict=True))
        if has("verdicts") and data["user_id"] != request.user.pk:
            raise exceptions.NotFound()
        if has("log"):
            line = {
                "method": "GET",
                "path": request.path,
                "status": 200,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "user_id": request.user.pk,
            }
            log.info(orjson.dumps(line).decode())
        return Response(data)


urlpatterns = [path("scores/<int:pk>", ScoreView.as_view())]
application = get_wsgi_application()
