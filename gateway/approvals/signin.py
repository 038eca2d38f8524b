"""Approvers sign in with the IdP: authorization code with PKCE; the ID token is the session.

Nothing is kept on the gateway's side, so any worker or replica serves any step:
- `login` makes `state`, `nonce` and a PKCE verifier, keeps them in a short-lived HttpOnly
  cookie scoped to the callback path, and sends the browser to the IdP;
- `callback` checks `state` against that cookie, redeems the code with the verifier (and the
  client secret of a confidential client), verifies the ID token with the issuer's own keys
  (audience = the page's client id, `nonce` as sent), and sets the session cookie: the ID token
  itself, HttpOnly, SameSite=Lax, Secure under TLS or an https `public_url`, and no older than
  the token's `exp`;
- each call with the cookie verifies the ID token again (cached until it expires), so a session
  ends when its token does and an approver's groups are the token's;
- approve, deny and sign-out carry `x-csrf-token`, a digest of the session that only a page of
  this origin can read (from `GET approvals/session`); SameSite=Lax already keeps the cookie off
  cross-site POSTs, the digest covers browsers and proxies that do not.
The ID token's audience is the page's client id, not the gateway's, so the cookie's token is no
bearer token for the API: the session works on the approvals endpoints only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import replace
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode

import aiohttp
import jwt

from gateway.config import ApprovalsConfig, Config
from gateway.errors import GatewayError
from gateway.identity import AuthError, Identity, TokenVerifier
from gateway.identity.jwks import allowed_url
from gateway.identity.jwt_check import JwtVerifier, identity_from

SESSION_COOKIE = "gateway_approvals_session"
FLOW_COOKIE = "gateway_approvals_signin"
FLOW_TTL_S = 600  # a sign-in at the IdP's login page must finish within this
CALLBACK_PATH = "/_gateway/approvals/callback"
PAGE_PATH = "/_gateway/approvals"
SESSION_CACHE_MAX = 10_000

Headers = list[tuple[bytes, bytes]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def csrf_token(session: str) -> str:
    """What the page must echo in `x-csrf-token`: derived from the session, unreadable to
    other origins (the cookie is HttpOnly, the digest is served same-origin only)."""
    return _b64(hashlib.sha256(b"gateway approvals csrf\0" + session.encode()).digest())


def cookies(header: bytes | None) -> dict[str, str]:
    """The request's cookies; a header that does not parse counts as none."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header.decode("latin-1") if header else "")
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


class SignInFailed(GatewayError):
    def __init__(self, reason: str) -> None:
        super().__init__(401, "sign_in_failed", f"sign-in failed: {reason}; start again")


