"""DOT's endpoints under /o/ (token, authorize, introspect, ...) and the /_test/ control API."""

from django.urls import include, path

from dot_provider import control

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("_test/clients", control.clients),
    path("_test/users", control.users),
    path("_test/faults", control.faults),
    path("_test/stats", control.stats),
    path("_test/reset", control.reset),
]
