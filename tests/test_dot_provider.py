"""The shared OAuth2 provider fixture itself: a real token endpoint with real client checks."""

from __future__ import annotations

import httpx
import peers
from dot_provider import fixture as dot


def test_client_credentials_token_is_issued_and_counted(dot_provider: peers.Peer) -> None:
    dot.create_client(dot_provider.url, "fixture-check", "fixture-secret", token_lifetime_s=7)
    before = dot.token_requests(dot_provider.url, "fixture-check")
    good = httpx.post(
        dot.token_url(dot_provider.url),
        data={"grant_type": "client_credentials", "scope": "inference"},
        auth=("fixture-check", "fixture-secret"),
    )
    bad = httpx.post(
        dot.token_url(dot_provider.url),
        data={"grant_type": "client_credentials"},
        auth=("fixture-check", "wrong"),
    )
    assert good.status_code == 200
    assert good.json()["expires_in"] == 7
    assert good.json()["token_type"] == "Bearer"
    assert bad.status_code == 401
    assert dot.token_requests(dot_provider.url, "fixture-check") == before + 2


def test_fault_injection_makes_the_token_endpoint_fail(dot_provider: peers.Peer) -> None:
    dot.create_client(dot_provider.url, "fixture-down", "fixture-secret")
    dot.faults(dot_provider.url, down=True)
    try:
        down = httpx.post(
            dot.token_url(dot_provider.url),
            data={"grant_type": "client_credentials"},
            auth=("fixture-down", "fixture-secret"),
        )
    finally:
        dot.reset(dot_provider.url)
    assert down.status_code == 503
