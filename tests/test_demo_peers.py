"""The demo upstream and issuer, as real subprocesses, against real clients.

The gateway's tests trust these peers to behave like OpenAI and like an OIDC provider, and to
misbehave exactly as asked; this file is what earns that trust.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import signal
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import openai
import peers
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.demo import pii
from gateway.demo.issuer import start_issuer as start_issuer_in_process
from gateway.demo.upstream import (
    FAILURE_MODES,
    INVALID_UTF8,
    MODEL_VERSION,
    MODELS,
)
from gateway.demo.upstream import (
    start_upstream as start_upstream_in_process,
)

API_KEY = "demo-upstream-key"
PII_PROMPT = "Please show me the PII for this customer."
CHAT = [{"role": "user", "content": "Say something about gateways."}]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_upstream() -> Iterator[peers.Peer]:
    with peers.start_upstream(token_delay_ms=1) as peer:
        yield peer


@pytest.fixture(scope="module")
def keyed_upstream() -> Iterator[peers.Peer]:
    with peers.start_upstream(api_key=API_KEY, token_delay_ms=1) as peer:
        yield peer


@pytest.fixture(scope="module")
def demo_issuer() -> Iterator[peers.Peer]:
    with peers.start_issuer() as peer:
        yield peer


@pytest.fixture
def client(demo_upstream: peers.Peer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{demo_upstream.url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def aclient(demo_upstream: peers.Peer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{demo_upstream.url}/v1", api_key="unused", max_retries=0
    ) as sdk:
        yield sdk


def sse_events(body: bytes) -> list[Any]:
    """The JSON payloads of an SSE body, [DONE] as the string "[DONE]"."""
    events = []
    for block in body.split(b"\n\n"):
        if block.startswith(b"data: "):
            data = block.removeprefix(b"data: ")
            events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return events


def wait_for(condition: Any, timeout: float = 5.0) -> Any:
    """Poll until `condition()` is truthy; the server notices disconnects asynchronously."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)
    return result


# --- OpenAI SDK against the upstream ----------------------------------------------------------


def test_sync_chat_completion_has_openai_shape(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="llama-3-8b-instruct", messages=CHAT, max_tokens=12
    )
    completion = raw.parse()
    assert raw.headers["x-model-version"] == MODEL_VERSION
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "llama-3-8b-instruct"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 12


def test_sync_chat_stream_matches_non_streamed_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="m", messages=CHAT, max_tokens=20)
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=CHAT,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices]
    assert "".join(filter(None, content)) == whole.choices[0].message.content
    assert sum(1 for c in content if c) == 20  # one event per token
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 20


def test_stream_without_include_usage_sends_no_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=CHAT, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_chat_stream_and_non_stream(aclient: openai.AsyncOpenAI) -> None:
    whole = await aclient.chat.completions.create(model="m", messages=CHAT, max_tokens=8)
    stream = await aclient.chat.completions.create(
        model="m", messages=CHAT, max_tokens=8, stream=True
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == whole.choices[0].message.content


async def test_async_completions_stream_and_non_stream(aclient: openai.AsyncOpenAI) -> None:
    whole = await aclient.completions.create(model="m", prompt="Once upon", max_tokens=10)
    assert whole.object == "text_completion"
    assert whole.choices[0].finish_reason == "length"
    stream = await aclient.completions.create(
        model="m", prompt="Once upon", max_tokens=10, stream=True
    )
    parts = [c.choices[0].text async for c in stream if c.choices]
    assert "".join(parts) == whole.choices[0].text


def test_sync_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="m", prompt=["ignored", "used"], max_tokens=5)
    again = client.completions.create(model="m", prompt="used", max_tokens=5)
    assert completion.choices[0].text == again.choices[0].text
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5


