"""`auth = "static"`: a fixed secret in a header (`credential_env` / `credential_file`)."""

from __future__ import annotations

from gateway.config import Config, ConnectionConfig
from gateway.headers import Headers
from gateway.upstream_auth import UpstreamAuth, fingerprint
from gateway.upstream_auth.secret_source import read_secret


class StaticAuth(UpstreamAuth):
    def __init__(self, connection: str, header: bytes, prefix: str, secret: str | None) -> None:
        super().__init__(connection, fingerprint(header, prefix, secret))
        self.secret = secret
        self.header: tuple[bytes, bytes] | None = None
        if secret is not None:
            self.header = header, (prefix + secret).encode()
            self.owned = frozenset({header})

    @classmethod
    def from_config(cls, config: Config, conn: ConnectionConfig) -> StaticAuth:
        secret = read_secret(config, conn, "credential_env", "credential_file")
        return cls(conn.name, conn.credential_header.encode(), conn.credential_prefix, secret)

    async def apply(self, method: str, url: str, headers: Headers, body: bytes) -> Headers:
        if self.header is None:
            return headers
        return [*self.without_owned(headers), self.header]

    def secrets(self) -> tuple[bytes, ...]:
        return (self.secret.encode(),) if self.secret else ()
