"""`auth = "google"`: OAuth access tokens from google-auth (extra `[gcp]`).

`google_credentials_file` may hold any credential google-auth loads (service-account key,
workload identity federation, authorized user); without it, application default credentials
are looked up on first use (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server).
google-auth blocks while it refreshes, so refreshes run in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
from pathlib import Path
from typing import Any

import google.auth
import google.auth.exceptions
import google.auth.transport.requests

from gateway.config import Config, ConfigError, ConnectionConfig
from gateway.headers import Headers
from gateway.upstream_auth import UpstreamAuth, fingerprint
from gateway.upstream_auth.tokens import BEARER_TOKEN, TokenCache

DEFAULT_LIFETIME_S = 300.0  # a credential that reports no expiry is renewed this often
PRINTABLE = re.compile(r"[^\x20-\x7e]")


class GoogleAuth(UpstreamAuth):
    owned = frozenset({b"authorization"})

    def __init__(self, conn: ConnectionConfig, credentials: Any, file_sha256: str) -> None:
        super().__init__(conn.name, fingerprint(conn, file_sha256))
        self.scopes = list(conn.google_scopes)
        self.credentials = credentials  # None: application default credentials, found lazily
        self.transport = google.auth.transport.requests.Request()
        self.tokens = TokenCache(self._fetch)

    @classmethod
    def from_config(cls, config: Config, conn: ConnectionConfig) -> GoogleAuth:
        path = conn.google_credentials_file
        if path is None:
            return cls(conn, None, "")
        key = f"connections[{conn.name}].google_credentials_file"
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            credentials, _ = google.auth.load_credentials_from_file(
                path, scopes=list(conn.google_scopes)
            )
        except OSError as exc:
            raise ConfigError(config.path, key, exc.strerror or str(exc)) from None
        except (google.auth.exceptions.GoogleAuthError, ValueError) as exc:
            raise ConfigError(config.path, key, f"not usable credentials: {_safe(exc)}") from None
        return cls(conn, credentials, digest)

    async def apply(self, method: str, url: str, headers: Headers, body: bytes) -> Headers:
        token = await self.tokens.get()
        return [*self.without_owned(headers), (b"authorization", b"Bearer " + token.encode())]

    def secrets(self) -> tuple[bytes, ...]:
        return (self.tokens.token.encode(),) if self.tokens.token else ()

    async def _fetch(self) -> tuple[str, float]:
        try:
            token, lifetime = await asyncio.to_thread(self._refresh)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise self.failed(f"google-auth could not refresh the token: {_safe(exc)}") from None
        if not isinstance(token, str) or not BEARER_TOKEN.match(token):
            raise self.failed("google-auth returned an unusable access token")
        self.problem = None
        return token, lifetime

    def _refresh(self) -> tuple[str, float]:
        """In a worker thread: find default credentials if needed, then refresh them."""
        if self.credentials is None:
            self.credentials, _ = google.auth.default(scopes=self.scopes)
        self.credentials.refresh(self.transport)
        expiry = self.credentials.expiry  # naive UTC, google-auth's convention
        if expiry is None:
            return self.credentials.token, DEFAULT_LIFETIME_S
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        return self.credentials.token, max((expiry - now).total_seconds(), 1.0)


def _safe(exc: Exception) -> str:
    """google-auth's reason (the token endpoint's error, never the key), one short line."""
    first = exc.args[0] if exc.args else type(exc).__name__
    return PRINTABLE.sub(" ", str(first))[:200]
