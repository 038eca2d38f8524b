"""PII masking in the real gateway: JSON bodies, SSE streams split anywhere, failures closed."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time

import httpx
import openai
import orjson
import peers
import pytest
from conftest import gateway_config

from gateway._masker import DEFAULT_REQUEST_PATHS, Masker
from gateway.demo import pii

MASKED = """
[[rules]]
id = "masked-chat"
groups = ["maskees"]
connections = ["llama"]
action = "allow"
mask = ["all"]
mask_request = true
"""
PROMPT = [{"role": "user", "content": f"show me the pii for {pii.EMAIL}"}]


@pytest.fixture(scope="module")
def masking_gateway(start_gateway, issuer, upstream) -> peers.Peer:
    return start_gateway(gateway_config(issuer.url, upstream.url) + MASKED)


@pytest.fixture(scope="module")
def token(issuer) -> str:
    return peers.mint(issuer.url, "mo@example.com", ["maskees"])


def sdk(gateway: peers.Peer, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/llama/v1", api_key=token, max_retries=0)


def assert_no_pii(text: str) -> None:
    for name, value in pii.VALUES.items():
        assert value not in text, name
    digits = text.replace(" ", "").replace("-", "")
    assert "4539148803436467" not in digits and "5529041278364596" not in digits


def test_json_answer_masked(masking_gateway, token) -> None:
    answer = sdk(masking_gateway, token).chat.completions.create(
        model="llama-3-8b", messages=PROMPT, max_tokens=200
    )
    text = answer.choices[0].message.content
    assert_no_pii(text)
    for tag in ("[EMAIL]", "[PHONE]", "[CREDIT_CARD]", "[US_SSN]", "[IBAN]", "[AWS_ACCESS_KEY]"):
        assert tag in text


def test_unmasked_rule_control(gateway, analyst_token) -> None:
    """The same request under a rule without masking does carry the PII (the test can fail)."""
    answer = sdk(gateway, analyst_token).chat.completions.create(
        model="llama-3-8b", messages=PROMPT, max_tokens=200
    )
    assert pii.EMAIL in answer.choices[0].message.content


def test_stream_masked_across_events_without_waiting_for_the_end(masking_gateway, token):
    started = time.perf_counter()
    stream = sdk(masking_gateway, token).chat.completions.create(
        model="llama-3-8b",
        messages=PROMPT,
        stream=True,
        extra_headers={"x-demo-token-delay-ms": "10"},
    )
    arrivals, text = [], ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - started)
            text += chunk.choices[0].delta.content
    assert_no_pii(text)
    assert "[EMAIL]" in text and "[CREDIT_CARD]" in text
    # ~124 tokens at 10 ms: the first text arrives long before the last.
    assert arrivals[0] < arrivals[-1] / 3


def test_request_masked_before_it_goes_upstream(masking_gateway, upstream, token) -> None:
    peers.upstream_reset(upstream.url)
    body = orjson.dumps({"model": "llama-3-8b", "messages": PROMPT, "max_tokens": 3})
    response = httpx.post(
        f"{masking_gateway.url}/llama/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert response.status_code == 200
    seen = peers.upstream_requests(upstream.url)[-1]
    expected, counts = Masker(["all"], paths=DEFAULT_REQUEST_PATHS).mask_json(body)
    assert counts == {"email": 1}
    assert seen["body_sha256"] == hashlib.sha256(expected).hexdigest()
    assert seen["body_sha256"] != hashlib.sha256(body).hexdigest()


def test_malformed_json_from_upstream_is_502(masking_gateway, token) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        sdk(masking_gateway, token).chat.completions.create(
            model="fail-malformed-json", messages=PROMPT
        )
    assert err.value.status_code == 502
    assert err.value.body["code"] == "masking_failed"


def test_invalid_utf8_in_stream_never_reaches_client(masking_gateway, token) -> None:
    response = httpx.post(
        f"{masking_gateway.url}/llama/v1/chat/completions",
        json={"model": "fail-invalid-utf8", "messages": PROMPT, "stream": True},
        headers={"authorization": f"Bearer {token}"},
    )
    assert b"\xff\xfe" not in response.content
    if response.status_code == 200:  # failed mid-stream: ended with an error event
        assert b'"code":"masking_failed"' in response.content
    else:
        assert response.status_code == 502


def test_masked_counts_in_metrics(masking_gateway, token) -> None:
    sdk(masking_gateway, token).chat.completions.create(model="llama-3-8b", messages=PROMPT)
    metrics = httpx.get(f"{masking_gateway.url}/_gateway/metrics").text
    assert 'gateway_masked_entities_total{entity="email"}' in metrics


STYLED = """
[[rules]]
id = "hashed"
groups = ["hashers"]
connections = ["llama"]
action = "allow"
mask = ["email", "credit_card"]
mask_style = "hash"

[[rules]]
id = "partial"
groups = ["partials"]
connections = ["llama"]
action = "allow"
mask = ["email", "credit_card"]
mask_style = "partial"

[masking]
hash_key = "{key}"
"""


def test_hash_and_partial_styles_through_the_gateway(start_gateway, issuer, upstream, tmp_path):
    subprocess.run(["gateway", "keys", "init", "--dir", str(tmp_path)], check=True)
    config = gateway_config(issuer.url, upstream.url) + STYLED.format(key=tmp_path / "masking.key")
    gateway = start_gateway(config)
    hashed = peers.mint(issuer.url, "h@example.com", ["hashers"])
    answers = [
        sdk(gateway, hashed)
        .chat.completions.create(model="m", messages=PROMPT)
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    tokens = [re.findall(r"\[EMAIL:[0-9a-f]{8}\]", a) for a in answers]
    assert tokens[0] and tokens[0] == tokens[1]  # same value, same pseudonym
    assert pii.EMAIL not in answers[0]
    partial = peers.mint(issuer.url, "p@example.com", ["partials"])
    text = sdk(gateway, partial).chat.completions.create(model="m", messages=PROMPT)
    content = text.choices[0].message.content
    assert pii.CREDIT_CARD not in content and "6467" in content
