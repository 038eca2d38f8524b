"""Bedrock and Vertex AI streams under a masking rule, end to end.

The caller is botocore's own bedrock-runtime client, authenticating to the gateway with its
bearer-token support (AWS_BEARER_TOKEN_BEDROCK = the caller's OIDC token) and parsing the event
stream itself; the gateway signs upstream with SigV4 and the cloud peer verifies it.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import botocore.exceptions
import botocore.session
import cloud_peer
import httpx
import orjson
import peers
import pytest
from test_cloud_auth import AWS_ENV, AWS_KEY, AWS_SECRET, cloud_config, sigv4_connection
from test_eventstream import streamed_text
from tlsfiles import TestCa

from gateway._masker import Masker
from gateway.demo import pii

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
MASKED_TEXT = Masker(["all"]).mask_text(pii.TEXT)[0]
VERTEX = "/vertex/v1/projects/p/locations/us-central1/publishers/google/models/gemini"


@pytest.fixture(scope="module")
def peer() -> Iterator[peers.Peer]:
    with cloud_peer.start("--aws-access-key", AWS_KEY, "--aws-secret-key", AWS_SECRET) as p:
        yield p


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def masking_gateway(start_gateway, issuer, peer, ca) -> peers.Peer:
    """Over HTTPS: botocore sends a bearer token to https endpoints only (since 1.44)."""
    connections = sigv4_connection(peer.url) + sigv4_connection(peer.url, "vertex")
    server = ca.issue("gateway")
    config = cloud_config(issuer.url, connections, 'mask = ["all"]').replace(
        "reload_poll_s = 0\n",
        f'reload_poll_s = 0\ntls_cert = "{server.cert}"\ntls_key = "{server.key}"\n',
        1,
    )
    gateway = start_gateway(config, AWS_ENV)
    gateway.verify = ssl.create_default_context(cafile=ca.pem)  # type: ignore[attr-defined]
    return gateway


@pytest.fixture(scope="module")
def token(issuer) -> str:
    return peers.mint(issuer.url, "streams@example.com", ["analysts"])


@pytest.fixture
def bedrock(masking_gateway, token, ca, monkeypatch: pytest.MonkeyPatch):
    """botocore's bedrock-runtime client pointed at the gateway's `bedrock` connection."""
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", token)
    session = botocore.session.Session()
    return session.create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"{masking_gateway.url}/bedrock",
        verify=str(ca.pem),
    )


def assert_no_pii(text: str) -> None:
    for value in pii.VALUES.values():
        assert value not in text


def test_invoke_with_response_stream_is_masked_across_messages(bedrock, peer) -> None:
    response = bedrock.invoke_model_with_response_stream(
        modelId=MODEL_ID, body=orjson.dumps({"anthropic_version": "bedrock-2023-05-31"})
    )
    chunks = [orjson.loads(event["chunk"]["bytes"]) for event in response["body"]]
    text = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    assert text == MASKED_TEXT
    assert_no_pii(orjson.dumps(chunks).decode())
    assert [c["type"] for c in chunks][-3:] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert cloud_peer.seen(peer.url)[-1]["verified"]


def test_converse_stream_is_masked_across_messages(bedrock) -> None:
    response = bedrock.converse_stream(
        modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": "hello"}]}]
    )
    events = list(response["stream"])
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text == MASKED_TEXT
    assert_no_pii(repr(events))
    assert "messageStop" in events[-2] and "metadata" in events[-1]


@pytest.mark.parametrize("one_write", [False, True], ids=["message by message", "one write"])
def test_a_broken_frame_mid_stream_ends_the_stream_with_an_exception(
    masking_gateway, token, ca, monkeypatch, one_write
) -> None:
    """The peer breaks the CRC of the fourth message: the client gets the three masked
    messages before it, then an exception message its SDK raises; nothing unmasked, nothing
    after; the same whether the peer sent the messages one by one or in one piece."""
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", token)
    client = botocore.session.Session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"{masking_gateway.url}/bedrock",
        verify=str(ca.pem),
    )
    client.meta.events.register(
        "before-sign.bedrock-runtime.*",
        lambda request, **_: request.headers.__setitem__("x-peer-corrupt", "crc"),
    )
    if one_write:
        client.meta.events.register(
            "before-sign.bedrock-runtime.*",
            lambda request, **_: request.headers.__setitem__("x-peer-one-write", "1"),
        )
    response = client.converse_stream(
        modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": "hello"}]}]
    )
    received = []
    with pytest.raises(
        botocore.exceptions.EventStreamError, match=r"MaskingFailed.*could not be masked"
    ):
        received.extend(response["stream"])
    assert len(received) == 3
    assert_no_pii(repr(received))


def test_vertex_sse_stream_is_masked_across_events(masking_gateway, token) -> None:
    with httpx.stream(
        "POST",
        f"{masking_gateway.url}{VERTEX}:streamGenerateContent?alt=sse",
        json={"contents": [{"role": "user", "parts": [{"text": "hello"}]}]},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
        verify=masking_gateway.verify,
    ) as response:
        body = response.read().decode()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [orjson.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert text == MASKED_TEXT
    assert_no_pii(body)


def test_vertex_json_array_stream_is_masked_across_chunks(masking_gateway, token) -> None:
    response = httpx.post(
        f"{masking_gateway.url}{VERTEX}:streamGenerateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "hello"}]}]},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
        verify=masking_gateway.verify,
    )
    assert response.status_code == 200
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) > 10
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == MASKED_TEXT
    assert_no_pii(response.text)


def test_vertex_and_bedrock_json_answers_are_masked(masking_gateway, token) -> None:
    auth = {"authorization": f"Bearer {token}"}
    vertex = httpx.post(
        f"{masking_gateway.url}{VERTEX}:generateContent",
        json={},
        headers=auth,
        verify=masking_gateway.verify,
    )
    invoke = httpx.post(
        f"{masking_gateway.url}/bedrock/model/{MODEL_ID}/invoke",
        json={},
        headers=auth,
        verify=masking_gateway.verify,
    )
    assert vertex.json()["candidates"][0]["content"]["parts"][0]["text"] == MASKED_TEXT
    assert invoke.json()["content"][0]["text"] == MASKED_TEXT


def test_a_small_event_stream_read_whole_is_masked_too(masking_gateway, token) -> None:
    """With a Content-Length the gateway reads a small answer whole: the same masking applies."""
    response = httpx.post(
        f"{masking_gateway.url}/bedrock/model/{MODEL_ID}/converse-stream",
        json={},
        headers={"authorization": f"Bearer {token}", "x-peer-whole": "1"},
        timeout=30,
        verify=masking_gateway.verify,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    assert streamed_text(response.content) == MASKED_TEXT
    assert_no_pii(response.content.decode("latin-1"))
