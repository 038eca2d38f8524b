"""Hostile and unusual HTTP against the real gateway process (issue 9): the gateway refuses
clearly, never quotes a credential, and the policy sees what the upstream will execute."""

from __future__ import annotations

from pathlib import Path

import rawhttp
import standins
from conftest import UPSTREAM_KEY, audited_config, gateway_config

CHAT = "/llama/v1/chat/completions"


def head(method: str, path: str, *lines: str) -> bytes:
    return ("\r\n".join([f"{method} {path} HTTP/1.1", "Host: gw", *lines]) + "\r\n\r\n").encode()


def everything_written(gateway, audit_dir: Path) -> bytes:
    """After a stop: the audit directory's files and the process's log, as one blob."""
    gateway.stop()
    files = [p for p in audit_dir.rglob("*") if p.is_file()]
    return b"".join(p.read_bytes() for p in files) + gateway.stderr().encode()


def test_malformed_header_line_never_quotes_the_token(
    start_gateway, issuer, upstream, tmp_path, analyst_token
) -> None:
    gateway = start_gateway(audited_config(issuer.url, upstream.url, tmp_path))
    signature = analyst_token.rsplit(".", 1)[1]
    raw = head("GET", "/llama/v1/models", f"Authorization: Bearer {analyst_token}\x00")
    response = rawhttp.send(gateway.url, raw)
    assert response.status == 400
    assert response.error_code() == "bad_request"
    assert signature not in response.error_message()
    assert signature.encode() not in response.body
    written = everything_written(gateway, tmp_path / "audit")
    assert b'"code":"bad_request"' in written  # the refusal is on the record...
    assert signature.encode() not in written  # ...without the token


def test_upstream_malformed_header_never_quotes_the_credential(
    start_gateway, issuer, analyst_token
) -> None:
    """The same class on the other leg: a broken upstream header echoing our credential."""

    def echo_credential(got: standins.Head) -> bytes:
        auth = got.get("authorization") or ""
        return f"HTTP/1.1 200 OK\r\nx-echo: {auth}\x00\r\ncontent-length: 0\r\n\r\n".encode()

    with standins.raw_upstream(echo_credential) as standin:
        gateway = start_gateway(gateway_config(issuer.url, standin.url))
        raw = head("GET", "/llama/v1/models", f"Authorization: Bearer {analyst_token}")
        response = rawhttp.send(gateway.url, raw)
        assert standin.seen, "the stand-in upstream was never called"
    assert response.status == 502
    assert response.error_code() == "upstream_error"
    assert UPSTREAM_KEY.encode() not in response.body
    gateway.stop()
    assert UPSTREAM_KEY not in gateway.stderr()
