"""The reloadable part of the gateway: config, compiled policy, upstream pools, credentials.

A reload builds a whole new Runtime and swaps one reference, so a request sees either the old
policy or the new one, never a mix. Requests in flight keep the Runtime they started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config import Config, ConfigError, ConnectionConfig
from gateway.masking import compile_masking
from gateway.policy import Policy
from gateway.redact import RedactorCache
from gateway.upstream import UpstreamPool
from gateway.upstream_auth import UpstreamAuth
from gateway.upstream_auth import build as build_auth


@dataclass(frozen=True, slots=True)
class Route:
    connection: ConnectionConfig
    pool: UpstreamPool
    auth: UpstreamAuth
    # Finds the credential the auth holds now where the upstream echoes it.
    redactors: RedactorCache = field(default_factory=RedactorCache)

    def url(self, target: str) -> str:
        """The absolute URL of a target on this upstream (what a signature covers)."""
        return f"{self.connection.scheme}://{self.pool.host_header.decode()}{target}"


class Runtime:
    def __init__(self, config: Config, previous: Runtime | None = None) -> None:
        self.config = config
        self.policy = Policy(config.rules)
        self.masking = compile_masking(config)
        self.routes: dict[str, Route] = {}
        for conn in config.connections:
            old = previous.routes.get(conn.name) if previous is not None else None
            self.routes[conn.name] = Route(conn, self._pool(conn, old), _auth(config, conn, old))

    def _pool(self, conn: ConnectionConfig, old: Route | None) -> UpstreamPool:
        """Keep the warm pool of a connection whose settings did not change."""
        if old is not None and old.connection == conn:
            return old.pool
        return UpstreamPool(conn, self.config.server)

    def pools(self) -> list[UpstreamPool]:
        """Every pool: the upstreams' and those of their token endpoints."""
        return [p for r in self.routes.values() for p in (r.pool, *r.auth.pools())]

    def retired_pools(self, previous: Runtime) -> list[UpstreamPool]:
        current = {id(p) for p in self.pools()}
        return [p for p in previous.pools() if id(p) not in current]


def credential_problems(config: Config) -> list[ConfigError]:
    """What `serve` would refuse about the connections' credentials here (an unset variable,
    an unreadable file), for `policy check`; what was read is dropped."""
    problems = []
    for conn in config.connections:
        try:
            build_auth(config, conn)
        except ConfigError as exc:
            problems.append(exc)
    return problems


def _auth(config: Config, conn: ConnectionConfig, old: Route | None) -> UpstreamAuth:
    """The secret is read when the gateway starts or reloads (not by tools that only read the
    config); a cached token survives a reload that changed neither its settings nor its secret.
    """
    auth = build_auth(config, conn)
    if old is not None and old.auth.fingerprint == auth.fingerprint:
        return old.auth
    return auth
