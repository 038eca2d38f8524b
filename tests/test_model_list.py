"""`GET /{connection}/v1/models` lists only the models the caller's rules let them call."""

from __future__ import annotations

import httpx
import openai
import peers
import pytest
from conftest import UPSTREAM_KEY


def config(issuer: str, upstream: str, store: str) -> str:
    return f"""
[server]
listen = "127.0.0.1:0"

[identity]
issuer = "{issuer}"
audience = "inference-gateway"

[approvals]
store = "sqlite:///{store}"

[[connections]]
name = "llama"
upstream = "{upstream}"
credential_env = "TEST_UPSTREAM_KEY"

[[rules]]
id = "list-models"
groups = ["*"]
methods = ["GET"]
paths = ["/v1/models"]
action = "allow"

[[rules]]
id = "no-70b"
groups = ["analysts"]
models = ["llama-3-70b*"]
action = "deny"

[[rules]]
id = "chat"
groups = ["analysts"]
models = ["llama-3*"]
paths = ["/v1/chat/completions"]
action = "allow"

[[rules]]
id = "embed"
groups = ["embedders"]
models = ["text-embedding-*"]
paths = ["/v1/embeddings"]
action = "allow"

[[rules]]
id = "risk"
groups = ["underwriters"]
models = ["credit-risk-*"]
action = "approve"
approvers = ["risk-officers"]
"""


@pytest.fixture(scope="module")
def gateway(start_gateway, issuer, upstream, tmp_path_factory):
    store = tmp_path_factory.mktemp("models") / "approvals.db"
    return start_gateway(config(issuer.url, upstream.url, str(store)))


@pytest.mark.parametrize(
    ("groups", "listed"),
    [
        (["analysts"], ["llama-3-8b-instruct"]),  # 70b is denied before the chat rule
        (["embedders"], ["text-embedding-demo"]),
        (["underwriters"], ["credit-risk-v1"]),  # approve rules list their models too
        (["analysts", "embedders"], ["llama-3-8b-instruct", "text-embedding-demo"]),
        (["interns"], []),
    ],
)
def test_list_holds_only_the_callers_models(gateway, issuer, groups, listed) -> None:
    token = peers.mint(issuer.url, "u", groups)
    sdk = openai.OpenAI(base_url=f"{gateway.url}/llama/v1", api_key=token, max_retries=0)
    assert [m.id for m in sdk.models.list().data] == listed


def test_the_upstream_lists_more(upstream) -> None:
    """The filter is the gateway's: the model server itself lists all four."""
    answer = httpx.get(
        f"{upstream.url}/v1/models", headers={"authorization": f"Bearer {UPSTREAM_KEY}"}
    )
    assert len(answer.json()["data"]) == 4