class SignIn:
    """The approvals page's OIDC client."""

    def __init__(self, config: Config, verifier: TokenVerifier) -> None:
        settings = config.approvals
        assert settings is not None and settings.client_id and settings.public_url
        issuer = next(i for i in verifier.issuers if i.config.name == settings.sign_in_issuer)
        self.issuer = issuer
        self.client_id = settings.client_id
        secret_env = settings.client_secret_env
        self.client_secret = os.environ.get(secret_env) if secret_env else None
        self.redirect_uri = settings.public_url + CALLBACK_PATH
        self.secure = config.server.tls or settings.public_url.startswith("https://")
        # The page's ID tokens: this issuer's keys and claims, the page's client id as audience.
        self.id_tokens = JwtVerifier(replace(issuer.config, audience=self.client_id), issuer.jwks)
        self.sessions: dict[bytes, tuple[float, Identity]] = {}

    # -- the flow --------------------------------------------------------------------------

    def login(self) -> Headers:
        """A redirect to the IdP's authorization endpoint, with the flow's secrets in a cookie."""
        endpoint = self._endpoint("authorization_endpoint")
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in endpoint else "?"
        flow = f"{state}.{nonce}.{verifier}"
        return [
            (b"location", f"{endpoint}{separator}{query}".encode()),
            self._cookie(FLOW_COOKIE, flow, FLOW_TTL_S, CALLBACK_PATH),
            (b"cache-control", b"no-store"),
        ]

    async def callback(self, query: str, cookie_header: bytes | None) -> Headers:
        """Check the IdP's answer, redeem the code, and open the session."""
        params = {k: v[0] for k, v in parse_qs(query).items()}
        flow = cookies(cookie_header).get(FLOW_COOKIE, "").split(".")
        if len(flow) != 3:
            raise SignInFailed("no sign-in in progress in this browser (or it took too long)")
        state, nonce, verifier = flow
        if "error" in params:
            raise SignInFailed(f"the identity provider answered {params['error'][:64]!r}")
        if not hmac.compare_digest(params.get("state", "").encode(), state.encode()):
            raise SignInFailed("state does not match (a forged or stale redirect)")
        if "iss" in params and params["iss"] != self.issuer.config.issuer:
            raise SignInFailed("the answer names another issuer (RFC 9207)")  # a mix-up
        code = params.get("code")
        if not code:
            raise SignInFailed("the identity provider sent no code")
        id_token = await self._redeem(code, verifier)
        claims = await self._claims(id_token)
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise SignInFailed("nonce does not match (a replayed ID token)")
        max_age = int(float(claims["exp"]) - time.time())
        if max_age <= 0:
            raise SignInFailed("the ID token has expired already")
        return [
            (b"location", PAGE_PATH.encode()),
            self._cookie(SESSION_COOKIE, id_token, max_age, PAGE_PATH),
            self._cookie(FLOW_COOKIE, "", 0, CALLBACK_PATH),
            (b"cache-control", b"no-store"),
        ]

    def logout(self) -> Headers:
        return [self._cookie(SESSION_COOKIE, "", 0, PAGE_PATH), (b"cache-control", b"no-store")]

    # -- the session -----------------------------------------------------------------------

    async def session(self, cookie_header: bytes | None) -> tuple[str, Identity] | None:
        """The signed-in approver (and their session token), or None without a session."""
        token = cookies(cookie_header).get(SESSION_COOKIE)
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        cached = self.sessions.get(digest)
        now = time.time()
        if cached is not None and cached[0] > now:
            return token, cached[1]
        claims = await self._claims(token)
        identity = identity_from(self.id_tokens.config, claims, float(claims["exp"]), None)
        if len(self.sessions) >= SESSION_CACHE_MAX:
            self.sessions = {k: v for k, v in self.sessions.items() if v[0] > now}
        self.sessions[digest] = (identity.expires_at, identity)
        return token, identity

    # -- talking to the IdP ----------------------------------------------------------------

    async def _claims(self, id_token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise AuthError("malformed session (sign in again)") from None
        claims, _ = await self.id_tokens.claims(id_token, header)
        return claims

    async def _redeem(self, code: str, verifier: str) -> str:
        """The ID token for a code (RFC 6749 4.1.3 with the PKCE verifier)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
            "client_id": self.client_id,
        }
        auth = aiohttp.BasicAuth(self.client_id, self.client_secret) if self.client_secret else None
        session = self.issuer.jwks.session
        assert session is not None
        try:
            async with session.post(self._endpoint("token_endpoint"), data=form, auth=auth) as resp:
                answer = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise GatewayError(
                503, "sign_in_unavailable", "the identity provider cannot be reached; try again"
            ) from None
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise SignInFailed(f"the code was not accepted ({str(error)[:64] or status})")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailed("the identity provider returned no ID token (scope openid?)")
        return id_token

    def _endpoint(self, name: str) -> str:
        url = self.issuer.jwks.metadata.get(name)
        if not isinstance(url, str) or not allowed_url(url):
            raise GatewayError(
                503, "sign_in_unavailable", f"the identity provider publishes no usable {name}"
            )
        return url

    def _cookie(self, name: str, value: str, max_age: int, path: str) -> tuple[bytes, bytes]:
        flags = f"; Max-Age={max_age}; Path={path}; HttpOnly; SameSite=Lax"
        return (b"set-cookie", f"{name}={value}{flags}{'; Secure' if self.secure else ''}".encode())


def sign_in_for(config: Config, verifier: TokenVerifier) -> SignIn | None:
    """The page's sign-in, when `[approvals] sign_in_issuer` is set."""
    settings: ApprovalsConfig | None = config.approvals
    if settings is None or settings.sign_in_issuer is None:
        return None
    return SignIn(config, verifier)
