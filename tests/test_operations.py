"""Health, metrics, reload on file change and SIGHUP, graceful shutdown."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import openai
import peers
import pytest
from conftest import gateway_config

RISK_RULE = """
[[rules]]
id = "risk-chat"
groups = ["risk"]
connections = ["llama"]
action = "allow"
"""


def chat(gateway: peers.Peer, token: str) -> int:
    return httpx.post(
        f"{gateway.url}/llama/v1/chat/completions",
        json={"model": "llama-3-8b", "messages": [], "max_tokens": 1},
        headers={"authorization": f"Bearer {token}"},
    ).status_code


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_health_reports_each_check_and_a_down_upstream_is_only_a_warning(gateway) -> None:
    response = httpx.get(f"{gateway.url}/_gateway/health")
    # The shared config has a connection to a closed port: that is the upstream's fault, not
    # the gateway's, so a load balancer must keep this replica (200, with a warning).
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "degraded" and health["problems"] == []
    assert health["warnings"] == [
        {
            "connection": "down",
            "check": "upstream_reachable",
            "problem": "not accepting connections",
        }
    ]
    checks = health["checks"]
    assert checks["signing_keys_loaded"] is True
    assert checks["audit_log_writable"] is None and checks["approvals_store_reachable"] is None
    assert checks["upstreams_reachable"] == {"llama": True, "down": False, "slow": True}
    assert httpx.get(f"{gateway.url}/_gateway/health?live").status_code == 200


def test_metrics_count_requests_by_connection_status_decision(gateway, analyst_token) -> None:
    chat(gateway, analyst_token)
    text = httpx.get(f"{gateway.url}/_gateway/metrics").text
    assert 'gateway_requests_total{connection="llama",decision="allow",status="200"}' in text
    assert "gateway_overhead_seconds_bucket" in text
    assert "gateway_open_connections" in text
    assert 'gateway_jwks_refreshes_total{result="ok"}' in text


def test_reload_on_file_change_and_bad_file_keeps_old_policy(
    start_gateway, issuer, upstream
) -> None:
    base = gateway_config(issuer.url, upstream.url)
    gateway = start_gateway(base)
    risk = peers.mint(issuer.url, "rita", ["risk"])
    assert chat(gateway, risk) == 403

    gateway.config_path.write_text(base + RISK_RULE)
    assert wait_for(lambda: chat(gateway, risk) == 200)

    gateway.config_path.write_text(base + RISK_RULE.replace('"allow"', '"sometimes"'))
    assert wait_for(lambda: "reload refused" in gateway.stderr())
    assert "rules[3].action: must be allow, deny or approve" in gateway.stderr()
    assert chat(gateway, risk) == 200  # the old policy stays in force

    gateway.config_path.write_text(base)
    gateway.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: chat(gateway, risk) == 403)


def test_graceful_shutdown_lets_streams_finish(start_gateway, issuer, upstream) -> None:
    gateway = start_gateway(gateway_config(issuer.url, upstream.url))
    token = peers.mint(issuer.url, "sam", ["analysts"])
    sdk = openai.OpenAI(base_url=f"{gateway.url}/llama/v1", api_key=token, max_retries=0)
    stream = sdk.chat.completions.create(
        model="llama-3-8b",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=30,
        stream=True,
        extra_headers={"x-demo-token-delay-ms": "50"},
    )
    threading.Timer(0.3, gateway.proc.send_signal, [signal.SIGTERM]).start()
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert len(chunks) >= 30
    assert gateway.proc.wait(10) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.url}/_gateway/health?live")
