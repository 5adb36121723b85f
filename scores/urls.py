"""Routes of the scores API. Every route matches with and without a trailing slash."""

from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import Route, SimpleRouter

from scores import views, views_privacy, views_webhooks

OPTIONAL_SLASH = "/?"


class ScoresRouter(SimpleRouter):
    """SimpleRouter with an optional trailing slash and the collection-level ``PATCH`` upsert."""

    routes = [
        route._replace(mapping={**route.mapping, "patch": "upsert"})
        if isinstance(route, Route) and not route.detail
        else route
        for route in SimpleRouter.routes
    ]

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = OPTIONAL_SLASH


router = ScoresRouter()
router.register("scores", views.ScoreViewSet, basename="score")
router.register("webhooks", views_webhooks.WebhookViewSet, basename="webhook")


def optional_slash(route: str) -> str:
    return rf"^{route}{OPTIONAL_SLASH}$"


urlpatterns = [
    re_path(optional_slash("scores/ping"), views.PingView.as_view(), name="ping"),
    *router.urls,
    re_path(optional_slash("events"), views.EventsView.as_view(), name="events"),
    re_path(
        optional_slash(r"privacy/users/(?P<user_id>[^/]+)"),
        views_privacy.PrivacyUserView.as_view(),
        name="privacy-user",
    ),
    re_path(optional_slash("health"), views.HealthView.as_view(), name="health"),
    re_path(optional_slash("ready"), views.ReadyView.as_view(), name="ready"),
    re_path(optional_slash("schema"), views.SchemaView.as_view(), name="schema"),
    re_path(optional_slash("docs"), views.SwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(optional_slash("redoc"), views.RedocView.as_view(url_name="schema"), name="redoc"),
]
