"""A body the gateway and a lenient upstream would read differently never reaches a rule.

Through the real gateway: bodies Python's `json` (and most model servers) read as
`{"model": "big-1"}` or `{"model": "risk-model"}` but orjson rejects or reads otherwise are
refused with 400 before policy, so neither the deny rule nor the approval can be skipped.
"""

from __future__ import annotations

import json

import httpx
import peers
import pytest
from conftest import gateway_config

PARSER_RULES = """
[[rules]]
id = "big-denied"
groups = ["parsers"]
models = ["big-*"]
action = "deny"

[[rules]]
id = "risk-approved"
groups = ["parsers"]
models = ["risk-*"]
action = "approve"
approvers = ["risk-officers"]

[[rules]]
id = "parsers-anything-else"
groups = ["parsers"]
connections = ["llama"]
action = "allow"
"""

BIG = '{"model": "big-1", "messages": [{"role": "user", "content": "hi"}]}'
# Each is read by Python's json with model "big-1" (or, for the nested ones, as a document a
# masker and the upstream could read differently); orjson refuses or reads it otherwise.
DIFFERENTIAL = {
    "utf8-bom": (b"\xef\xbb\xbf" + BIG.encode(), "invalid_json"),
    "utf16-bom": (BIG.encode("utf-16"), "invalid_json"),
    "utf16-le-no-bom": (BIG.encode("utf-16-le"), "invalid_json"),
    "utf32-be": (BIG.encode("utf-32-be"), "invalid_json"),
    "nan-member": (BIG.replace('"hi"}]', '"hi"}], "temperature": NaN').encode(), "invalid_json"),
    "infinity-member": (BIG.replace("}]}", '}], "top_p": -Infinity}').encode(), "invalid_json"),
    "duplicate-model": (b'{"model": "big-1", "model": "llama-3-8b"}', "duplicate_json_key"),
    "duplicate-model-last": (b'{"model": "llama-3-8b", "model": "big-1"}', "duplicate_json_key"),
    "nested-duplicate": (
        b'{"model": "x", "messages": [{"role": "user", "content": "a", "content": "b"}]}',
        "duplicate_json_key",
    ),
    "model-not-a-string": (b'{"model": ["big-1"]}', "invalid_model"),
}


@pytest.fixture(scope="module")
def parser_gateway(start_gateway, issuer, upstream, tmp_path_factory) -> peers.Peer:
    store = tmp_path_factory.mktemp("approvals") / "approvals.db"
    config = gateway_config(issuer.url, upstream.url) + PARSER_RULES
    return start_gateway(config + f'\n[approvals]\nstore = "sqlite://{store}"\n')


@pytest.fixture(scope="module")
def parser_token(issuer) -> str:
    return peers.mint(issuer.url, "pat@example.com", ["parsers"])


def post(gateway: peers.Peer, token: str, body: bytes, content_type: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"}
    if content_type:
        headers["content-type"] = content_type
    return httpx.post(f"{gateway.url}/llama/v1/chat/completions", content=body, headers=headers)


@pytest.mark.parametrize("content_type", ["application/json", None, "text/plain"])
@pytest.mark.parametrize("case", sorted(DIFFERENTIAL))
def test_lenient_only_body_is_refused_before_policy(
    parser_gateway, upstream, parser_token, case, content_type
) -> None:
    body, code = DIFFERENTIAL[case]
    peers.upstream_reset(upstream.url)
    response = post(parser_gateway, parser_token, body, content_type)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("gateway_error", code)
    assert "big-1" not in error["message"] and "llama" not in error["message"]
    assert peers.upstream_requests(upstream.url) == []


def test_risk_model_in_utf16_does_not_skip_approval(parser_gateway, upstream, parser_token):
    peers.upstream_reset(upstream.url)
    body = '{"model": "risk-model", "messages": []}'.encode("utf-16")
    response = post(parser_gateway, parser_token, body, "application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    # The strict form of the same request is held for approval, as the rule says.
    strict = post(parser_gateway, parser_token, body.decode("utf-16").encode(), None)
    assert strict.status_code == 202
    assert peers.upstream_requests(upstream.url) == []


REPRESENTATIVE = [
    b'{"model": "big-1"}',
    b'  \n{"model": "big-1"}',
    b'[{"model": "big-1"}]',
    b'{"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}',
    b'{"model": "big-1", "x": 1e308}',
    b'{"model": "big-\\u0031"}',
    b'{"model": "big-1", "x": 123456789012345678901234567890}',
    b'{"model": "\\ud800big"}',
]


@pytest.mark.parametrize("body", REPRESENTATIVE)
def test_model_decided_is_model_json_reads(parser_gateway, upstream, parser_token, body) -> None:
    """What the policy decides on equals what Python's json reads, or the body is refused."""
    peers.upstream_reset(upstream.url)
    response = post(parser_gateway, parser_token, body, "application/json")
    read = json.loads(body)
    model = read.get("model") if isinstance(read, dict) else None
    seen = peers.upstream_requests(upstream.url)
    if response.status_code == 400 and response.json()["error"]["type"] == "gateway_error":
        assert seen == []
    elif model == "big-1":
        assert response.status_code == 403 and seen == []
    else:
        assert [s["model"] for s in seen] == [model]
