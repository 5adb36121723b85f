"""Production: nothing secret or deployment-specific has a default; start-up stops without it."""

from .base import *  # noqa: F403
from .base import database, env, listen_databases, logging_config, replica_databases, require

DEBUG = False
SECRET_KEY = require("SECRET_KEY")
DATABASES = {
    "default": database(require("DATABASE_URL")),
    **replica_databases(),
    **listen_databases(),
}
ALLOWED_HOSTS = [host.strip() for host in require("ALLOWED_HOSTS").split(",") if host.strip()]

# --- HTTPS (TLS is terminated by the proxy in front, which sets X-Forwarded-Proto) ---------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^health/?$", r"^ready/?$"]  # probes of the load balancer
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Operations -----------------------------------------------------------------------------
LOGGING = logging_config(env.str("LOG_FORMAT", default="json"))
METRICS_OPEN = env.bool("METRICS_OPEN", default=False)  # set METRICS_TOKEN, or open it on purpose
