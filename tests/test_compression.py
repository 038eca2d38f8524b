"""Compressed answers under masking or credential redaction: decoded or refused, never unread.

The scripted upstream gzips or deflates when asked (or always, ignoring Accept-Encoding), or
names a coding the gateway cannot decode; clients accept gzip as SDKs do.
"""

from __future__ import annotations

import gzip

import httpx
import orjson
import peers
import pytest
from conftest import UPSTREAM_KEY, gateway_config

EMAIL = "bob.smith@example.com"
RULES = """
[[connections]]
name = "scripted"
upstream = "{url}"
credential_env = "TEST_UPSTREAM_KEY"

[[connections]]
name = "bare"
upstream = "{url}"

[[rules]]
id = "zip-masked"
groups = ["zippers"]
connections = ["scripted"]
action = "allow"
mask = ["email"]

[[rules]]
id = "zip-plain"
groups = ["plain-zippers"]
connections = ["scripted", "bare"]
action = "allow"
"""
ANSWER = orjson.dumps({"choices": [{"message": {"content": f"mail {EMAIL} now"}}]}).decode()
SSE = [
    'data: {"choices":[{"delta":{"content":"mail bob.smith@exa"}}]}\n\n',
    'data: {"choices":[{"delta":{"content":"mple.com now"},"finish_reason":"stop"}]}\n\n',
    "data: [DONE]\n\n",
]


@pytest.fixture(scope="module")
def zip_gateway(start_gateway, issuer, upstream, scripted) -> peers.Peer:
    return start_gateway(gateway_config(issuer.url, upstream.url) + RULES.format(url=scripted.url))


def call(
    gateway,
    issuer,
    scripted,
    name,
    chunks,
    content_type,
    group="zippers",
    connection="scripted",
    **spec,
):
    peers.script(scripted.url, name, chunks, [["content-type", content_type]], **spec)
    token = peers.mint(issuer.url, f"{group}@example.com", [group])
    response = httpx.post(
        f"{gateway.url}/{connection}/{name}",
        json={"model": "m"},
        headers={"authorization": f"Bearer {token}", "accept-encoding": "gzip, deflate"},
    )
    asked = peers.scripted_requests(scripted.url)[-1]["headers"].get("accept-encoding")
    return response, asked


@pytest.mark.parametrize("only_if_accepted", [True, False], ids=["when-asked", "always"])
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_masked_json_from_a_compressing_upstream(
    zip_gateway, issuer, scripted, encoding, only_if_accepted
):
    name = f"json-{encoding}-{only_if_accepted}"
    response, asked = call(
        zip_gateway, issuer, scripted, name, [ANSWER], "application/json",
        encoding=encoding, only_if_accepted=only_if_accepted, cut=9,
    )  # fmt: skip
    assert asked == "identity"
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "mail [EMAIL] now"


def test_masked_sse_stream_gzipped_anyway(zip_gateway, issuer, scripted) -> None:
    response, _ = call(
        zip_gateway, issuer, scripted, "sse-gzip", SSE, "text/event-stream", encoding="gzip", cut=11
    )
    assert response.status_code == 200 and EMAIL not in response.text
    contents = [
        orjson.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    assert "".join(contents) == "mail [EMAIL] now"


def test_coding_the_gateway_cannot_read_is_refused(zip_gateway, issuer, scripted) -> None:
    response, _ = call(
        zip_gateway, issuer, scripted, "br", [ANSWER], "application/json", encoding="br"
    )
    assert response.status_code == 502 and EMAIL not in response.text
    assert response.json()["error"]["code"] == "unsupported_encoding"
    assert "'br'" in response.json()["error"]["message"]


def test_corrupt_gzip_is_502(zip_gateway, issuer, scripted) -> None:
    body = gzip.compress(ANSWER.encode())[:-12].decode("latin-1")  # cut short: no trailer
    peers.script(
        scripted.url,
        "corrupt",
        [body],
        [["content-type", "application/json"], ["content-encoding", "gzip"]],
    )
    token = peers.mint(issuer.url, "zippers@example.com", ["zippers"])
    response = httpx.post(
        f"{zip_gateway.url}/scripted/corrupt",
        json={"model": "m"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"


def test_gzipped_credential_echo_is_redacted(zip_gateway, issuer, scripted) -> None:
    echo = ['{"error": {"message": "bad key {auth}"}}']
    response, asked = call(
        zip_gateway, issuer, scripted, "echo-gzip", echo, "application/json",
        group="plain-zippers", encoding="gzip", status=401,
    )  # fmt: skip
    assert asked == "identity" and response.status_code == 401
    assert UPSTREAM_KEY not in response.text and "bad key Bearer ****" in response.text


def test_untransformed_answer_keeps_its_coding(zip_gateway, issuer, scripted) -> None:
    """No masking and no credential: the gateway reads nothing, the client's coding passes."""
    response, asked = call(
        zip_gateway, issuer, scripted, "bare-gzip", [ANSWER], "application/json",
        group="plain-zippers", connection="bare", encoding="gzip", only_if_accepted=True,
    )  # fmt: skip
    assert asked == "gzip, deflate"
    assert response.headers["content-encoding"] == "gzip" and EMAIL in response.text


def test_compressed_request_body_is_refused_before_policy(zip_gateway, issuer, scripted) -> None:
    """A gzipped body hides its model from the policy; an upstream that inflates it would run it."""
    peers.script(scripted.url, "gz-request", ["{}"], [["content-type", "application/json"]])
    before = len(peers.scripted_requests(scripted.url))
    token = peers.mint(issuer.url, "plain-zippers@example.com", ["plain-zippers"])
    response = httpx.post(
        f"{zip_gateway.url}/scripted/gz-request",
        content=gzip.compress(b'{"model": "big-1"}'),
        headers={
            "authorization": f"Bearer {token}",
            "content-encoding": "gzip",
            "content-type": "application/json",
        },
    )
    assert (
        response.status_code == 415 and response.json()["error"]["code"] == "unsupported_encoding"
    )
    assert len(peers.scripted_requests(scripted.url)) == before
