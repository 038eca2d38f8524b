"""Connection credentials are read by the gateway itself, not by tools that only read config."""

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


def test_unset_credential_refuses_serve_but_not_policy_check(tmp_path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIAL_TEST_UNSET_VARIABLE"}
    check = subprocess.run(
        ["gateway", "policy", "check", "-c", path], capture_output=True, text=True, env=env
    )
    assert check.returncode == 0, check.stderr
    serve = subprocess.run(
        ["gateway", "serve", "-c", path], capture_output=True, text=True, env=env, timeout=30
    )
    assert serve.returncode == 2
    expected = "connections[llama].credential_env: environment variable"
    assert f"{path}: {expected} CREDENTIAL_TEST_UNSET_VARIABLE is unset" in serve.stderr
