"""Opaque access tokens from a real OAuth2 provider (django-oauth-toolkit), checked by RFC 7662
introspection: discovered endpoint, client credentials, caching, single-flight, revocation,
an IdP outage that is a 503, not a 401; and a second issuer's JWTs (the demo issuer's
Kubernetes-style tokens) accepted by the same gateway at the same time."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import peers
import pytest
from conftest import UPSTREAM_KEY
from dot_provider import fixture as dot

INTROSPECTOR = ("gateway-introspect", "introspection-secret")
CLI = ("pipeline-cli", "cli-secret")
BODY = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
INACTIVE = "token is not active (revoked, expired or unknown to the issuer)"


def config(provider: str, upstream: str, cache_max_s: float, pipelines: str) -> str:
    """Two issuers at once: people from DOT (opaque tokens), pipelines' JWTs from the demo
    issuer shaped like Kubernetes service-account tokens."""
    return f"""
[server]
listen = "127.0.0.1:0"

[[identity.issuers]]
name = "pipelines"
issuer = "{pipelines}"
audience = "inference-gateway"
groups_claim = ["kubernetes.io", "namespace"]
subject_prefix = "k8s:"

[[identity.issuers]]
name = "people"
issuer = "{dot.issuer(provider)}"
audience = "inference-gateway"
subject_prefix = "dot:"
introspection = true
introspection_client_id = "{INTROSPECTOR[0]}"
introspection_client_secret_env = "GW_INTROSPECTION_SECRET"
introspection_cache_max_s = {cache_max_s}

[[connections]]
name = "llama"
upstream = "{upstream}"
credential_env = "TEST_UPSTREAM_KEY"

[[rules]]
id = "analysts"
groups = ["analysts", "ml"]
models = ["llama-3*"]
action = "allow"
"""


@pytest.fixture(scope="module")
def provider(dot_provider):
    dot.create_client(dot_provider.url, *INTROSPECTOR)
    dot.create_client(dot_provider.url, *CLI, grant_type="password")
    dot.create_user(dot_provider.url, "alice", "alice-pw", ["analysts"])
    dot.create_user(dot_provider.url, "ivan", "ivan-pw", ["interns"])
    return dot_provider.url


def start(tmp_path_factory, provider: str, upstream: peers.Peer, issuer: peers.Peer, cache_s):
    path = tmp_path_factory.mktemp("introspection") / "gateway.toml"
    path.write_text(config(provider, upstream.url, cache_s, issuer.url))
    env = {
        **os.environ,
        "TEST_UPSTREAM_KEY": UPSTREAM_KEY,
        "GW_INTROSPECTION_SECRET": INTROSPECTOR[1],
    }
    return peers.launch(["gateway", "serve", "-c", str(path)], env=env)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, provider, upstream, issuer):
    with start(tmp_path_factory, provider, upstream, issuer, 60) as peer:
        yield peer


@pytest.fixture(scope="module")
def uncached(tmp_path_factory, provider, upstream, issuer):
    with start(tmp_path_factory, provider, upstream, issuer, 0) as peer:
        yield peer


def token(provider: str, user: str = "alice") -> str:
    return dot.password_token(provider, *CLI, user, f"{user}-pw")


def call(gateway: peers.Peer, bearer: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/llama/v1/chat/completions",
        json=BODY,
        headers={"authorization": f"Bearer {bearer}"},
        timeout=30,
    )


def asked(provider: str) -> int:
    return dot.introspections(provider, INTROSPECTOR[0])


def test_opaque_token_is_introspected_once_and_names_user_and_groups(gateway, provider) -> None:
    bearer = token(provider)
    assert "." not in bearer  # DOT's access tokens are opaque, not JWTs
    before = asked(provider)
    assert call(gateway, bearer).status_code == 200
    assert call(gateway, bearer).status_code == 200  # from the cache
    assert asked(provider) == before + 1
    assert call(gateway, token(provider, "ivan")).status_code == 403  # groups: interns

    def exchanges() -> list[dict]:
        return [json.loads(x) for x in gateway.stderr().splitlines() if '"exchange"' in x]

    access = peers.wait_for(lambda: len(exchanges()) >= 3 and exchanges())
    assert [(a["issuer"], a["subject"], a["status"]) for a in access[-3:]] == [
        ("people", "dot:alice", 200),
        ("people", "dot:alice", 200),
        ("people", "dot:ivan", 403),
    ]


def test_concurrent_callers_of_one_token_share_one_introspection(gateway, provider) -> None:
    bearer = token(provider)
    before = asked(provider)
    dot.faults(provider, introspect_delay_ms=400)  # all callers arrive while it is in flight

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [
                client.post(
                    f"{gateway.url}/llama/v1/chat/completions",
                    json=BODY,
                    headers={"authorization": f"Bearer {bearer}"},
                )
                for _ in range(8)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    try:
        assert asyncio.run(burst()) == [200] * 8
    finally:
        dot.faults(provider, introspect_delay_ms=0)
    assert asked(provider) == before + 1


def test_revoked_token_is_refused_with_a_clear_message(gateway, uncached, provider) -> None:
    bearer = token(provider)
    assert call(uncached, bearer).status_code == 200
    dot.revoke(provider, *CLI, bearer)
    # introspection_cache_max_s = 0: the next call asks again and learns of the revocation.
    refused = call(uncached, bearer)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == INACTIVE
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert call(gateway, "not-a-token-anyone-issued").json()["error"]["message"] == INACTIVE


def test_unreachable_idp_is_503_not_401(gateway, provider) -> None:
    bearer = token(provider)
    dot.faults(provider, introspect_down=True)
    try:
        response = call(gateway, bearer)
    finally:
        dot.faults(provider, introspect_down=False)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "introspection_unavailable"
    assert bearer not in response.text
    assert call(gateway, bearer).status_code == 200  # the IdP is back: the same token works


def test_missing_client_secret_refuses_to_start(tmp_path, provider, upstream, issuer) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(config(provider, upstream.url, 60, issuer.url))
    env = {**os.environ, "TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    env.pop("GW_INTROSPECTION_SECRET", None)
    with pytest.raises(peers.PeerStartError, match="GW_INTROSPECTION_SECRET is unset"):
        peers.launch(["gateway", "serve", "-c", str(path)], env=env)


def test_a_second_issuers_jwts_work_beside_introspected_tokens(gateway, provider, issuer):
    """The demo issuer's Kubernetes-style JWT and DOT's opaque token, one gateway."""
    job = peers.mint(
        issuer.url,
        "system:serviceaccount:ml:trainer",
        [],
        aud=["https://kubernetes.default.svc.cluster.local", "inference-gateway"],
        claims={"kubernetes.io": {"namespace": "ml", "serviceaccount": {"name": "trainer"}}},
    )

    def exchanges() -> list[dict]:
        return [json.loads(x) for x in gateway.stderr().splitlines() if '"exchange"' in x]

    logged, before = len(exchanges()), asked(provider)
    assert call(gateway, job).status_code == 200  # verified with the demo issuer's keys
    assert asked(provider) == before  # a JWT is never introspected
    assert call(gateway, token(provider)).status_code == 200
    # Access lines are written after each response ends, so wait for both, in either order.
    access = peers.wait_for(lambda: len(exchanges()) >= logged + 2 and exchanges())
    assert {(a["issuer"], a["subject"]) for a in access[logged:]} == {
        ("pipelines", "k8s:system:serviceaccount:ml:trainer"),
        ("people", "dot:alice"),
    }
