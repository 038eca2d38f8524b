"""The embedded default config `gateway demo` runs on (also a readable example)."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from gateway.config import Config, parse

UPSTREAM_KEY_ENV = "DEMO_UPSTREAM_KEY"

TEMPLATE = """
[server]
listen = "127.0.0.1:{port}"

[identity]
issuer = "{issuer}"
audience = "inference-gateway"
groups_claim = "groups"
algorithms = ["RS256", "ES256", "EdDSA"]

[[connections]]
name = "llama"
upstream = "{upstream}"
credential_env = "{credential_env}"
model_version_header = "x-model-version"

[[rules]]
id = "interns-no-access"
groups = ["interns"]
action = "deny"

[[rules]]
id = "analysts-chat"
groups = ["analysts"]
connections = ["llama"]
models = ["llama-3*"]
action = "allow"
mask = ["all"]

[[rules]]
id = "credit-risk"
groups = ["analysts"]
connections = ["llama"]
models = ["credit-risk-*"]
action = "approve"
approvers = ["risk-officers"]
reason_required = true
mask = ["all"]

[[rules]]
id = "analysts-list-models"
groups = ["analysts"]
connections = ["llama"]
methods = ["GET"]
paths = ["/v1/models"]
action = "allow"

[audit]
dir = "{work}/audit"
origin = "demo.gateway/audit"
durability = "sync"
signing_key = "{work}/keys/signing.key"
sealing_key = "{work}/keys/sealing.key"
readers = ["auditors"]

[masking]
hash_key = "{work}/keys/masking.key"

[approvals]
store = "sqlite://{store}"
timeout_s = 900
hold_max_s = 30
sign_in_issuer = "default"            # approvers sign in at the demo issuer's login page
client_id = "gateway-approvals"
public_url = "http://127.0.0.1:{port}"
"""


def demo_config_text(issuer: str, upstream: str, work: Path, port: int) -> str:
    """`port`: the gateway's, chosen before it starts (it is in the sign-in redirect URI)."""
    return TEMPLATE.format(
        port=port,
        issuer=issuer,
        upstream=upstream,
        credential_env=UPSTREAM_KEY_ENV,
        work=work,
        store=work.resolve() / "approvals.db",
    )


def demo_config(issuer: str, upstream: str, work: Path, port: int) -> Config:
    """The demo config; `work` holds its keys and audit log (keys are created if missing)."""
    from gateway.audit import init_keys

    if not (work / "keys" / "signing.key").exists():
        init_keys(work / "keys", "demo.gateway")
    text = demo_config_text(issuer, upstream, work, port)
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    return parse(tomllib.loads(text), Path("<embedded demo config>"), sha256)
