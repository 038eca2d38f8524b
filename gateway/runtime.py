"""The reloadable part of the gateway: config, compiled policy, upstream pools, credentials.

A reload builds a whole new Runtime and swaps one reference, so a request sees either the old
policy or the new one, never a mix. Requests in flight keep the Runtime they started with.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Config, ConfigError, ConnectionConfig
from gateway.masking import compile_masking
from gateway.policy import Policy
from gateway.upstream import UpstreamPool


@dataclass(frozen=True, slots=True)
class Route:
    connection: ConnectionConfig
    pool: UpstreamPool
    credential: tuple[bytes, bytes] | None


class Runtime:
    def __init__(self, config: Config, previous: Runtime | None = None) -> None:
        self.config = config
        self.policy = Policy(config.rules)
        self.masking = compile_masking(config)
        self.routes: dict[str, Route] = {}
        for conn in config.connections:
            self.routes[conn.name] = Route(
                conn, self._pool(conn, previous), _credential(config, conn)
            )

    def _pool(self, conn: ConnectionConfig, previous: Runtime | None) -> UpstreamPool:
        """Keep the warm pool of a connection whose settings did not change."""
        if previous is not None:
            old = previous.routes.get(conn.name)
            if old is not None and old.connection == conn:
                return old.pool
        return UpstreamPool(conn, self.config.server)

    def retired_pools(self, previous: Runtime) -> list[UpstreamPool]:
        current = {id(r.pool) for r in self.routes.values()}
        return [r.pool for r in previous.routes.values() if id(r.pool) not in current]


def _credential(config: Config, conn: ConnectionConfig) -> tuple[bytes, bytes] | None:
    """The secret, read when the gateway starts or reloads (not by tools that only read config).

    A configured credential that cannot be read refuses the config: sending the request
    without it would fail upstream in a less clear way.
    """
    key = f"connections[{conn.name}]"
    try:
        secret = conn.credential()
    except OSError as exc:
        raise ConfigError(config.path, f"{key}.credential_file", exc.strerror or str(exc)) from None
    if secret is None and conn.credential_env:
        raise ConfigError(
            config.path,
            f"{key}.credential_env",
            f"environment variable {conn.credential_env} is unset",
        )
    if secret is None:
        return None
    if not secret or any(c in secret for c in "\r\n\0"):
        raise ConfigError(
            config.path, f"connections.{conn.name}", "credential is empty or has control chars"
        )
    return conn.credential_header.encode(), (conn.credential_prefix + secret).encode()
