"""The demo issuer's sign-in: an authorization endpoint with a login page, and a token endpoint.

Enough OpenID Connect for the approvals page to sign approvers in (authorization code with
PKCE S256, `state` and `nonce` carried through). NOT a real login: the page offers the demo
identities with one button each and asks for no password, any client id is accepted (it
becomes the ID token's audience), and redirect URIs must point at loopback, so codes never
leave this machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from gateway.config import is_loopback

# Who can sign in at the demo login page, with their groups (as in the walk-through).
DEMO_USERS = {
    "rita@example.com": ["risk-officers"],
    "alice@example.com": ["analysts", "risk-officers"],
    "ivan@example.com": ["interns"],
}
CODE_TTL_S = 120
ID_TOKEN_TTL_S = 3600
PARAMS = (
    "client_id",
    "redirect_uri",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "scope",
)
Mint = Callable[..., str]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code stands for until it is redeemed (once)."""

    subject: str
    client_id: str
    redirect_uri: str
    nonce: str | None
    challenge: str
    expires_at: float


class DemoSignIn:
    """`GET/POST /authorize` and `POST /token`, minting with the issuer's `mint`."""

    def __init__(self, mint: Mint) -> None:
        self.mint = mint
        self.grants: dict[str, Grant] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/authorize", self._login_page)
        app.router.add_post("/authorize", self._signed_in)
        app.router.add_post("/token", self._token)

    async def _login_page(self, request: web.Request) -> web.Response:
        query = request.query
        problem = _check_request(query.get("response_type"), query)
        if problem:
            return _plain(400, problem)
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(query.get(name, ""))}">'
            for name in PARAMS
        )
        buttons = "".join(
            f'<p><button name="user" value="{html.escape(user)}" id="as-{user.split("@")[0]}">'
            f"Sign in as {html.escape(user)}</button> ({html.escape(', '.join(groups))})</p>"
            for user, groups in DEMO_USERS.items()
        )
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Sign in: demo issuer</title></head><body>"
            "<h1>Demo issuer: sign in</h1><p>A demo identity provider: pick who you are "
            "(no password).</p>"
            f'<form method="post" action="/authorize">{hidden}{buttons}</form></body></html>'
        )
        return web.Response(
            text=page,
            content_type="text/html",
            # No form-action: the form's answer redirects to the client's (loopback) callback.
            headers={"content-security-policy": "default-src 'none'; frame-ancestors 'none'"},
        )

    async def _signed_in(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {name: str(form.get(name, "")) for name in (*PARAMS, "user")}
        problem = _check_request("code", fields)
        if problem or fields["user"] not in DEMO_USERS:
            return _plain(400, problem or "unknown demo user")
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(
            fields["user"],
            fields["client_id"],
            fields["redirect_uri"],
            fields["nonce"] or None,
            fields["code_challenge"],
            time.time() + CODE_TTL_S,
        )
        answer = urlencode({"code": code, "state": fields["state"]})
        separator = "&" if "?" in fields["redirect_uri"] else "?"
        raise web.HTTPFound(f"{fields['redirect_uri']}{separator}{answer}")

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type")
        grant = self.grants.pop(str(form.get("code", "")), None)  # a code works once
        client_id = str(form.get("client_id", "")) or _basic_user(request)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if (
            grant is None
            or grant.expires_at < time.time()
            or grant.client_id != client_id
            or grant.redirect_uri != form.get("redirect_uri")
            or not hmac.compare_digest(challenge.rstrip(b"=").decode(), grant.challenge)
        ):
            return _oauth_error("invalid_grant")
        claims = {"nonce": grant.nonce} if grant.nonce else {}
        groups = DEMO_USERS[grant.subject]
        id_token = self.mint(
            grant.subject, groups, audience=client_id, ttl_s=ID_TOKEN_TTL_S, **claims
        )
        access_token = self.mint(grant.subject, groups, ttl_s=ID_TOKEN_TTL_S)
        return web.json_response(
            {
                "id_token": id_token,
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": ID_TOKEN_TTL_S,
            },
            headers={"cache-control": "no-store"},
        )


def _check_request(response_type: str | None, params: object) -> str | None:
    """Why an authorization request cannot go on, or None."""
    get = params.get  # type: ignore[attr-defined]
    if response_type != "code":
        return "response_type must be code"
    if not get("client_id"):
        return "client_id is required"
    redirect = urlsplit(get("redirect_uri", ""))
    if redirect.scheme not in ("http", "https") or not is_loopback(redirect.hostname or ""):
        return "redirect_uri must be an http(s) URL on loopback (this is a demo issuer)"
    if not get("code_challenge"):
        return "PKCE is required: send code_challenge with code_challenge_method=S256"
    if get("code_challenge_method", "S256") != "S256":
        return "code_challenge_method must be S256"
    return None


def _basic_user(request: web.Request) -> str:
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return ""
    try:
        return base64.b64decode(auth[6:]).decode().partition(":")[0]
    except ValueError:
        return ""


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def _oauth_error(error: str) -> web.Response:
    return web.json_response({"error": error}, status=400)
