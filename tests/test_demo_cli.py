"""`gateway demo` is the README's first command: it must run and tell the truth."""

from __future__ import annotations

import subprocess


def test_gateway_demo_runs_end_to_end() -> None:
    out = subprocess.run(["gateway", "demo"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== alice (group analysts)" in out.stdout
    assert "   200, x-request-id " in out.stdout
    assert "first token after" in out.stdout
    assert "403: denied by policy" in out.stdout
    assert "401: malformed token" in out.stdout
    masked = out.stdout.split("PII is masked inline")[1].split("==")[0]
    assert "[EMAIL]" in masked and "[CREDIT_CARD]" in masked and "@example.com" not in masked
    held = out.stdout.split("holds it until a risk officer approves")[1].split("==")[0]
    assert "requested by alice@example.com" in held
    assert "tries to approve it: 403: nobody may decide on their own request" in held
    assert "rita@example.com approves: 200" in held and "200 after approval" in held
    assert "requested by alice@example.com, approved by rita@example.com" in held
    assert "   OK " in out.stdout and " entries, " in out.stdout
    assert out.stdout.rstrip().endswith("demo finished")
