"""Caller identity: OIDC bearer tokens verified against the issuer's JWKS.

Discovery and JWKS are fetched with aiohttp, never blocking the event loop; keys are cached and
refreshed periodically, and on an unknown `kid` or a signature no cached key verifies at most
once per `jwks_min_refresh_interval_s` (a flood of bogus tokens costs the IdP one request per
interval). A token without `kid` is checked against every key of the issuer that fits its
algorithm. When the IdP is unreachable the last good keys stay in force. Verified tokens are
cached by their SHA-256 until they expire, so the hot path verifies a signature once per token,
not once per request; a key the IdP withdraws takes every cached token it signed with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
import orjson

from gateway.config import IdentityConfig, is_loopback
from gateway.errors import GatewayError

log = logging.getLogger("gateway.identity")

TOKEN_CACHE_MAX = 50_000
# Which JWK key type can verify which JWS algorithm family: a key never serves another family.
KEY_TYPE_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A public key from the JWKS with what it may verify."""

    key: Any
    kty: str
    alg: str | None
    kid: str | None
    fingerprint: bytes  # names the key itself: kids may be absent or shared

    def fits(self, alg: str) -> bool:
        """Whether a token signed with `alg` may be checked with this key."""
        return self.kty == KEY_TYPE_FOR_ALG_PREFIX.get(alg[:2]) and self.alg in (None, alg)


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    groups: frozenset[str]
    expires_at: float
    key: bytes  # fingerprint of the key that verified the token


class AuthError(GatewayError):
    """401 with an RFC 6750 challenge; the reason names what failed, never the token."""

    def __init__(self, reason: str, *, invalid_token: bool = True) -> None:
        challenge = b'Bearer realm="gateway"'
        if invalid_token:
            challenge += b', error="invalid_token", error_description="' + reason.encode() + b'"'
        super().__init__(401, "unauthenticated", reason, [(b"www-authenticate", challenge)])


def claim_at(claims: dict[str, Any], dotted: str) -> Any:
    """A claim by dotted path, e.g. `realm_access.roles`; a literal key with dots wins."""
    if dotted in claims:
        return claims[dotted]
    value: Any = claims
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def groups_from(value: Any) -> frozenset[str]:
    """Groups as a list of strings or one space-separated string; anything else is none."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def bearer_token(authorization: bytes | None) -> str:
    if authorization is None:
        raise AuthError("missing bearer token", invalid_token=False)
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'", invalid_token=False)
    return token.strip()


class JwksCache:
    """The issuer's signing keys, fetched via discovery."""

    def __init__(
        self,
        config: IdentityConfig,
        on_refresh: Callable[[str], None] = lambda result: None,
    ) -> None:
        self.config = config
        self.on_refresh = on_refresh
        self.keys: tuple[SigningKey, ...] = ()
        self.jwks_uri: str | None = None
        self.last_attempt = float("-inf")
        self.inflight: asyncio.Future[bool] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.listeners: list[Callable[[set[bytes]], None]] = []
        self.periodic: asyncio.Task[None] | None = None

    async def start(self) -> None:
        context = ssl.create_default_context(cafile=self.config.ca_file)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=10),
        )
        await self.refresh()
        self.periodic = asyncio.get_running_loop().create_task(self._refresh_periodically())

    async def _refresh_periodically(self) -> None:
        """Pick up keys the IdP adds or withdraws even when no unknown kid shows up."""
        while True:
            await asyncio.sleep(self.config.jwks_cache_s)
            await self.refresh()

    async def close(self) -> None:
        if self.periodic is not None:
            self.periodic.cancel()
        if self.session is not None:
            await self.session.close()

    @property
    def ready(self) -> bool:
        return bool(self.keys)

    def candidates(self, kid: str | None) -> list[SigningKey]:
        """The keys that may have signed a token: the one named by kid, or all without one."""
        if kid is None:
            return list(self.keys)
        return [key for key in self.keys if key.kid == kid]

    async def refresh_if_due(self) -> bool:
        """Refresh for a token no cached key verifies, at most once per the minimum interval."""
        since = time.monotonic() - self.last_attempt
        if since < self.config.jwks_min_refresh_interval_s:
            return False
        return await self.refresh()

    async def refresh(self) -> bool:
        """Fetch keys once; concurrent callers share the one request in flight."""
        if self.inflight is not None:
            return await asyncio.shield(self.inflight)
        self.inflight = asyncio.get_running_loop().create_future()
        self.last_attempt = time.monotonic()
        try:
            ok = await self._fetch()
        except Exception as exc:  # any failure: keep the last good keys
            log.warning("JWKS refresh failed, keeping %d cached keys: %s", len(self.keys), exc)
            self.on_refresh("error")
            ok = False
        self.inflight.set_result(ok)
        self.inflight = None
        return ok

    async def _fetch(self) -> bool:
        assert self.session is not None
        if self.jwks_uri is None:
            discovery_url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = await self._get_json(discovery_url)
            if document.get("issuer") != self.config.issuer:
                raise ValueError("discovery document names a different issuer")
            uri = document.get("jwks_uri")
            if not isinstance(uri, str) or not _allowed_url(uri):
                raise ValueError("discovery document has no usable https jwks_uri")
            self.jwks_uri = uri
        jwks = await self._get_json(self.jwks_uri)
        keys = self._parse(jwks)
        if not keys:
            raise ValueError("JWKS holds no usable signing key")
        removed = {k.fingerprint for k in self.keys} - {k.fingerprint for k in keys}
        self.keys = keys
        self.on_refresh("ok")
        if removed:
            for listener in self.listeners:
                listener(removed)
        return True

    async def _get_json(self, url: str) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.get(url) as resp:
            if resp.status != 200:
                raise ValueError(f"GET {url} answered {resp.status}")
            document = await resp.json(content_type=None)
        if not isinstance(document, dict):
            raise ValueError(f"GET {url} did not return a JSON object")
        return document

    def _parse(self, jwks: dict[str, Any]) -> tuple[SigningKey, ...]:
        keys: list[SigningKey] = []
        for jwk in jwks.get("keys", []):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            if jwk.get("kty") == "oct":
                continue  # symmetric keys are never accepted
            kid = jwk.get("kid")
            try:
                public = jwt.PyJWK(jwk).key
            except jwt.PyJWTError as exc:
                log.warning("skipping unusable JWK %r: %s", kid, exc)
                continue
            fingerprint = hashlib.sha256(orjson.dumps(jwk, option=orjson.OPT_SORT_KEYS)).digest()
            kid = kid if isinstance(kid, str) else None
            keys.append(SigningKey(public, jwk["kty"], jwk.get("alg"), kid, fingerprint))
        return tuple(keys)


