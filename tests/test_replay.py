"""Replay: the real gateway sends a recorded request to the real demo upstream again."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import httpx
import peers
import pytest
from conftest import audited_config, entries

from gateway.audit import unseal, verify_log
from gateway.demo import pii

# The demo upstream's answers are a pure function of the request, except `created` (its clock).
CLOCK_FIELD = '"created"'
MASKED_RULE = """
[[rules]]
id = "contractors-masked"
groups = ["contractors"]
connections = ["llama"]
action = "allow"
mask = ["email"]
"""


@pytest.fixture(scope="module")
def replaying(start_gateway, issuer, upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    gateway = start_gateway(audited_config(issuer.url, upstream.url, tmp) + MASKED_RULE)
    return gateway, tmp / "audit", tmp / "keys" / "sealing.key"


@pytest.fixture(scope="module")
def investigator(issuer) -> str:
    return peers.mint(issuer.url, "audrey@example.com", ["auditors"])


def chat(gateway: peers.Peer, token: str, prompt: str) -> httpx.Response:
    body = {"model": "llama-3-8b", "messages": [{"role": "user", "content": prompt}]}
    auth = {"authorization": f"Bearer {token}"}
    response = httpx.post(f"{gateway.url}/llama/v1/chat/completions", json=body, headers=auth)
    assert response.status_code == 200
    return response


def inference_of(audit_dir, request_id: str) -> dict:
    return next(
        e
        for e in entries(audit_dir)
        if e.get("request_id") == request_id and e["type"] == "inference"
    )


def post_replay(gateway: peers.Peer, token: str, seq: int | str, **body: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/_gateway/audit/replay/{seq}",
        json=body,
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def cli(
    gateway: peers.Peer, seq: int, token: str | None, *args: str
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_TOKEN"}
    if token is not None:
        env["GATEWAY_TOKEN"] = token
    command = ["gateway", "replay", str(seq), "-c", str(gateway.config_path), "--url", gateway.url]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=30)


def changed_lines(diff: str) -> list[str]:
    return [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_replay_returns_the_recorded_answer_and_is_recorded(
    replaying, analyst_token, investigator
) -> None:
    gateway, audit_dir, _ = replaying
    answer = chat(gateway, analyst_token, "what is an audit log?")
    inference = inference_of(audit_dir, answer.headers["x-request-id"])

    result = post_replay(gateway, investigator, inference["seq"])
    assert result.status_code == 200, result.text
    replayed = result.json()
    assert replayed["replayed_seq"] == replayed["recorded_seq"] == inference["seq"]
    assert replayed["status"] == 200
    assert json.loads(replayed["response"])["choices"] == answer.json()["choices"]
    assert replayed["recorded"] == answer.text

    log = entries(audit_dir)
    entry, outcome = log[replayed["replay_seq"]], log[replayed["result_seq"]]
    assert entry["type"] == "replay" and replayed["replay_seq"] < replayed["result_seq"]
    assert (entry["subject"], entry["groups"]) == ("audrey@example.com", ["auditors"])
    assert entry["decision_seq"] == inference["decision_seq"]
    assert (entry["connection"], entry["rule"]) == ("llama", "analysts-chat")
    assert entry["request_id"] == result.headers["x-request-id"]
    assert (outcome["type"], outcome["replay_seq"], outcome["status"]) == (
        "replay.result",
        entry["seq"],
        200,
    )
    assert outcome["response_sha256"] == hashlib.sha256(replayed["response"].encode()).hexdigest()

    # The decision entry replays the same exchange.
    by_decision = post_replay(gateway, investigator, inference["decision_seq"]).json()
    assert by_decision["recorded_seq"] == inference["seq"]


def test_cli_prints_the_answer_and_an_empty_diff(replaying, analyst_token, investigator) -> None:
    gateway, audit_dir, _ = replaying
    answer = chat(gateway, analyst_token, "replay me")
    seq = inference_of(audit_dir, answer.headers["x-request-id"])["seq"]
    run = cli(gateway, seq, investigator)
    assert run.returncode == 0, run.stderr
    assert answer.json()["choices"][0]["message"]["content"] in run.stdout
    assert f"replayed entry {seq} on 'llama': status 200" in run.stderr
    # Only the upstream's clock may differ, and only if a second ticked between the two calls.
    assert all(CLOCK_FIELD in line for line in changed_lines(run.stdout))


def test_masked_rule_masks_both_answers_and_unmasked_needs_the_key(
    replaying, issuer, investigator
) -> None:
    gateway, audit_dir, sealing_key = replaying
    contractor = peers.mint(issuer.url, "carl@example.com", ["contractors"])
    answer = chat(gateway, contractor, "give me pii")
    seq = inference_of(audit_dir, answer.headers["x-request-id"])["seq"]

    replayed = post_replay(gateway, investigator, seq).json()
    for body in (replayed["response"], replayed["recorded"]):
        assert pii.EMAIL not in body
    entry = entries(audit_dir)[replayed["result_seq"]]
    assert entry["masked"]["email"] >= 1
    assert pii.EMAIL.encode() not in (audit_dir / "entries").read_bytes()
    assert pii.EMAIL.encode() in unseal(audit_dir, entry, "response", sealing_key)

    masked = cli(gateway, seq, investigator)
    assert masked.returncode == 0, masked.stderr
    assert pii.EMAIL not in masked.stdout
    unmasked = cli(gateway, seq, investigator, "--unmasked", "--key", str(sealing_key))
    assert unmasked.returncode == 0, unmasked.stderr
    assert pii.EMAIL in unmasked.stdout
    assert all(CLOCK_FIELD in line for line in changed_lines(unmasked.stdout))
    assert verify_log(audit_dir).problem is None


def test_refusals(replaying, analyst_token, investigator) -> None:
    gateway, audit_dir, _ = replaying
    seq = inference_of(audit_dir, chat(gateway, analyst_token, "x").headers["x-request-id"])["seq"]
    size = len(entries(audit_dir))

    assert post_replay(gateway, analyst_token, seq).status_code == 403  # not a reader
    assert httpx.post(f"{gateway.url}/_gateway/audit/replay/{seq}").status_code == 401
    missing = post_replay(gateway, investigator, 10**6)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    started = post_replay(gateway, investigator, 0)  # gateway.started: nothing to replay
    assert (started.status_code, started.json()["error"]["code"]) == (409, "not_replayable")
    nowhere = post_replay(gateway, investigator, seq, connection="nope")
    assert nowhere.status_code == 404
    assert post_replay(gateway, investigator, "x").status_code == 400
    get = httpx.get(f"{gateway.url}/_gateway/audit/replay/{seq}")
    assert get.status_code == 405
    assert not [e for e in entries(audit_dir)[size:] if e["type"] == "replay"]

    no_token = cli(gateway, seq, None)
    assert no_token.returncode == 2 and "GATEWAY_TOKEN" in no_token.stderr
    denied = cli(gateway, seq, analyst_token)
    assert denied.returncode == 1 and "403" in denied.stderr and "readers" in denied.stderr
    unknown = cli(gateway, 10**6, investigator)
    assert unknown.returncode == 1 and "no entry 1000000" in unknown.stderr
    unreachable = cli(gateway, seq, investigator, "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "unreachable" in unreachable.stderr
    half = cli(gateway, seq, investigator, "--unmasked")
    assert half.returncode == 2 and "--key" in half.stderr


def test_failed_replay_is_recorded(replaying, analyst_token, investigator) -> None:
    gateway, audit_dir, _ = replaying
    seq = inference_of(audit_dir, chat(gateway, analyst_token, "x").headers["x-request-id"])["seq"]
    failed = post_replay(gateway, investigator, seq, connection="down")  # nothing listens there
    assert (failed.status_code, failed.json()["error"]["code"]) == (502, "upstream_error")
    entry = entries(audit_dir)[-1]
    assert (entry["type"], entry["replayed_seq"], entry["connection"]) == (
        "replay.result",
        seq,
        "down",
    )
    assert entry["code"] == "upstream_error" and "sealed" not in entry
    assert entries(audit_dir)[entry["replay_seq"]]["type"] == "replay"  # recorded before sending
