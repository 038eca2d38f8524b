"""Create the provider's clients, users and groups: the one place tests and extensions add them."""

from __future__ import annotations

from typing import Any

DEFAULT_TOKEN_LIFETIME_S = 3600
# Access-token lifetime per client id, for tests of expiry and refresh.
_lifetimes: dict[str, int] = {}


def token_lifetime(request: Any) -> int:
    """oauthlib's `expires_in` callable: the lifetime configured for the requesting client."""
    client = getattr(request, "client", None)
    return _lifetimes.get(getattr(client, "client_id", ""), DEFAULT_TOKEN_LIFETIME_S)


def create_group(name: str) -> Any:
    from django.contrib.auth.models import Group

    group, _ = Group.objects.get_or_create(name=name)
    return group


def create_user(username: str, password: str, groups: tuple[str, ...] | list[str] = ()) -> Any:
    """A user (replaced if it exists) in the named groups, created as needed."""
    from django.contrib.auth.models import User

    User.objects.filter(username=username).delete()
    user = User.objects.create_user(username=username, password=password)
    user.groups.set([create_group(g) for g in groups])
    return user


def create_client(
    client_id: str,
    client_secret: str,
    *,
    grant_type: str = "client-credentials",
    token_lifetime_s: int = DEFAULT_TOKEN_LIFETIME_S,
    confidential: bool = True,
    redirect_uris: str = "",
    name: str = "",
    skip_authorization: bool = False,
    algorithm: str = "",
) -> Any:
    """An OAuth2 client (replaced if it exists); `grant_type` is DOT's Application constant.

    `algorithm = "RS256"` gives it OIDC ID tokens; `skip_authorization` skips the consent page.
    """
    from oauth2_provider.models import Application

    Application.objects.filter(client_id=client_id).delete()
    app = Application.objects.create(
        client_id=client_id,
        client_secret=client_secret,
        name=name or client_id,
        client_type=Application.CLIENT_CONFIDENTIAL if confidential else Application.CLIENT_PUBLIC,
        authorization_grant_type=grant_type,
        redirect_uris=redirect_uris,
        skip_authorization=skip_authorization,
        algorithm=algorithm,
    )
    _lifetimes[client_id] = token_lifetime_s
    return app
