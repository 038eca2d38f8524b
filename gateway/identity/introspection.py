"""Opaque (non-JWT) access tokens, checked at the issuer's RFC 7662 introspection endpoint.

The endpoint comes from the OpenID discovery document, else from RFC 8414 metadata. The
gateway authenticates with client credentials (HTTP Basic). An answer counts only when it is
`active`, unexpired, and names this issuer and audience where it has `iss` and `aud`. Callers
of one token share one request in flight (single-flight); a result is reused until the token
expires and never longer than `introspection_cache_max_s` (the verifier's cache keeps it). An
IdP that cannot be asked is a 503 for the caller, not a 401: the token may well be good.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.config import IdentityConfig
from gateway.errors import GatewayError
from gateway.identity.claims import claim_at
from gateway.identity.jwks import JwksCache, allowed_url
from gateway.identity.jwt_check import identity_from
from gateway.identity.model import AuthError, Identity

log = logging.getLogger("gateway.identity")

INACTIVE = "token is not active (revoked, expired or unknown to the issuer)"


class IntrospectionUnavailable(GatewayError):
    """The IdP could not say whether the token is active: the caller may retry."""

    def __init__(self, issuer: str) -> None:
        super().__init__(
            503,
            "introspection_unavailable",
            f"the identity provider {issuer!r} cannot check this token right now; try again",
        )


class Introspector:
    """One issuer's introspection endpoint, with its client credentials."""

    def __init__(self, config: IdentityConfig, jwks: JwksCache) -> None:
        self.config = config
        self.jwks = jwks  # its HTTP session and the discovery document it fetched
        self.endpoint: str | None = None
        secret_env = config.introspection_client_secret_env or ""
        self.auth = aiohttp.BasicAuth(
            config.introspection_client_id or "", os.environ.get(secret_env, "")
        )
        self.inflight: dict[bytes, asyncio.Future[Identity]] = {}

    async def verify(self, token: str) -> Identity:
        """One request per token however many callers present it at once."""
        digest = hashlib.sha256(token.encode()).digest()
        pending = self.inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Identity] = asyncio.get_running_loop().create_future()
        self.inflight[digest] = future
        try:
            identity = await self._introspect(token)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: no waiter is not an error
            raise
        else:
            future.set_result(identity)
            return identity
        finally:
            del self.inflight[digest]

    async def _introspect(self, token: str) -> Identity:
        try:
            endpoint = self.endpoint or await self._discover()
            assert self.jwks.session is not None
            async with self.jwks.session.post(
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self.auth,
                headers={"accept": "application/json"},
            ) as resp:
                if resp.status != 200:
                    raise ValueError(f"introspection answered {resp.status}")
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("introspection at %s failed: %s", self.config.name, exc)
            raise IntrospectionUnavailable(self.config.name) from None
        if not isinstance(answer, dict):
            log.warning("introspection at %s did not return a JSON object", self.config.name)
            raise IntrospectionUnavailable(self.config.name)
        return self._identity(answer)

    def _identity(self, answer: dict[str, Any]) -> Identity:
        """The caller an active answer describes; anything else is a 401."""
        if answer.get("active") is not True:
            raise AuthError(INACTIVE)
        now = time.time()
        exp = answer.get("exp")
        if exp is not None and (
            not isinstance(exp, int | float) or exp + self.config.leeway_s <= now
        ):
            raise AuthError(INACTIVE)
        iss = answer.get("iss")
        if iss is not None and iss != self.config.issuer:
            raise AuthError("wrong issuer")
        aud = answer.get("aud")
        if aud is not None and self.config.audience not in (
            aud if isinstance(aud, list) else [aud]
        ):
            raise AuthError("wrong audience")
        claims = dict(answer)
        subject_claim = self.config.subject_claim
        if isinstance(subject_claim, str) and claim_at(claims, subject_claim) is None:
            # RFC 7662 makes `sub` optional; `username` is the token owner's readable name.
            claims[subject_claim] = answer.get("username")
        until = now + self.config.introspection_cache_max_s
        expires_at = min(float(exp), until) if exp is not None else until
        return identity_from(self.config, claims, expires_at, None)

    async def _discover(self) -> str:
        """`introspection_endpoint` from OpenID discovery, else from RFC 8414 metadata."""
        endpoint = self.jwks.metadata.get("introspection_endpoint")
        if endpoint is None:
            for url in _rfc8414_urls(self.config.issuer):
                try:
                    document = await self.jwks.get_json(url)
                except (aiohttp.ClientError, ValueError):
                    continue
                if document.get("issuer") == self.config.issuer:
                    endpoint = document.get("introspection_endpoint")
                    break
        if not isinstance(endpoint, str) or not allowed_url(endpoint):
            raise ValueError("the issuer publishes no usable https introspection_endpoint")
        self.endpoint = endpoint
        return endpoint


def _rfc8414_urls(issuer: str) -> list[str]:
    """RFC 8414's well-known URL (inserted before the issuer's path), then the appended form
    many servers use as well."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    inserted = f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{path}"
    appended = issuer.rstrip("/") + "/.well-known/oauth-authorization-server"
    return [inserted] if inserted == appended else [inserted, appended]