def _floats(embedding: list[float] | str) -> list[float]:
    """An explicitly requested base64 embedding comes back from the SDK undecoded."""
    if isinstance(embedding, str):
        raw = base64.b64decode(embedding)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return embedding


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_embeddings_are_deterministic_unit_vectors(
    client: openai.OpenAI, encoding_format: str | None
) -> None:
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    result = client.embeddings.create(
        model="text-embedding-demo", input=["a", "b"], dimensions=32, **extra
    )
    again = client.embeddings.create(model="text-embedding-demo", input="a", dimensions=32)
    assert result.model == "text-embedding-demo"
    vectors = [_floats(item.embedding) for item in result.data]
    assert [len(v) for v in vectors] == [32, 32]
    assert math.isclose(math.fsum(x * x for x in vectors[0]), 1.0, rel_tol=1e-5)
    assert vectors[0] != vectors[1]
    assert vectors[0] == pytest.approx(again.data[0].embedding, rel=1e-6)


async def test_async_models(aclient: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in aclient.models.list()]
    assert models == list(MODELS)


def test_answers_are_deterministic(client: openai.OpenAI) -> None:
    def ask(text: str) -> Any:
        return client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}], max_tokens=16
        )

    first, second, other = ask("same"), ask("same"), ask("different")
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.id == second.id
    assert other.choices[0].message.content != first.choices[0].message.content


def test_bad_request_gets_openai_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=CHAT, max_tokens=-1)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_max_tokens"


# --- PII ----------------------------------------------------------------------------------------


def test_pii_answer_splits_every_value_across_events(demo_upstream: peers.Peer) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": PII_PROMPT}],
        "stream": True,
    }
    response = httpx.post(f"{demo_upstream.url}/v1/chat/completions", json=body)
    tokens = [
        e["choices"][0]["delta"].get("content", "")
        for e in sse_events(response.content)
        if e != "[DONE]" and e["choices"]
    ]
    text = "".join(tokens)
    for name, value in pii.VALUES.items():
        start = text.index(value)
        # Map the value's characters back to the events that carried them.
        offsets = [0]
        for token in tokens:
            offsets.append(offsets[-1] + len(token))
        carriers = {i for i in range(len(tokens)) if offsets[i] < start + len(value)}
        carriers &= {i for i in range(len(tokens)) if offsets[i + 1] > start}
        assert len(carriers) >= 2, name
        assert not any(value in token for token in tokens), name


def test_pii_only_when_asked(client: openai.OpenAI) -> None:
    def ask(text: str) -> str:
        completion = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}], max_tokens=300
        )
        return completion.choices[0].message.content or ""

    assert pii.EMAIL in ask("pii please")
    assert pii.EMAIL in ask("PII?")
    assert not any(v in ask("a happy answer, no secrets") for v in pii.VALUES.values())
    assert pii.EMAIL not in ask("spiing is not the word")


def _luhn_valid(number: str) -> bool:
    digits = [int(c) for c in reversed(re.sub(r"\D", "", number))]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def test_pii_values_pass_real_validators() -> None:
    assert _luhn_valid(pii.CREDIT_CARD)
    assert " " in pii.CREDIT_CARD
    assert _luhn_valid(pii.CREDIT_CARD_DASHED)
    assert "-" in pii.CREDIT_CARD_DASHED
    area, group, serial = pii.SSN.split("-")
    assert area not in {"000", "666"} and not area.startswith("9")
    assert group != "00" and serial != "0000"
    rearranged = pii.IBAN[4:] + pii.IBAN[:4]
    assert int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    assert re.fullmatch(r"AKIA[A-Z0-9]{16}", pii.AWS_ACCESS_KEY_ID)
    assert re.fullmatch(r"sk-[A-Za-z0-9_-]{40,}", pii.OPENAI_API_KEY)
    assert re.fullmatch(r"ghp_[A-Za-z0-9]{36}", pii.GITHUB_TOKEN)
    assert re.fullmatch(r"\(?[2-9]\d\d\)? [2-9]\d\d-\d{4}", pii.PHONE)
    assert all(0 <= int(octet) <= 255 for octet in pii.IPV4.split("."))
    assert re.fullmatch(r"[\w.]+@[\w-]+\.\w+", pii.EMAIL)


