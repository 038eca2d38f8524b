"""The audit log as the gateway writes it: real gateway process, real clients, then verify."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time

import httpx
import openai
import peers
import pytest
from conftest import UPSTREAM_KEY, audited_config, entries
from independent_verifier import open_sealed

from gateway.audit import read_secret_key, verify_inclusion, verify_log
from gateway.audit.seal import SPILL
from gateway.demo import pii


@pytest.fixture
def audited(start_gateway, issuer, upstream, tmp_path):
    gateway = start_gateway(audited_config(issuer.url, upstream.url, tmp_path))
    return gateway, tmp_path / "audit", tmp_path / "keys"


def test_exchanges_decisions_and_refusals_are_recorded(audited, issuer, analyst_token) -> None:
    gateway, audit_dir, keys = audited
    sdk = openai.OpenAI(base_url=f"{gateway.url}/llama/v1", api_key=analyst_token, max_retries=0)
    answer = sdk.chat.completions.create(
        model="llama-3-8b", messages=[{"role": "user", "content": "give me pii"}]
    )
    assert pii.EMAIL in answer.choices[0].message.content  # no masking rule in this config
    chunks = list(
        sdk.chat.completions.create(
            model="llama-3-8b", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert chunks
    with pytest.raises(openai.PermissionDeniedError):
        sdk.chat.completions.create(model="gpt-4o", messages=[])
    assert httpx.post(f"{gateway.url}/llama/v1/chat/completions", json={}).status_code == 401
    gateway.stop()

    report = verify_log(audit_dir)
    assert report.problem is None, report.problem
    log = entries(audit_dir)
    types = [e["type"] for e in log]
    assert types[:2] == ["gateway.started", "policy.loaded"]
    assert types[-1] == "gateway.stopped"
    assert types[2:-1] == ["decision", "inference", "decision", "inference", "denied", "denied"]

    decision, inference = log[2], log[3]
    assert decision["subject"] == "alice@example.com" and decision["rule"] == "analysts-chat"
    assert inference["decision_seq"] == decision["seq"]
    assert inference["served_model"] == "llama-3-8b"
    assert inference["model_version"] == "2026-11-01"
    assert inference["status"] == 200 and inference["bytes_out"] > 0
    assert log[5]["served_model"] == "llama-3-8b"  # from the stream's first event
    forbidden, anonymous = log[6], log[7]
    assert (forbidden["status"], forbidden["code"]) == (403, "forbidden")
    assert (anonymous["status"], anonymous["reason"]) == (401, "missing bearer token")
    assert "subject" not in anonymous  # absent, never null

    # Unmasked values and tokens exist only inside sealed/, encrypted.
    raw = (audit_dir / "entries").read_bytes()
    for secret in [*pii.VALUES.values(), analyst_token, "sk-upstream-connection-secret"]:
        assert secret.encode() not in raw
    for blob in (audit_dir / "sealed").iterdir():
        assert pii.EMAIL.encode() not in blob.read_bytes()
    unsealed = subprocess.run(
        [
            "gateway",
            "audit",
            "unseal",
            str(inference["seq"]),
            "--dir",
            str(audit_dir),
            "--key",
            str(keys / "sealing.key"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert pii.EMAIL in unsealed


def test_checkpoint_and_proof_endpoints_for_readers(audited, issuer, analyst_token) -> None:
    gateway, _, _ = audited
    auditor = peers.mint(issuer.url, "audrey", ["auditors"])
    url = f"{gateway.url}/_gateway/audit"
    assert httpx.get(f"{url}/checkpoint").status_code == 401
    denied = httpx.get(f"{url}/checkpoint", headers={"authorization": f"Bearer {analyst_token}"})
    assert denied.status_code == 403
    auth = {"authorization": f"Bearer {auditor}"}
    note = httpx.get(f"{url}/checkpoint", headers=auth).text
    origin, size, root = note.split("\n")[:3]
    assert origin == "test.gateway/audit" and int(size) >= 2
    proof = httpx.get(f"{url}/proof?index=1&size={size}", headers=auth).json()
    assert proof["root"] == base64.b64decode(root).hex()
    verify_inclusion(
        1,
        int(size),
        bytes.fromhex(proof["leaf_hash"]),
        [bytes.fromhex(p) for p in proof["path"]],
        base64.b64decode(root),
    )
    assert httpx.get(f"{url}/proof?index=x", headers=auth).status_code == 400


def test_full_disk_gives_503_and_nothing_unaudited_is_forwarded(
    start_gateway, issuer, upstream, tmp_path, analyst_token
) -> None:
    gateway = start_gateway(audited_config(issuer.url, upstream.url, tmp_path))
    pid = gateway.proc.pid
    body = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    auth = {"authorization": f"Bearer {analyst_token}"}
    size = (tmp_path / "audit" / "entries").stat().st_size
    # The gateway may grow no file beyond its current entries file: the next append fails.
    subprocess.run(["prlimit", f"--pid={pid}", f"--fsize={size + 16}:unlimited"], check=True)
    peers.upstream_reset(upstream.url)
    response = httpx.post(f"{gateway.url}/llama/v1/chat/completions", json=body, headers=auth)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"
    assert peers.upstream_requests(upstream.url) == []  # nothing reached the model
    health = httpx.get(f"{gateway.url}/_gateway/health")  # the gateway's own fault: 503
    assert health.status_code == 503
    assert health.json()["problems"] == ["the audit log cannot be written"]
    subprocess.run(["prlimit", f"--pid={pid}", "--fsize=unlimited:unlimited"], check=True)
    # With no request reaching it (a load balancer stopped sending), the health check itself
    # finds that the disk works again.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        health = httpx.get(f"{gateway.url}/_gateway/health")
        if health.status_code == 200:
            break
        time.sleep(0.1)
    assert health.status_code == 200 and health.json()["checks"]["audit_log_writable"] is True
    response = httpx.post(f"{gateway.url}/llama/v1/chat/completions", json=body, headers=auth)
    assert response.status_code == 200  # it recovered by itself
    gateway.stop()
    assert verify_log(tmp_path / "audit").problem is None


def test_a_long_stream_is_sealed_in_chunks_to_its_own_file(audited, analyst_token) -> None:
    """Over SPILL bytes of SSE: sealed as it passed, to sealed/{blob}.blob, and unsealed whole."""
    gateway, audit_dir, keys = audited
    body = {
        "model": "llama-3-8b",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 20_000,
        "stream": True,
    }
    headers = {"authorization": f"Bearer {analyst_token}", "x-demo-token-delay-ms": "0"}
    url = f"{gateway.url}/llama/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as response:
        received = b"".join(response.iter_raw())
        request_id = response.headers["x-request-id"]
    assert len(received) > SPILL
    slow = {**headers, "x-demo-token-delay-ms": "0.2"}  # broken off once it spilled
    with httpx.stream("POST", url, json=body, headers=slow, timeout=60) as response:
        got = 0
        for chunk in response.iter_raw():
            got += len(chunk)
            if got > SPILL + SPILL // 2:
                break
        broken = response.headers["x-request-id"]
    gateway.stop()
    assert verify_log(audit_dir).ok
    log = entries(audit_dir)
    entry = next(e for e in log if e["type"] == "inference" and e["request_id"] == request_id)
    ref = entry["sealed"]["response"]
    assert ref["file"] == f"sealed/{ref['blob']}.blob" and ref["offset"] == 0
    assert entry["response_sha256"] == hashlib.sha256(received).hexdigest()
    unsealed = subprocess.run(
        [
            "gateway",
            "audit",
            "unseal",
            "--dir",
            str(audit_dir),
            str(entry["seq"]),
            "--name",
            "response",
            "--key",
            str(keys / "sealing.key"),
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert unsealed == received
    key = read_secret_key(keys / "sealing.key")
    assert open_sealed(str(audit_dir), ref, key) == received  # from the documented format
    failed = next(e for e in log if e["type"] == "inference" and e["request_id"] == broken)
    assert "error" in failed and "response" not in failed.get("sealed", {})
    blobs = list((audit_dir / "sealed").glob("*.blob"))
    assert blobs == [audit_dir / ref["file"]]  # the broken-off stream's file was removed


@pytest.mark.parametrize("blocked", ["parent is a file", "wal is immutable"])
def test_an_audit_dir_it_cannot_write_is_a_clear_error_at_start(
    issuer, upstream, tmp_path, blocked
) -> None:
    """Exit 3 and one line naming the file and why (it was a Python traceback)."""
    text = audited_config(issuer.url, upstream.url, tmp_path)
    audit = tmp_path / "audit"
    if blocked == "parent is a file":
        (tmp_path / "blocker").write_text("")
        named = tmp_path / "blocker" / "audit"
        text = text.replace(f'dir = "{audit}"', f'dir = "{named}"')
    else:
        audit.mkdir()
        named = audit / "wal"
        named.write_bytes(b"")
        subprocess.run(["chattr", "+i", str(named)], check=True)  # EPERM even for root
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    try:
        done = subprocess.run(
            ["gateway", "serve", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TEST_UPSTREAM_KEY": UPSTREAM_KEY},
        )
    finally:
        if named.name == "wal":
            subprocess.run(["chattr", "-i", str(named)], check=True)
    assert done.returncode == 3, done.stderr
    assert f"gateway: cannot open the audit log: {named}: " in done.stderr
    assert "Traceback" not in done.stderr
