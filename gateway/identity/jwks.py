"""An issuer's signing keys: discovery, JWKS, refresh on a schedule and on demand.

Discovery and JWKS are fetched with aiohttp, never blocking the event loop; keys are refreshed
periodically, and on demand (an unknown `kid`, a signature no cached key verifies) at most once
per `jwks_min_refresh_interval_s`, so a flood of bogus tokens costs the IdP one request per
interval. When the IdP is unreachable the last good keys stay in force.
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

log = logging.getLogger("gateway.identity")

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
        self.metadata: dict[str, Any] = {}  # the discovery document, once fetched
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
            document = await self.get_json(discovery_url)
            if document.get("issuer") != self.config.issuer:
                raise ValueError("discovery document names a different issuer")
            uri = document.get("jwks_uri")
            if not isinstance(uri, str) or not allowed_url(uri):
                raise ValueError("discovery document has no usable https jwks_uri")
            self.metadata = document
            self.jwks_uri = uri
        jwks = await self.get_json(self.jwks_uri)
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

    async def get_json(self, url: str) -> dict[str, Any]:
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


def allowed_url(url: str) -> bool:
    """https, or plain http to loopback only (tests and sidecars)."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))
