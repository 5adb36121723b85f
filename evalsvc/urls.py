"""Top-level routes: the scores API, health probes, schema/docs, admin; JSON 404 for the rest."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from scores.views import route_not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("admin", RedirectView.as_view(url="/admin/")),
    path("", include("scores.urls")),
    re_path(r"^", route_not_found),  # last: any other path is a JSON 404, whatever the method
]

handler404 = "scores.views.route_not_found"
handler500 = "scores.views.server_error"
