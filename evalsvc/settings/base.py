"""Settings shared by every environment.

Every value that differs between deployments is read from the environment through one
``environ.Env``; the per-environment modules only choose defaults and demand what production
must not guess (``SECRET_KEY``, ``DATABASE_URL``, ``ALLOWED_HOSTS``).
"""

import sys
from datetime import timedelta
from pathlib import Path

import environ
import orjson
from csp.constants import NONCE, NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()


def require(name: str) -> str:
    """Return the environment variable ``name`` or stop start-up with one line naming it."""
    value = env.str(name, default="")
    if not value:
        sys.stderr.write(f"evalsvc: the environment variable {name} is required and is not set\n")
        raise SystemExit(1)
    return value


# --- Core -----------------------------------------------------------------------------------
DEBUG = False
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
ROOT_URLCONF = "evalsvc.urls"
WSGI_APPLICATION = "evalsvc.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TEST_RUNNER = "evalsvc.test_runner.PytestRunner"  # `manage.py test` runs the pytest suite
APPEND_SLASH = False  # every route matches with and without the slash: never redirect a POST

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "csp",
    "rest_framework",
    "rest_framework.authtoken",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "scores",
]

MIDDLEWARE = [
    "scores.telemetry.RequestLogMiddleware",  # first: sees every response, sets X-Request-ID
    "django.middleware.security.SecurityMiddleware",
    "scores.middleware.PageSecurityPolicyMiddleware",  # django-csp's, on the HTML pages
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "scores.middleware.JSONErrorMiddleware",
    "scores.database.DatabaseGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires: the lockout response
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
SQLITE_URL = f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
DATABASE_STATEMENT_TIMEOUT = env.float("DATABASE_STATEMENT_TIMEOUT", default=5.0)  # seconds
DATABASE_CONNECT_TIMEOUT = env.float("DATABASE_CONNECT_TIMEOUT", default=3.0)  # seconds


def database(url: str) -> dict[str, object]:
    """A ``DATABASES`` entry from a database URL, with the options every environment wants."""
    config: dict[str, object] = env.db_url_config(url)
    if config["ENGINE"] == "django.db.backends.postgresql":
        config["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
        # A kept connection is checked (Django runs SELECT 1) before a request reuses it: one the
        # server closed while idle is replaced instead of failing the request.
        config["CONN_HEALTH_CHECKS"] = True
        # Behind PgBouncer in transaction mode server-side cursors do not survive; the CSV
        # export then reads in keyset batches instead.
        config["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
            "DISABLE_SERVER_SIDE_CURSORS", default=False
        )
        # Deadlines (scores.database): a statement or a lock wait, and a connection attempt.
        statement_ms = int(DATABASE_STATEMENT_TIMEOUT * 1000)
        options: dict[str, object] = {
            **config.get("OPTIONS", {}),  # type: ignore[dict-item]
            "connect_timeout": max(1, round(DATABASE_CONNECT_TIMEOUT)),
            "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
        }
        # Parameters bound by the server and statements prepared after their fifth use on a
        # connection (psycopg's default threshold): a repeated one-row read skips PostgreSQL's
        # parse and plan. Off behind a PgBouncer in transaction mode older than 1.21 (from
        # 1.21, its max_prepared_statements keeps prepared statements working).
        if env.bool("PREPARED_STATEMENTS", default=True):
            options.update(server_side_binding=True, prepare_threshold=5)
        config["OPTIONS"] = options
    return config


def replica_databases() -> dict[str, dict[str, object]]:
    """The ``replica`` alias and its router when DATABASE_REPLICA_URL is set (see
    scores/replicas.py), else nothing."""
    url = env.str("DATABASE_REPLICA_URL", default="")
    if not url:
        return {}
    return {"replica": {**database(url), "TEST": {"MIRROR": "default"}}}


def listen_databases() -> dict[str, dict[str, object]]:
    """The ``listen`` alias when DATABASE_LISTEN_URL is set, else nothing: a direct connection
    to the primary for the events feed's LISTEN (scores.events), for when DATABASE_URL goes
    through a PgBouncer in transaction mode, which does not carry notifications to a listener."""
    url = env.str("DATABASE_LISTEN_URL", default="")
    if not url:
        return {}
    return {"listen": {**database(url), "TEST": {"MIRROR": "default"}}}


REPLICA_STICKY_SECONDS = env.int("REPLICA_STICKY_SECONDS", default=5)
if env.str("DATABASE_REPLICA_URL", default=""):
    DATABASE_ROUTERS = ["scores.replicas.PrimaryReplicaRouter"]
    MIDDLEWARE.insert(
        MIDDLEWARE.index("scores.middleware.JSONErrorMiddleware") + 1,
        "scores.replicas.ReadYourWritesMiddleware",
    )


# --- Internationalisation and time ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the installed apps too, so /docs and the admin work even where nobody ran
# collectstatic (a bare `gunicorn` start); collectstatic only adds compressed copies.
WHITENOISE_USE_FINDERS = True

# --- Cache (token verdicts, throttling) -----------------------------------------------------
# CACHE_URL: locmem:// (the default: per process) or a Redis URL (django-redis, shared by every
# worker and instance). Redis is an accelerator, not a dependency: each call has REDIS_TIMEOUT,
# and while Redis fails the cache falls back to this process's memory (scores.resilient_cache).
REDIS_TIMEOUT = env.float("REDIS_TIMEOUT", default=0.25)  # seconds per Redis call
LOCAL_CACHE = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}


def caches(url: str) -> dict[str, dict[str, object]]:
    """``CACHES`` for a cache URL (``locmem://`` is the spec's spelling of a per-process one)."""
    if url.split("://", 1)[0] == "locmem":
        return {"default": {**LOCAL_CACHE, "LOCATION": url.split("://", 1)[1]}}
    shared: dict[str, object] = env.cache_url_config(url)
    if shared["BACKEND"] != "django_redis.cache.RedisCache":
        return {"default": shared}
    shared["OPTIONS"] = {
        **shared.get("OPTIONS", {}),  # type: ignore[dict-item]
        "SOCKET_CONNECT_TIMEOUT": REDIS_TIMEOUT,
        "SOCKET_TIMEOUT": REDIS_TIMEOUT,
    }
    return {
        "default": {
            "BACKEND": "scores.resilient_cache.FallbackCache",
            "OPTIONS": {"SHARED": "redis", "LOCAL": "local"},
        },
        "redis": shared,
        "local": {**LOCAL_CACHE, "LOCATION": "evalsvc-fallback"},
    }


CACHES = caches(env.str("CACHE_URL", default="locmem://"))

# --- Security -------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "scores.views.csrf_failure"  # JSON outside the admin
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_BODY_BYTES", default=1024 * 1024)
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])

