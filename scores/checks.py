"""System checks of the project's own middleware layout (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

# What the admin, django-axes and Django's CSRF deployment check look for in MIDDLEWARE, which
# here is in SITE_MIDDLEWARE (settings SILENCED_SYSTEM_CHECKS): the checks below take their place.
SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"
AUTHENTICATION = "django.contrib.auth.middleware.AuthenticationMiddleware"
AXES = "axes.middleware.AxesMiddleware"
SITE_REQUIRED = [
    SESSIONS,
    "django.middleware.csrf.CsrfViewMiddleware",
    AUTHENTICATION,
    "django.contrib.messages.middleware.MessageMiddleware",
    AXES,
]


@register()
def site_middleware(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors = []
    if "scores.middleware.SiteMiddleware" not in settings.MIDDLEWARE:
        errors.append(
            Error("MIDDLEWARE must hold scores.middleware.SiteMiddleware.", id="scores.E001")
        )
    site = list(settings.SITE_MIDDLEWARE)
    missing = [path for path in SITE_REQUIRED if path not in site]
    if missing:
        errors.append(Error(f"SITE_MIDDLEWARE must hold {', '.join(missing)}.", id="scores.E002"))
    elif not (site.index(SESSIONS) < site.index(AUTHENTICATION) and site[-1] == AXES):
        errors.append(
            Error(
                "SITE_MIDDLEWARE must put SessionMiddleware before AuthenticationMiddleware "
                "and AxesMiddleware last.",
                id="scores.E003",
            )
        )
    return errors