def _allowed_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))


class TokenVerifier:
    """Verifies bearer tokens and remembers the verified ones until they expire."""

    def __init__(self, config: IdentityConfig, jwks: JwksCache) -> None:
        self.config = config
        self.jwks = jwks
        self.algorithms = frozenset(config.algorithms)
        self.cache: dict[bytes, Identity] = {}
        jwks.listeners.append(self._forget_keys)

    async def verify(self, token: str) -> Identity:
        digest = hashlib.sha256(token.encode()).digest()
        cached = self.cache.get(digest)
        if cached is not None:
            if cached.expires_at + self.config.leeway_s > time.time():
                return cached
            del self.cache[digest]
        identity = await self._verify(token)
        self._remember(digest, identity)
        return identity

    async def _verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            shown = alg if alg in jwt.algorithms.get_default_algorithms() else "unrecognised"
            raise AuthError(f"token algorithm {shown} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed token (kid is not a string)")
        try:
            claims, key = self._check(token, alg, kid)
        except _NoKeyVerifies:
            # The IdP may have rotated since the last fetch: look once more, rate-limited.
            if not await self.jwks.refresh_if_due():
                raise
            claims, key = self._check(token, alg, kid)
        subject = claim_at(claims, self.config.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthError(f"token has no {self.config.subject_claim!r} claim")
        groups = groups_from(claim_at(claims, self.config.groups_claim))
        return Identity(subject, groups, float(claims["exp"]), key.fingerprint)

    def _check(self, token: str, alg: str, kid: str | None) -> tuple[dict[str, Any], SigningKey]:
        """The claims and the key that verified them, from the keys cached now."""
        candidates = self.jwks.candidates(kid)
        if not candidates:
            raise _NoKeyVerifies("unknown signing key (kid not in the issuer's JWKS)")
        fitting = [key for key in candidates if key.fits(alg)]
        if not fitting:
            raise AuthError(f"token algorithm {alg} does not match the signing key")
        for key in fitting:
            try:
                claims = jwt.decode(
                    token,
                    key=key.key,
                    algorithms=[alg],
                    audience=self.config.audience,
                    issuer=self.config.issuer,
                    leeway=self.config.leeway_s,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue  # without a kid, another key of the issuer may be the signer
            except jwt.PyJWTError as exc:
                raise AuthError(_reason(exc)) from None
            return claims, key
        raise _NoKeyVerifies("bad signature")

    def _remember(self, digest: bytes, identity: Identity) -> None:
        if len(self.cache) >= TOKEN_CACHE_MAX:
            now = time.time()
            for k in [k for k, v in self.cache.items() if v.expires_at < now]:
                del self.cache[k]
            while len(self.cache) >= TOKEN_CACHE_MAX:
                del self.cache[next(iter(self.cache))]
        self.cache[digest] = identity

    def _forget_keys(self, removed: set[bytes]) -> None:
        """A key the issuer withdrew no longer vouches for tokens we cached."""
        for k in [k for k, v in self.cache.items() if v.key in removed]:
            del self.cache[k]


class _NoKeyVerifies(AuthError):
    """No cached key verifies the token: a JWKS refresh might find the one that does."""


def _reason(exc: jwt.PyJWTError) -> str:
    """A short, token-free reason for a verification failure."""
    reasons: list[tuple[type[jwt.PyJWTError], str]] = [
        (jwt.ExpiredSignatureError, "token expired"),
        (jwt.ImmatureSignatureError, "token not yet valid (nbf/iat in the future)"),
        (jwt.InvalidAudienceError, "wrong audience"),
        (jwt.InvalidIssuerError, "wrong issuer"),
        (jwt.InvalidSignatureError, "bad signature"),
        (jwt.InvalidAlgorithmError, "token algorithm is not allowed"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has no {exc.claim!r} claim"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    return "invalid token"