# --- API key ------------------------------------------------------------------------------------


def test_api_key_is_enforced(keyed_upstream: peers.Peer) -> None:
    base = f"{keyed_upstream.url}/v1"
    for wrong in ("wrong", API_KEY + "x"):
        sdk = openai.OpenAI(base_url=base, api_key=wrong, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.models.list()
        assert caught.value.code == "invalid_api_key"
    assert httpx.post(f"{base}/chat/completions", json={}).status_code == 401
    good = openai.OpenAI(base_url=base, api_key=API_KEY, max_retries=0)
    assert good.chat.completions.create(model="m", messages=CHAT).choices
    assert peers.upstream_stats(keyed_upstream.url)["requests"] >= 4  # /_demo/ needs no key


# --- failure modes ------------------------------------------------------------------------------


def _chat_body(model: str, *, stream: bool, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": CHAT, "stream": stream, **extra}


def test_fail_500(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="fail-500", messages=CHAT)
    assert caught.value.status_code == 500
    assert caught.value.code == "demo_failure"


def test_fail_malformed_json(demo_upstream: peers.Peer) -> None:
    response = httpx.post(
        f"{demo_upstream.url}/v1/chat/completions",
        json=_chat_body("fail-malformed-json", stream=False),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize("stream", [True, False])
def test_fail_invalid_utf8(demo_upstream: peers.Peer, stream: bool) -> None:
    response = httpx.post(
        f"{demo_upstream.url}/v1/chat/completions",
        json=_chat_body("fail-invalid-utf8", stream=stream),
    )
    assert response.status_code == 200
    assert INVALID_UTF8 in response.content
    with pytest.raises(UnicodeDecodeError):
        response.content.decode("utf-8")
    if stream:  # the bad bytes sit inside one content string of an otherwise valid stream
        assert response.content.endswith(b"data: [DONE]\n\n")
        bad = [e for e in response.content.split(b"\n\n") if INVALID_UTF8 in e]
        assert len(bad) == 1
        assert b'"content":"' + INVALID_UTF8 + b'"' in bad[0]


@pytest.mark.parametrize("stream", [True, False])
def test_fail_close_early(demo_upstream: peers.Peer, stream: bool) -> None:
    url = f"{demo_upstream.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=_chat_body("fail-close-early", stream=stream)) as response:
        assert response.status_code == 200
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for part in response.iter_raw():
                received += part
    assert received  # part of the body arrived before the connection was cut
    if stream:
        assert b"data: [DONE]" not in received


def test_fail_slow_headers(demo_upstream: peers.Peer) -> None:
    url = f"{demo_upstream.url}/v1/chat/completions"
    body = _chat_body("fail-slow-headers", stream=False)
    started = time.monotonic()
    response = httpx.post(url, json=body, headers={"x-demo-delay-s": "0.5"})
    assert time.monotonic() - started >= 0.5
    assert response.json()["model"] == "fail-slow-headers"
    with pytest.raises(httpx.ReadTimeout):  # default delay: 30 s
        httpx.post(url, json=body, timeout=httpx.Timeout(5.0, read=0.5))


@pytest.mark.parametrize("stream", [True, False])
def test_fail_stall_stream_holds_connection_until_client_leaves(
    demo_upstream: peers.Peer, stream: bool
) -> None:
    peers.upstream_reset(demo_upstream.url)
    url = f"{demo_upstream.url}/v1/chat/completions"
    body = _chat_body("fail-stall-stream", stream=stream)
    with httpx.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        parts = response.iter_raw()  # held: a dropped iterator closes the connection
        assert next(parts)
        time.sleep(0.3)  # nothing more comes, and the connection stays open
        stats = peers.upstream_stats(demo_upstream.url)
        assert stats["open_connections"] == 1
        assert stats["streams_started"] == 1
        assert stats["streams_cancelled"] == stats["streams_completed"] == 0
    stats = wait_for(
        lambda: (s := peers.upstream_stats(demo_upstream.url))["streams_cancelled"] and s
    )
    assert stats["streams_started"] == 1
    assert stats["open_connections"] == 0


def test_failure_modes_are_all_covered() -> None:
    covered = {
        "fail-500",
        "fail-malformed-json",
        "fail-invalid-utf8",
        "fail-close-early",
        "fail-slow-headers",
        "fail-stall-stream",
    }
    assert set(FAILURE_MODES) == covered


# --- introspection ------------------------------------------------------------------------------


def test_client_disconnect_mid_stream_counts_as_cancelled(demo_upstream: peers.Peer) -> None:
    peers.upstream_reset(demo_upstream.url)
    body = _chat_body("m", stream=True, max_tokens=200)
    headers = {"x-demo-token-delay-ms": "20"}
    url = f"{demo_upstream.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert peers.upstream_stats(demo_upstream.url)["streams_started"] == 1
    stats = wait_for(
        lambda: (s := peers.upstream_stats(demo_upstream.url))["streams_cancelled"] and s
    )
    assert stats["streams_completed"] == 0
    assert wait_for(lambda: peers.upstream_stats(demo_upstream.url)["open_connections"] == 0)
    httpx.post(url, json=_chat_body("m", stream=True, max_tokens=3))
    assert peers.upstream_stats(demo_upstream.url)["streams_completed"] == 1


def test_requests_log_records_what_arrived(demo_upstream: peers.Peer) -> None:
    peers.upstream_reset(demo_upstream.url)
    body = json.dumps(_chat_body("llama-3-8b-instruct", stream=False)).encode()
    headers = {"Authorization": "Bearer caller-token", "Content-Type": "application/json"}
    httpx.post(f"{demo_upstream.url}/v1/chat/completions?x=1", content=body, headers=headers)
    [seen] = peers.upstream_requests(demo_upstream.url)
    assert seen["method"] == "POST"
    assert seen["path"] == "/v1/chat/completions"
    assert seen["query"] == "x=1"
    assert ["Authorization", "Bearer caller-token"] in seen["headers"]
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert seen["model"] == "llama-3-8b-instruct"


def test_requests_log_keeps_last_hundred(demo_upstream: peers.Peer) -> None:
    peers.upstream_reset(demo_upstream.url)
    with httpx.Client() as http:
        for i in range(105):
            http.post(f"{demo_upstream.url}/v1/embeddings", json={"model": f"m{i}", "input": "x"})
    seen = peers.upstream_requests(demo_upstream.url)
    assert [r["model"] for r in seen] == [f"m{i}" for i in range(5, 105)]
    assert peers.upstream_stats(demo_upstream.url)["requests"] == 105


# --- process lifecycle --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_servers_exit_cleanly_on_signal(sig: signal.Signals) -> None:
    for peer in (peers.start_upstream(), peers.start_issuer()):
        peer.proc.send_signal(sig)
        assert peer.proc.wait(5) == 0, peer.stderr()
        assert peer.stop() == 0


def test_sigterm_does_not_wait_for_a_stalled_stream() -> None:
    with peers.start_upstream() as peer:
        url = f"{peer.url}/v1/chat/completions"
        body = _chat_body("fail-stall-stream", stream=True)
        with httpx.stream("POST", url, json=body, timeout=10.0) as response:
            parts = response.iter_raw()  # held: a dropped iterator closes the connection
            assert next(parts)
            # exit 0 within the stop timeout: a server waiting on the stream is SIGKILLed (-9)
            assert peer.stop() == 0


def test_spawn_failure_names_the_problem() -> None:
    with pytest.raises(peers.PeerStartError, match="No module named"):
        peers.spawn_demo("no_such_server")


async def test_in_process_servers() -> None:
    upstream_runner, upstream_url = await start_upstream_in_process(
        "127.0.0.1", 0, api_key="k", token_delay_ms=0
    )
    issuer_runner, demo_issuer, issuer_url = await start_issuer_in_process("127.0.0.1", 0)
    try:
        sdk = openai.AsyncOpenAI(base_url=f"{upstream_url}/v1", api_key="k", max_retries=0)
        stream = await sdk.chat.completions.create(model="m", messages=CHAT, stream=True)
        assert [c async for c in stream]
        await sdk.close()
        token = demo_issuer.mint("alice", ["analysts"])
        assert jwt.decode(token, options={"verify_signature": False})["iss"] == issuer_url
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{issuer_url}/jwks")).status_code == 200
    finally:
        await asyncio.gather(upstream_runner.cleanup(), issuer_runner.cleanup())


# --- issuer -------------------------------------------------------------------------------------


def _verify(issuer_url: str, token: str, **options: Any) -> dict[str, Any]:
    """Verify the way a relying party does: discovery, then JWKS, then the signature."""
    discovery = httpx.get(f"{issuer_url}/.well-known/openid-configuration").json()
    key = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key,
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience="inference-gateway",
        issuer=discovery["issuer"],
        **options,
    )


def test_discovery_document(demo_issuer: peers.Peer) -> None:
    discovery = httpx.get(f"{demo_issuer.url}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == demo_issuer.url
    assert discovery["jwks_uri"] == f"{demo_issuer.url}/jwks"
    assert set(discovery["id_token_signing_alg_values_supported"]) == {"RS256", "ES256", "EdDSA"}


def test_jwks_publishes_one_key_per_algorithm(demo_issuer: peers.Peer) -> None:
    keys = httpx.get(f"{demo_issuer.url}/jwks").json()["keys"]
    assert sorted(k["alg"] for k in keys) == ["ES256", "EdDSA", "RS256"]
    assert all(k["use"] == "sig" and k["kid"] for k in keys)
    assert len({k["kid"] for k in keys}) == 3
    assert all("d" not in k for k in keys)  # public halves only
    rsa_key = next(k for k in keys if k["alg"] == "RS256")
    assert len(base64.urlsafe_b64decode(rsa_key["n"] + "==")) * 8 == 2048
    assert {k["crv"] for k in keys if k["kty"] != "RSA"} == {"P-256", "Ed25519"}


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_minted_tokens_verify(demo_issuer: peers.Peer, alg: str) -> None:
    token = peers.mint(demo_issuer.url, "alice", ["analysts", "ops"], alg=alg)
    assert jwt.get_unverified_header(token)["alg"] == alg
    claims = _verify(demo_issuer.url, token)
    assert claims["sub"] == "alice"
    assert claims["groups"] == ["analysts", "ops"]
    assert claims["exp"] - claims["iat"] == 3600


def test_token_options(demo_issuer: peers.Peer) -> None:
    expired = peers.mint(demo_issuer.url, "a", [], exp_offset_s=-120)
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(demo_issuer.url, expired)
    early = peers.mint(demo_issuer.url, "a", [], nbf_offset_s=600)
    with pytest.raises(jwt.ImmatureSignatureError):
        _verify(demo_issuer.url, early)
    foreign = peers.mint(demo_issuer.url, "a", [], iss="https://evil.example")
    with pytest.raises(jwt.InvalidIssuerError):
        _verify(demo_issuer.url, foreign)
    other_audience = peers.mint(demo_issuer.url, "a", [], aud="someone-else")
    with pytest.raises(jwt.InvalidAudienceError):
        _verify(demo_issuer.url, other_audience)
    unknown_kid = peers.mint(demo_issuer.url, "a", [], kid="no-such-kid")
    assert jwt.get_unverified_header(unknown_kid)["kid"] == "no-such-kid"
    with pytest.raises(jwt.PyJWKClientError):
        _verify(demo_issuer.url, unknown_kid)
    nested = peers.mint(
        demo_issuer.url,
        "a",
        ["x", "y"],
        groups_as_string=True,
        ttl_s=60,
        claims={"realm_access": {"roles": ["underwriters"]}},
    )
    claims = _verify(demo_issuer.url, nested)
    assert claims["groups"] == "x y"
    assert claims["realm_access"] == {"roles": ["underwriters"]}
    assert claims["exp"] - claims["iat"] == 60


def test_bad_token_requests_are_refused(demo_issuer: peers.Peer) -> None:
    url = f"{demo_issuer.url}/_demo/token"
    assert httpx.post(url, json={"sub": "a", "alg": "HS256"}).status_code == 400
    assert httpx.post(url, json={"groups": []}).status_code == 400
    assert httpx.post(url, content=b"not json").status_code == 400
    assert httpx.post(url, json={"sub": "a", "nbf_offset_s": "soon"}).status_code == 400


def test_rotation_replaces_the_key(demo_issuer: peers.Peer) -> None:
    old_token = peers.mint(demo_issuer.url, "a", [], alg="ES256")
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    rotated = peers.rotate(demo_issuer.url, "ES256")
    assert rotated["removed_kid"] == old_kid
    assert rotated["kid"] != old_kid
    kids = {k["kid"] for k in httpx.get(f"{demo_issuer.url}/jwks").json()["keys"]}
    assert rotated["kid"] in kids
    assert old_kid not in kids
    with pytest.raises(jwt.PyJWKClientError):
        _verify(demo_issuer.url, old_token)
    new_token = peers.mint(demo_issuer.url, "a", [], alg="ES256")
    assert jwt.get_unverified_header(new_token)["kid"] == rotated["kid"]
    assert _verify(demo_issuer.url, new_token)["sub"] == "a"


def test_rotation_can_keep_the_old_key(demo_issuer: peers.Peer) -> None:
    old_token = peers.mint(demo_issuer.url, "a", [], alg="EdDSA")
    rotated = peers.rotate(demo_issuer.url, "EdDSA", keep_old=True)
    assert rotated["removed_kid"] is None
    assert _verify(demo_issuer.url, old_token)["sub"] == "a"
    new_token = peers.mint(demo_issuer.url, "a", [], alg="EdDSA")
    assert jwt.get_unverified_header(new_token)["kid"] == rotated["kid"]
    assert _verify(demo_issuer.url, new_token)["sub"] == "a"


def test_outage_and_fetch_counts(demo_issuer: peers.Peer) -> None:
    before = peers.issuer_stats(demo_issuer.url)
    peers.outage(demo_issuer.url, True)
    try:
        assert httpx.get(f"{demo_issuer.url}/.well-known/openid-configuration").status_code == 503
        assert httpx.get(f"{demo_issuer.url}/jwks").status_code == 503
        token = peers.mint(
            demo_issuer.url, "a", []
        )  # minting still works: only publication is down
    finally:
        peers.outage(demo_issuer.url, False)
    assert _verify(demo_issuer.url, token)["sub"] == "a"
    after = peers.issuer_stats(demo_issuer.url)
    assert after["discovery_fetches"] - before["discovery_fetches"] == 2
    assert after["jwks_fetches"] - before["jwks_fetches"] == 2


def test_public_key_pem_is_the_published_rsa_key(demo_issuer: peers.Peer) -> None:
    pem = httpx.get(f"{demo_issuer.url}/_demo/public-key-pem", params={"alg": "RS256"}).text
    public = serialization.load_pem_public_key(pem.encode())
    token = peers.mint(demo_issuer.url, "a", [])
    assert jwt.decode(token, public, algorithms=["RS256"], audience="inference-gateway")
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")  # the bytes an HS256 forgery keys on
