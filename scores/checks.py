"""System checks of the project's own middleware layout (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

# What the admin, django-axes and Django's CSRF deployment check look for in MIDDLEWARE, which
# here is in SITE_MIDDLEWARE (settings SILENCED_SYSTEM_CHECKS): the checks below take their place.
SITE_REQUIRED = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "axes.middleware.AxesMiddleware",
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
    elif not (
        site.index(SITE_REQUIRED[0]) < site.index(SITE_REQUIRED[2])
        and site[-1] == SITE_REQUIRED[-1]
    ):
        errors.append(
            Error(
                "SITE_MIDDLEWARE must put SessionMiddleware before AuthenticationMiddleware "
                "and AxesMiddleware last.",
                id="scores.E003",
            )
        )
    return errors
