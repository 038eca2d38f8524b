"""Proxying through a real gateway process with real clients (the openai SDK, httpx)."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import peers
import pytest
from conftest import UPSTREAM_KEY

CHAT = [{"role": "user", "content": "Tell me about gateways"}]


def client(gateway: peers.Peer, token: str, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/llama/v1", api_key=token, max_retries=0, **kw)


def test_chat_completion_through_gateway(gateway, upstream, analyst_token) -> None:
    peers.upstream_reset(upstream.url)
    answer = client(gateway, analyst_token).chat.completions.create(
        model="llama-3-8b", messages=CHAT, max_tokens=20
    )
    assert answer.model == "llama-3-8b"
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason in ("stop", "length")

    seen = peers.upstream_requests(upstream.url)[-1]
    headers = dict((k.lower(), v) for k, v in seen["headers"])
    # The upstream sees the connection's credential and never the caller's token.
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert all(analyst_token not in v for _, v in seen["headers"])
    assert "cookie" not in headers
    assert headers["host"] == upstream.url.removeprefix("http://")
    assert seen["path"] == "/v1/chat/completions"


def test_direct_call_without_credential_is_refused_by_upstream(upstream) -> None:
    """Control for the test above: the upstream really checks the key the gateway injects."""
    response = httpx.post(f"{upstream.url}/v1/chat/completions", json={"model": "llama-3-8b"})
    assert response.status_code == 401


def test_caller_cookie_and_hop_by_hop_headers_are_dropped(gateway, upstream, analyst_token):
    peers.upstream_reset(upstream.url)
    response = httpx.post(
        f"{gateway.url}/llama/v1/chat/completions",
        json={"model": "llama-3-8b", "messages": CHAT, "max_tokens": 3},
        headers={
            "authorization": f"Bearer {analyst_token}",
            "cookie": "session=caller-secret",
            "connection": "keep-alive, x-private-hop",
            "x-private-hop": "must-not-pass",
            "x-custom": "passes",
            "te": "trailers",
        },
    )
    assert response.status_code == 200
    assert uuid.UUID(response.headers["x-request-id"]).version == 4
    seen = dict((k.lower(), v) for k, v in peers.upstream_requests(upstream.url)[-1]["headers"])
    assert "cookie" not in seen and "x-private-hop" not in seen and "te" not in seen
    assert seen["x-custom"] == "passes"
    assert seen["x-request-id"] == response.headers["x-request-id"]


def test_stream_first_token_arrives_while_upstream_generates(gateway, analyst_token) -> None:
    delay_s = 0.05
    stream = client(gateway, analyst_token).chat.completions.create(
        model="llama-3-8b",
        messages=CHAT,
        max_tokens=40,
        stream=True,
        extra_headers={"x-demo-token-delay-ms": str(delay_s * 1000)},
    )
    started = time.perf_counter()
    arrivals, text = [], ""
    for chunk in stream:
        arrivals.append(time.perf_counter() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    total = arrivals[-1]
    # 40 tokens at 50 ms: ~2 s of generation. The first token must come long before the end.
    assert total >= 40 * delay_s * 0.9
    assert arrivals[1] < total / 4
    assert len(text) > 20


async def test_async_sdk_stream_and_plain(gateway, analyst_token) -> None:
    async_client = openai.AsyncOpenAI(
        base_url=f"{gateway.url}/llama/v1", api_key=analyst_token, max_retries=0
    )
    plain = await async_client.completions.create(model="llama-3-8b", prompt="hi", max_tokens=5)
    assert plain.choices[0].text
    stream = await async_client.chat.completions.create(
        model="llama-3-8b", messages=CHAT, max_tokens=5, stream=True
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "length"
    await async_client.close()


def test_embeddings_and_models(gateway, analyst_token) -> None:
    sdk = client(gateway, analyst_token)
    vectors = sdk.embeddings.create(model="llama-3-embed", input=["a", "b"])
    assert len(vectors.data) == 2
    models = sdk.models.list()
    assert len(models.data) >= 1


def test_no_token_is_401_with_challenge(gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        client(gateway, "not-a-jwt").chat.completions.create(model="llama-3-8b", messages=CHAT)
    assert "malformed token" in err.value.message
    response = httpx.post(f"{gateway.url}/llama/v1/chat/completions", json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthenticated"


def test_forbidden_model_is_403(gateway, analyst_token) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        client(gateway, analyst_token).chat.completions.create(model="gpt-4o", messages=CHAT)
    assert "default deny" in err.value.message


def test_deny_rule_wins_when_first(gateway, intern_token) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        client(gateway, intern_token).chat.completions.create(model="llama-3-8b", messages=CHAT)
    assert "interns-denied" in err.value.message


def test_unknown_connection_is_404(gateway, analyst_token) -> None:
    response = httpx.post(
        f"{gateway.url}/nope/v1/chat/completions",
        json={"model": "llama-3-8b"},
        headers={"authorization": f"Bearer {analyst_token}"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_connection"


def test_path_and_method_rules(gateway, analyst_token) -> None:
    auth = {"authorization": f"Bearer {analyst_token}"}
    assert httpx.get(f"{gateway.url}/llama/v1/models", headers=auth).status_code == 200
    # GET on another path matches no rule (the chat rule needs a model in the body).
    assert httpx.get(f"{gateway.url}/llama/v1/files", headers=auth).status_code == 403
