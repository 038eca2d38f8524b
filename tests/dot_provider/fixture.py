"""Start the DOT provider as a process (like tests/peers.py does for the demo servers) and
drive its `/_test/` API."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import peers

TESTS_DIR = Path(__file__).resolve().parent.parent
# A cold Django plus migrations of a fresh sqlite DB on a busy 2-core box.
START_TIMEOUT_S = 60.0


def start(db_dir: Path) -> peers.Peer:
    """`python -m dot_provider` on a free loopback port with its DB in db_dir."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "dot_provider",
        "--port",
        "0",
        "--db",
        str(db_dir / "dot.sqlite3"),
    ]
    return peers.launch(command, env=env, timeout=START_TIMEOUT_S)


def token_url(provider_url: str) -> str:
    return f"{provider_url}/o/token/"


def issuer(provider_url: str) -> str:
    """The OIDC issuer (`iss`, discovery at {issuer}/.well-known/openid-configuration)."""
    return f"{provider_url}/o"


def password_token(
    provider_url: str, client_id: str, client_secret: str, username: str, password: str
) -> str:
    """An opaque access token for a user (resource-owner password grant; the client must
    have grant_type "password")."""
    response = httpx.post(
        token_url(provider_url),
        data={"grant_type": "password", "username": username, "password": password},
        auth=(client_id, client_secret),
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def revoke(provider_url: str, client_id: str, client_secret: str, token: str) -> None:
    """Revoke an access token at the provider (RFC 7009)."""
    response = httpx.post(
        f"{provider_url}/o/revoke_token/",
        data={"token": token},
        auth=(client_id, client_secret),
        timeout=30,
    )
    response.raise_for_status()


def create_client(provider_url: str, client_id: str, client_secret: str, **opts: Any) -> None:
    """A confidential client; opts: token_lifetime_s, grant_type, redirect_uris, name."""
    peers._call(
        "POST",
        f"{provider_url}/_test/clients",
        {"client_id": client_id, "client_secret": client_secret, **opts},
    )


def create_user(provider_url: str, username: str, password: str, groups: list[str]) -> None:
    peers._call(
        "POST",
        f"{provider_url}/_test/users",
        {"username": username, "password": password, "groups": groups},
    )


def token_requests(provider_url: str, client_id: str) -> int:
    """How many requests reached the token endpoint for this client, failed ones included."""
    return peers._call("GET", f"{provider_url}/_test/stats")["token_requests"].get(client_id, 0)


def introspections(provider_url: str, client_id: str) -> int:
    """How many introspection requests this client (the gateway) made, failed ones included."""
    stats = peers._call("GET", f"{provider_url}/_test/stats")
    return stats["introspect_requests"].get(client_id, 0)


def faults(provider_url: str, **faults: Any) -> None:
    """Fail (503) or slow endpoints: down, token_delay_ms, introspect_down, introspect_delay_ms."""
    peers._call("POST", f"{provider_url}/_test/faults", faults)


def reset(provider_url: str) -> None:
    """Zero the counters and clear faults (accounts stay)."""
    peers._call("POST", f"{provider_url}/_test/reset")