# --- Content Security Policy (django-csp) ---------------------------------------------------
# The HTML pages (the admin, /docs, /redoc) load only what the service serves: scripts and
# style sheets from its own origin, inline styles only with the answer's nonce (the admin's
# statistics page, the Swagger page), images from it or data: URIs (Swagger UI's icons), calls
# to it (the schema, Swagger's "Try it out"), forms posted to it. /redoc adds what Redoc needs
# (scores/views.py). Set on text/html answers only (scores.middleware): the API's JSON is
# never rendered.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [NONE],
        "script-src": [SELF],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
    },
}

# --- Admin login lockout (django-axes; see SECURITY.md) -------------------------------------
# ADMIN_LOGIN_FAILURE_LIMIT failed logins from one client address lock that address out of the
# login (429, even with the right password) for ADMIN_LOGIN_LOCKOUT_SECONDS. Attempts are kept
# in the database, so every worker and instance agrees.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out client
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("ADMIN_LOGIN_LOCKOUT_SECONDS", default=900))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_CLIENT_IP_CALLABLE = "scores.client_address.client_address"
AXES_LOCKOUT_CALLABLE = "scores.client_address.lockout_response"  # 429 + Retry-After, no CORS
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no start-up banner; lockouts are still logged, addresses masked

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "scores.authentication.UsersServiceAuthentication",
        "scores.authentication.ServiceTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "scores.authentication.RejectUnknownAuthorization",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "scores.permissions.IsScoresCaller",
        "scores.permissions.IsPrivilegedForAction",
        "scores.permissions.MayWriteScores",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "drf_orjson_renderer.renderers.ORJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "ORJSON_RENDERER_OPTIONS": (orjson.OPT_UTC_Z,),
    "COERCE_DECIMAL_TO_STRING": False,
    "DEFAULT_PARSER_CLASSES": ["scores.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "scores.negotiation.JSONFallbackNegotiation",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": [
        "scores.throttling.UserRateThrottle",
        "scores.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("THROTTLE_RATE_USER", default="6000/min"),
        "anon": env.str("THROTTLE_RATE_ANON", default="600/min"),
    },
    "EXCEPTION_HANDLER": "scores.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
    # Proxies in front that append to X-Forwarded-For (0: the connection's own address). DRF's
    # default (None) would take the whole header, which a client can vary to dodge throttles.
    "NUM_PROXIES": env.int("TRUSTED_PROXY_COUNT", default=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "evalsvc",
    "DESCRIPTION": "Scores of a coding-exercise platform: one current score per (user, exercise).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # This API's PATCHes are not partial updates: the upsert's body is the create's (its
    # required fields included) and a score's PATCH is its PUT.
    "COMPONENT_SPLIT_PATCH": False,
    # Operation ids and default tags from the whole path: scores_list, scores_user_retrieve...
    "SCHEMA_PATH_PREFIX": "",
    "TAGS": [
        {"name": "scores", "description": "Scores, their attempt logs, summaries and statistics."},
        {"name": "events", "description": "The feed of score changes (privileged callers)."},
        {
            "name": "webhooks",
            "description": "Subscriptions that have score changes POSTed to a URL as they "
            "happen, signed (privileged callers).",
        },
        {
            "name": "privacy",
            "description": "Everything stored about one user: its export (the user or "
            "privileged callers) and its erasure (privileged callers).",
        },
        {"name": "probes", "description": "Liveness, readiness and the old service's ping."},
    ],
    "SERVE_AUTHENTICATION": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "scores.schema.strip_trailing_slashes",
        "scores.schema.declare_response_headers",
    ],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # The event types: one enum for the feed's events and the webhooks' event_types.
    "ENUM_NAME_OVERRIDES": {"EventTypeEnum": "scores.models.ScoreEvent.TYPES"},
    "AUTHENTICATION_WHITELIST": [
        "scores.authentication.UsersServiceAuthentication",
        "scores.authentication.ServiceTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}

# --- evalsvc --------------------------------------------------------------------------------
USERS_SERVICE_URL = env.str("USERS_SERVICE_URL", default="")
USERS_SERVICE_TIMEOUT = env.float("USERS_SERVICE_TIMEOUT", default=2.0)
USERS_SERVICE_CACHE_SECONDS = env.int("USERS_SERVICE_CACHE_SECONDS", default=60)
USERS_SERVICE_NEGATIVE_CACHE_SECONDS = env.int("USERS_SERVICE_NEGATIVE_CACHE_SECONDS", default=5)
# At most this many callers of the server wait on the users service at once (the others get a
# 503 at once), so that a slow users service never takes every worker: one fewer than the
# workers. The processes share slot files in CALL_SLOTS_DIR (bin/serve's run directory).
USERS_SERVICE_MAX_WAITING = env.int(
    "USERS_SERVICE_MAX_WAITING", default=max(1, env.int("WEB_CONCURRENCY", default=3) - 1)
)
CALL_SLOTS_DIR = env.str("CALL_SLOTS_DIR", default="") or None
SCORES_SELF_REPORT = env.bool("SCORES_SELF_REPORT", default=True)
SCORE_POLICY = env.str("SCORE_POLICY", default="latest")
EVENTS_RETENTION_DAYS = env.int("EVENTS_RETENTION_DAYS", default=7)
if SCORE_POLICY not in ("latest", "best"):
    sys.stderr.write(f"evalsvc: SCORE_POLICY must be latest or best, not {SCORE_POLICY!r}\n")
    raise SystemExit(1)
RETRY_AFTER_SECONDS = env.int("RETRY_AFTER_SECONDS", default=5)

# --- Webhooks (scores.webhooks; the worker: manage.py deliver_events) ------------------------
# Subscriber URLs on loopback, private, link-local and other non-public addresses are refused
# unless WEBHOOK_ALLOW_PRIVATE is true (a subscriber on the same private network).
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=False)
WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", default=10.0)  # seconds for one delivery
# Seconds before each retry of a failed delivery (each +-20 %); after the last, it is failed.
WEBHOOK_RETRY_DELAYS = env.list(
    "WEBHOOK_RETRY_DELAYS", cast=float, default=[5, 30, 120, 600, 3600, 21600]
)
# The worker looks for new events this often when no NOTIFY wakes it (seconds).
WEBHOOK_POLL_SECONDS = env.float("WEBHOOK_POLL_SECONDS", default=1.0)
WEBHOOK_METRICS_PORT = env.int("WEBHOOK_METRICS_PORT", default=0)  # the worker's /metrics; 0: none

# --- Logging and metrics --------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")


def logging_config(log_format: str) -> dict[str, object]:
    """Everything to stderr, as JSON lines (``json``) or as plain text (``plain``), each message
    once; one line per request, from ``evalsvc.request`` (scores.telemetry.RequestLogMiddleware),
    under gunicorn and runserver alike."""
    formatters = {
        "json": {"()": "evalsvc.logs.JSONFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    }
    if log_format not in formatters:
        sys.stderr.write(f"evalsvc: LOG_FORMAT must be json or plain, not {log_format!r}\n")
        raise SystemExit(1)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatters[log_format]},
        "filters": {
            "no_runserver_requests": {"()": "evalsvc.logs.WithoutRunserverRequestLines"},
            "not_unavailable": {"()": "evalsvc.logs.NotUnavailable"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "main"}},
        "root": {"handlers": ["console"], "level": LOG_LEVEL},
        "loggers": {
            # Django's own handlers (its console under DEBUG) would print each of its messages
            # a second time, besides ours.
            "django": {"handlers": [], "level": LOG_LEVEL},
            # 4xx/5xx are in the request log already; django.request would repeat every one (a
            # 500 keeps its traceback there).
            "django.request": {"level": "ERROR", "filters": ["not_unavailable"]},
            # runserver's line per request, too (its other messages stay).
            "django.server": {
                "handlers": ["console"],
                "filters": ["no_runserver_requests"],
                "level": LOG_LEVEL,
                "propagate": False,
            },
        },
    }


LOGGING = logging_config(env.str("LOG_FORMAT", default="plain"))

# /metrics (Prometheus): with METRICS_TOKEN set, only for "Authorization: Bearer <token>";
# without it, open where METRICS_OPEN is true (not in production: see production.py).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_OPEN = env.bool("METRICS_OPEN", default=True)
