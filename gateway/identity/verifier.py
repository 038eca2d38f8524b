"""The one entry point for bearer tokens: pick the issuer, verify, remember until expiry.

A JWT's `iss` selects the issuer among those configured, and only that issuer's keys may
verify it, so one IdP can never vouch for another's subjects. A token that is not a JWT goes
to the issuers with `introspection = true`. Verified tokens are cached by
their SHA-256 until they expire, so the hot path verifies a signature once per token, not once
per request; a key an issuer withdraws takes every cached token it signed with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import jwt

from gateway.config import IdentityConfig
from gateway.identity.introspection import IntrospectionUnavailable, Introspector
from gateway.identity.jwks import JwksCache
from gateway.identity.jwt_check import JwtVerifier
from gateway.identity.model import AuthError, Identity

TOKEN_CACHE_MAX = 50_000


class Issuer:
    """One configured issuer: its keys and how its tokens are checked."""

    def __init__(self, config: IdentityConfig, on_refresh: Callable[[str], None]) -> None:
        self.config = config
        self.jwks = JwksCache(config, on_refresh)
        self.jwt = JwtVerifier(config, self.jwks)
        self.introspector = Introspector(config, self.jwks) if config.introspection else None


class TokenVerifier:
    """Verifies bearer tokens from any configured issuer."""

    def __init__(
        self,
        configs: tuple[IdentityConfig, ...],
        on_refresh: Callable[[str], None] = lambda result: None,
    ) -> None:
        self.issuers = tuple(Issuer(config, on_refresh) for config in configs)
        self.by_iss = {issuer.config.issuer: issuer for issuer in self.issuers}
        self.introspectors = [i.introspector for i in self.issuers if i.introspector is not None]
        self.cache: dict[bytes, tuple[float, Identity]] = {}  # digest: (valid until, identity)
        for issuer in self.issuers:
            issuer.jwks.listeners.append(self._forget_keys)

    async def start(self) -> None:
        await asyncio.gather(*(issuer.jwks.start() for issuer in self.issuers))

    async def close(self) -> None:
        await asyncio.gather(*(issuer.jwks.close() for issuer in self.issuers))

    @property
    def ready(self) -> bool:
        """Every issuer's keys are loaded: none of its callers is refused for want of them."""
        return all(issuer.jwks.ready for issuer in self.issuers)

    async def verify(self, token: str) -> Identity:
        digest = hashlib.sha256(token.encode()).digest()
        cached = self.cache.get(digest)
        if cached is not None:
            if cached[0] > time.time():
                return cached[1]
            del self.cache[digest]
        identity, leeway_s = await self._verify(token)
        self._remember(digest, identity.expires_at + leeway_s, identity)
        return identity

    async def _verify(self, token: str) -> tuple[Identity, float]:
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return await self._introspect(token), 0.0  # cached no longer than the IdP said
        issuer = self._issuer_of(unverified["payload"])
        identity = await issuer.jwt.verify(token, unverified["header"])
        return identity, issuer.config.leeway_s

    async def _introspect(self, token: str) -> Identity:
        """An opaque token: the issuers that introspect are asked in config order."""
        if not self.introspectors:
            raise AuthError("malformed token")
        refusal: AuthError | None = None
        unavailable: IntrospectionUnavailable | None = None
        for introspector in self.introspectors:
            try:
                return await introspector.verify(token)
            except AuthError as exc:
                refusal = exc
            except IntrospectionUnavailable as exc:
                unavailable = exc  # maybe the token is this issuer's: never a 401 for it
        if unavailable is not None:
            raise unavailable
        assert refusal is not None
        raise refusal

    def _issuer_of(self, claims: dict[str, Any]) -> Issuer:
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise AuthError("token has no 'iss' claim")
        issuer = self.by_iss.get(iss)
        if issuer is None:
            raise AuthError("unknown issuer (not one this gateway trusts)")
        return issuer

    def _remember(self, digest: bytes, valid_until: float, identity: Identity) -> None:
        if len(self.cache) >= TOKEN_CACHE_MAX:
            now = time.time()
            for k in [k for k, (until, _) in self.cache.items() if until < now]:
                del self.cache[k]
            while len(self.cache) >= TOKEN_CACHE_MAX:
                del self.cache[next(iter(self.cache))]
        self.cache[digest] = (valid_until, identity)

    def _forget_keys(self, removed: set[bytes]) -> None:
        """A key an issuer withdrew no longer vouches for tokens we cached."""
        for k in [k for k, (_, identity) in self.cache.items() if identity.key in removed]:
            del self.cache[k]
