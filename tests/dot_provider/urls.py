"""DOT's endpoints under /o/ (token, authorize, introspect, OIDC discovery, ...), RFC 8414
metadata at the root as well, the login page, and the /_test/ control API."""

from django.contrib.auth.views import LoginView
from django.urls import include, path
from oauth2_provider import urls as dot_urls

from dot_provider import control, oidc

urlpatterns = [
    path("o/introspect/", oidc.GroupsIntrospectView.as_view()),  # before DOT's own
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("", include((dot_urls.metadata_urlpatterns, "metadata"))),
    path("accounts/login/", LoginView.as_view()),
    path("_test/clients", control.clients),
    path("_test/users", control.users),
    path("_test/faults", control.faults),
    path("_test/stats", control.stats),
    path("_test/reset", control.reset),
]
