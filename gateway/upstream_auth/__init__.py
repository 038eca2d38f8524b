"""How a connection authenticates to its upstream: one interface, one small module per mode.

A mode turns the headers the gateway is about to send into the headers it does send: `static`
adds a fixed credential, `google` and `oauth2_client_credentials` add a bearer token they keep
fresh, `aws_sigv4` signs the exact bytes that go out. A mode that cannot get its credential
raises a 502 naming the connection and what failed (never the secret) and reports the failure
as a health warning until a later attempt succeeds.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

from gateway.config import Config, ConfigError, ConnectionConfig
from gateway.errors import GatewayError
from gateway.headers import Headers
from gateway.upstream import UpstreamPool


def credentials_failed(connection: str, what: str) -> GatewayError:
    return GatewayError(
        502,
        "upstream_credentials",
        f"could not get upstream credentials for connection {connection!r}: {what}",
    )


class UpstreamAuth(ABC):
    """The credential of one connection."""

    # Header names the mode sets; copies the caller sent are dropped, never forwarded.
    owned: frozenset[bytes] = frozenset()

    def __init__(self, connection: str, fingerprint: str) -> None:
        self.connection = connection
        # Changes when the mode's settings or secret change: a reload keeps the old instance
        # (and its cached token) only when this is equal.
        self.fingerprint = fingerprint
        self.problem: str | None = None  # the last failure, until an attempt succeeds

    @abstractmethod
    async def apply(self, method: str, url: str, headers: Headers, body: bytes) -> Headers:
        """`headers` as sent to `url` with `body`, with this connection's credential added."""

    @abstractmethod
    def secrets(self) -> tuple[bytes, ...]:
        """The credential values in use now, so echoes of them can be redacted."""

    def pools(self) -> tuple[UpstreamPool, ...]:
        """Connection pools the mode keeps (to its token endpoint), closed when it retires."""
        return ()

    def failed(self, what: str) -> GatewayError:
        self.problem = what
        return credentials_failed(self.connection, what)

    def without_owned(self, headers: Headers) -> Headers:
        return [(n, v) for n, v in headers if n not in self.owned]


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def build(config: Config, conn: ConnectionConfig) -> UpstreamAuth:
    """The auth of a connection; a secret that cannot be read refuses the config."""
    if conn.auth == "static":
        from gateway.upstream_auth.static import StaticAuth

        return StaticAuth.from_config(config, conn)
    if conn.auth == "oauth2_client_credentials":
        from gateway.upstream_auth.oauth2 import ClientCredentialsAuth

        return ClientCredentialsAuth.from_config(config, conn)
    extra = {"aws_sigv4": "aws", "google": "gcp"}[conn.auth]
    try:
        if conn.auth == "aws_sigv4":
            from gateway.upstream_auth.sigv4 import SigV4Auth as Mode
        else:
            from gateway.upstream_auth.google import GoogleAuth as Mode
    except ImportError as exc:
        raise ConfigError(
            config.path,
            f"connections[{conn.name}].auth",
            f"{conn.auth!r} needs {exc.name}: pip install 'inference-gateway[{extra}]'",
        ) from None
    return Mode.from_config(config, conn)
