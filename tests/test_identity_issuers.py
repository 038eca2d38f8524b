"""Several issuers at once: `iss` picks the issuer, only its keys verify, subjects are prefixed.

Two real demo issuers run as processes: "staff" (people) and "pipelines", which mints tokens
shaped like Kubernetes service-account tokens (nested `kubernetes.io` claims, `aud` a list).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import peers
import pytest
from conftest import entries, launch_gateway

from gateway.config import ConfigError, load

TRAINER = "system:serviceaccount:ml:trainer"
K8S_AUD = ["https://kubernetes.default.svc.cluster.local", "inference-gateway"]


@pytest.fixture(scope="module")
def pipelines():
    with peers.start_issuer() as peer:
        yield peer


def sa_token(issuer: peers.Peer, name: str, namespace: str = "ml", **opts: object) -> str:
    """A token shaped like a projected Kubernetes service-account token."""
    k8s = {
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": "8e1c5a0e-0d5e-4f5e-9d7e-2b1f3c4d5e6f"},
        "pod": {"name": f"{name}-5d9f", "uid": "1b2c3d4e-0000-4000-8000-000000000001"},
    }
    return peers.mint(
        issuer.url,
        f"system:serviceaccount:{namespace}:{name}",
        [],
        aud=K8S_AUD,
        claims={"kubernetes.io": k8s, "groups": None},
        **opts,
    )


def two_issuer_config(staff: str, pipelines: str, upstream: str, tmp: Path) -> str:
    keys = tmp / "keys"
    subprocess.run(["gateway", "keys", "init", "--dir", str(keys)], check=True, capture_output=True)
    return f"""
[server]
listen = "127.0.0.1:0"

[[identity.issuers]]
name = "staff"
issuer = "{staff}"
audience = "inference-gateway"
leeway_s = 0

[[identity.issuers]]
name = "pipelines"
issuer = "{pipelines}"
audience = "inference-gateway"
groups_claim = ["kubernetes.io", "namespace"]
subject_prefix = "k8s:"
leeway_s = 0

[audit]
dir = "{tmp / "audit"}"
origin = "test.gateway/audit"
signing_key = "{keys / "signing.key"}"
sealing_key = "{keys / "sealing.key"}"

[[connections]]
name = "llama"
upstream = "{upstream}"
credential_env = "TEST_UPSTREAM_KEY"

[[rules]]
id = "trainer-big"
subjects = ["k8s:{TRAINER}"]
models = ["llama-3-70b"]
action = "allow"

[[rules]]
id = "ml-namespace-small"
groups = ["ml"]
models = ["llama-3-8b"]
action = "allow"

[[rules]]
id = "analysts"
groups = ["analysts"]
models = ["llama-3-8b"]
action = "allow"
"""


@pytest.fixture(scope="module")
def gateway(issuer, pipelines, upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("issuers")
    path = tmp / "gateway.toml"
    path.write_text(two_issuer_config(issuer.url, pipelines.url, upstream.url, tmp))
    with launch_gateway(path) as peer:
        peer.audit_dir = tmp / "audit"  # type: ignore[attr-defined]
        yield peer


def call(gateway: peers.Peer, token: str, model: str = "llama-3-8b") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(
        f"{gateway.url}/llama/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    return response.json()["error"]["message"]


def test_each_issuer_vouches_for_its_own_subjects(gateway, issuer, pipelines) -> None:
    staff = peers.mint(issuer.url, "alice@example.com", ["analysts"])
    assert call(gateway, staff).status_code == 200
    trainer = sa_token(pipelines, "trainer")
    assert call(gateway, trainer, "llama-3-70b").status_code == 200
    # groups_claim = ["kubernetes.io", "namespace"]: the namespace is the group.
    other = sa_token(pipelines, "notebook")
    assert call(gateway, other, "llama-3-8b").status_code == 200
    assert call(gateway, other, "llama-3-70b").status_code == 403
    assert call(gateway, sa_token(pipelines, "x", namespace="web")).status_code == 403
    # The same subject from the staff issuer is not the pipeline's trainer: no prefix, no rule.
    impostor = peers.mint(issuer.url, TRAINER, ["analysts"])
    assert call(gateway, impostor, "llama-3-70b").status_code == 403

    recorded = [
        (e["issuer"], e["subject"], e["groups"], e["status"])
        for e in entries(gateway.audit_dir)
        if e["type"] in ("inference", "denied")
    ]
    assert recorded == [
        ("staff", "alice@example.com", ["analysts"], 200),
        ("pipelines", f"k8s:{TRAINER}", ["ml"], 200),
        ("pipelines", "k8s:system:serviceaccount:ml:notebook", ["ml"], 200),
        ("pipelines", "k8s:system:serviceaccount:ml:notebook", ["ml"], 403),
        ("pipelines", "k8s:system:serviceaccount:web:x", ["web"], 403),
        ("staff", TRAINER, ["analysts"], 403),
    ]

    def exchanges() -> list[dict]:
        return [json.loads(x) for x in gateway.stderr().splitlines() if '"exchange"' in x]

    access = peers.wait_for(lambda: len(exchanges()) >= 6 and exchanges())
    assert [(a["issuer"], a["subject"]) for a in access[:2]] == [
        ("staff", "alice@example.com"),
        ("pipelines", f"k8s:{TRAINER}"),
    ]


def test_one_issuers_keys_never_verify_anothers_tokens(gateway, issuer, pipelines) -> None:
    # Signed by the staff issuer's key, claiming to come from the pipelines issuer.
    forged = peers.mint(issuer.url, TRAINER, [], iss=pipelines.url, aud=K8S_AUD)
    assert "unknown signing key" in refusal(call(gateway, forged, "llama-3-70b"))
    kidless = peers.mint(issuer.url, TRAINER, [], iss=pipelines.url, aud=K8S_AUD, omit_kid=True)
    assert refusal(call(gateway, kidless, "llama-3-70b")) == "bad signature"


def test_unknown_issuer_is_refused(gateway, issuer) -> None:
    token = peers.mint(issuer.url, "bob", ["analysts"], iss="https://idp.elsewhere.example")
    assert refusal(call(gateway, token)) == "unknown issuer (not one this gateway trusts)"


ONE = """
[identity]
issuer = "https://idp.example.com"
audience = "gw"
"""
SEVERAL = """
[[identity.issuers]]
name = "a"
issuer = "https://a.example.com"
audience = "gw"
"""


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (ONE.replace("[identity]", "[identity]\nname = 'x'"), "identity.name", "unknown key"),
        (ONE + SEVERAL, "identity.audience", "beside"),
        (SEVERAL.replace('name = "a"\n', ""), "identity.issuers[0].name", "is required"),
        (SEVERAL + SEVERAL.replace("a.example", "b.example"), "identity.issuers[1].name", "dup"),
        (SEVERAL + SEVERAL.replace('"a"', '"b"'), "identity.issuers[1].issuer", "twice"),
        (SEVERAL + "groups_claim = []\n", "identity.issuers[0].groups_claim", "list of keys"),
        (SEVERAL + "subject_claim = 3\n", "identity.issuers[0].subject_claim", "dotted path"),
        (SEVERAL + "subject_prefix = 1\n", "identity.issuers[0].subject_prefix", "string"),
    ],
)
def test_bad_issuer_config_names_the_key(tmp_path, text, key, problem) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert (err.value.key, problem in err.value.problem) == (key, True), err.value
