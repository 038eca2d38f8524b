"""`GET /{connection}/v1/models`: the upstream's list cut to the models the caller may use.

A model is listed when a POST naming it to one of the OpenAI inference paths would be allowed
or held for approval by the caller's first matching rule. The upstream's list is read whole
(it is small), so an answer that is not an OpenAI model list is refused rather than passed on:
a list the gateway cannot filter would show models the caller has no business knowing of.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.identity import Identity
from gateway.policy import Policy, Request

MODELS_PATH = "/v1/models"
# Where a listed model would be used; a rule confined to other paths does not list it.
INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


def is_model_list(method: str, upstream_path: str) -> bool:
    return method == "GET" and upstream_path.rstrip("/") == MODELS_PATH


def filtered(body: bytes, policy: Policy, who: Identity, connection: str) -> bytes:
    """The list with only the models `who` may call on `connection`."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise GatewayError(
            502, "bad_model_list", "the upstream's model list is not an OpenAI model list"
        )

    def usable(entry: Any) -> bool:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            return False
        return any(
            policy.decide(
                Request(who.subject, who.groups, connection, entry["id"], path, "POST")
            ).action
            in ("allow", "approve")
            for path in INFERENCE_PATHS
        )

    document["data"] = [entry for entry in document["data"] if usable(entry)]
    return orjson.dumps(document)
