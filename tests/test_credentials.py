"""Connection credentials are read by the gateway itself; `policy check` says what serve would
refuse (a warning, an error with --strict)."""

from __future__ import annotations

import os
import subprocess

CONFIG = """
[identity]
issuer = "https://idp.example.com/realms/ml"
audience = "inference-gateway"

[[connections]]
name = "llama"
upstream = "http://127.0.0.1:8000"
credential_env = "CREDENTIAL_TEST_UNSET_VARIABLE"
"""


def test_unset_credential_refuses_serve_and_policy_check_warns(tmp_path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIAL_TEST_UNSET_VARIABLE"}
    check = subprocess.run(
        ["gateway", "policy", "check", "-c", path], capture_output=True, text=True, env=env
    )
    assert check.returncode == 0, check.stderr
    unset = "connections[llama].credential_env: environment variable"
    unset += " CREDENTIAL_TEST_UNSET_VARIABLE is unset"
    assert f"gateway: warning: {path}: {unset} (gateway serve refuses to start)" in check.stderr
    assert ": OK (sha256 " in check.stdout
    strict = subprocess.run(
        ["gateway", "policy", "check", "--strict", "-c", path],
        capture_output=True,
        text=True,
        env=env,
    )
    assert strict.returncode == 2 and f"gateway: error: {path}: {unset}" in strict.stderr
    assert "OK" not in strict.stdout
    present = subprocess.run(
        ["gateway", "policy", "check", "--strict", "-c", path],
        capture_output=True,
        text=True,
        env={**env, "CREDENTIAL_TEST_UNSET_VARIABLE": "sk-test"},
    )
    assert present.returncode == 0 and present.stderr == "", present.stderr
    assert "sk-test" not in present.stdout
    serve = subprocess.run(
        ["gateway", "serve", "-c", path], capture_output=True, text=True, env=env, timeout=30
    )
    assert serve.returncode == 2
    expected = "connections[llama].credential_env: environment variable"
    assert f"{path}: {expected} CREDENTIAL_TEST_UNSET_VARIABLE is unset" in serve.stderr
