"""Fixtures: the real demo issuer and upstream, a real OAuth2 provider, real gateway processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import peers
import pgcluster
import pytest
from dot_provider import fixture as dot

from gateway.audit import LogReader

UPSTREAM_KEY = "sk-upstream-connection-secret"


# Audit epoch tests start two seconds before a UTC midnight (and a month's end).
DAY1 = datetime(2026, 11, 30, 23, 59, 58, tzinfo=UTC).timestamp()


class Clock:
    """The time an audit writer sees (its `clock`); tests move it forward."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def issuer() -> Iterator[peers.Peer]:
    with peers.start_issuer() as peer:
        yield peer


@pytest.fixture(scope="session")
def dot_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Peer]:
    """A real OAuth2 provider (django-oauth-toolkit); add clients with dot.create_client."""
    with dot.start(tmp_path_factory.mktemp("dot")) as peer:
        yield peer


@pytest.fixture(scope="session")
def upstream() -> Iterator[peers.Peer]:
    with peers.start_upstream(api_key=UPSTREAM_KEY, token_delay_ms=20) as peer:
        yield peer


@pytest.fixture(scope="session")
def scripted() -> Iterator[peers.Peer]:
    """The scripted stand-in upstream (tests/scripted_upstream.py)."""
    with peers.start_scripted_upstream() as peer:
        yield peer


def gateway_config(issuer_url: str, upstream_url: str, **server: object) -> str:
    """A config with the connections and rules most tests use; `server` overrides [server]."""
    server_lines = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in server.items())
    return f"""
[server]
listen = "127.0.0.1:0"
upstream_connect_timeout_s = 2
reload_poll_s = 0.2
{server_lines}

[identity]
issuer = "{issuer_url}"
audience = "inference-gateway"
leeway_s = 0
jwks_min_refresh_interval_s = 1

[[connections]]
name = "llama"
upstream = "{upstream_url}"
credential_env = "TEST_UPSTREAM_KEY"
model_version_header = "x-model-version"

[[connections]]
name = "down"
upstream = "http://127.0.0.1:9"

[[connections]]
name = "slow"
upstream = "{upstream_url}"
credential_env = "TEST_UPSTREAM_KEY"
upstream_timeout_s = 1

[[rules]]
id = "interns-denied"
groups = ["interns"]
action = "deny"

[[rules]]
id = "analysts-chat"
groups = ["analysts"]
connections = ["llama", "down", "slow"]
models = ["llama-3*", "fail-*"]
action = "allow"

[[rules]]
id = "analysts-models-list"
groups = ["analysts"]
connections = ["llama"]
methods = ["GET"]
paths = ["/v1/models"]
action = "allow"
"""


def audited_config(issuer: str, upstream: str, tmp: Path, durability: str = "sync") -> str:
    """gateway_config plus an [audit] section; keys made by `gateway keys init` under tmp."""
    keys = tmp / "keys"
    subprocess.run(["gateway", "keys", "init", "--dir", str(keys)], check=True, capture_output=True)
    return (
        gateway_config(issuer, upstream)
        + f"""
[audit]
dir = "{tmp / "audit"}"
origin = "test.gateway/audit"
durability = "{durability}"
signing_key = "{keys / "signing.key"}"
sealing_key = "{keys / "sealing.key"}"
readers = ["auditors"]
"""
    )


def entries(audit_dir: Path) -> list[dict]:
    """Every entry of an audit directory, in order."""
    reader = LogReader(audit_dir)
    return [reader.read_entry(i) for i in range(reader.size)]


def launch_gateway(config_path: Path, env: dict[str, str | None] | None = None) -> peers.Peer:
    """`gateway serve -c config_path` with the upstream credential in its environment; `env`
    sets more variables (None: remove it)."""
    merged = {**os.environ, "TEST_UPSTREAM_KEY": UPSTREAM_KEY, **(env or {})}
    environment = {k: v for k, v in merged.items() if v is not None}
    return peers.launch(["gateway", "serve", "-c", str(config_path)], env=environment)


@pytest.fixture(scope="session")
def start_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., peers.Peer]]:
    """Start `gateway serve -c <file>` on a config text (and extra environment variables);
    stopped at the end of the session."""
    started: list[peers.Peer] = []

    def start(config_text: str, env: dict[str, str | None] | None = None) -> peers.Peer:
        path = tmp_path_factory.mktemp("gw") / "gateway.toml"
        path.write_text(config_text)
        peer = launch_gateway(path, env)
        peer.config_path = path  # type: ignore[attr-defined]
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture(scope="session")
def gateway(
    start_gateway: Callable[[str], peers.Peer], issuer: peers.Peer, upstream: peers.Peer
) -> peers.Peer:
    """One gateway shared by the tests that do not change its config."""
    return start_gateway(gateway_config(issuer.url, upstream.url))


@pytest.fixture(scope="session")
def analyst_token(issuer: peers.Peer) -> str:
    return peers.mint(issuer.url, "alice@example.com", ["analysts"])


@pytest.fixture(scope="session")
def intern_token(issuer: peers.Peer) -> str:
    return peers.mint(issuer.url, "ivan@example.com", ["interns", "analysts"])


@pytest.fixture(scope="session")
def postgres() -> Iterator[pgcluster.Cluster]:
    """One throwaway PostgreSQL cluster for the session; take a database with new_database()."""
    cluster = pgcluster.Cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def approvals_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """An empty approval store URL of each kind: modules using it run against both stores."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path_factory.mktemp('store')}/approvals.db"
    return request.getfixturevalue("postgres").new_database("approvals")
