"""`gateway approvals list|approve|deny` against a real gateway."""

from __future__ import annotations

import os
import subprocess

import peers
from approvals_helpers import Client, approvals_config


def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_TOKEN"}
    if token is not None:
        env["GATEWAY_TOKEN"] = token
    return subprocess.run(
        ["gateway", "approvals", *args], capture_output=True, text=True, env=env, timeout=30
    )


def test_list_approve_and_deny_over_the_api(start_gateway, issuer, upstream, tmp_path) -> None:
    gateway = start_gateway(approvals_config(issuer.url, upstream.url, tmp_path))
    alice_token = peers.mint(issuer.url, "alice@example.com", ["analysts"])
    rita = peers.mint(issuer.url, "rita@example.com", ["risk-officers"])
    alice = Client(gateway.url, alice_token)
    body = {"model": "credit-risk-v1", "messages": [{"role": "user", "content": "cli"}]}
    first = alice.ticket(body)
    second = alice.ticket({**body, "messages": [{"role": "user", "content": "cli 2"}]})
    url = ["--url", gateway.url]

    listed = cli("list", *url, token=rita)
    assert listed.returncode == 0, listed.stderr
    assert first in listed.stdout and second in listed.stdout
    assert "alice@example.com" in listed.stdout and "monthly credit review" in listed.stdout

    approved = cli("approve", first, "--reason", "ok", *url, "--token", rita)
    assert approved.returncode == 0, approved.stderr
    assert f"{first}: approved (requested by alice@example.com)" in approved.stdout
    assert alice.infer(body, approval_id=first).status_code == 200

    own = cli("deny", second, *url, token=alice_token)
    assert own.returncode == 1
    assert "403" in own.stderr and "only members of risk-officers" in own.stderr
    assert cli("deny", second, *url, token=rita).returncode == 0
    assert second in cli("list", "--status", "denied", *url, token=rita).stdout
    assert cli("list", *url, token=rita).stdout.strip() == "no approvals"

    assert cli("list", *url).returncode == 2  # no token
    assert "unreachable" in cli("list", "--url", "http://127.0.0.1:9", token=rita).stderr
