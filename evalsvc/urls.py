"""Top-level routes: the scores API, health probes, schema/docs, admin, Prometheus metrics; JSON
404 for the rest."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from scores.telemetry import metrics_view
from scores.views import route_not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("admin", RedirectView.as_view(url="/admin/")),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
    path("", include("scores.urls")),
    re_path(r"^", route_not_found),  # last: any other path is a JSON 404, whatever the method
]

handler400 = "scores.views.bad_request"
handler404 = "scores.views.route_not_found"
handler500 = "scores.views.server_error"
