"""The gateway's SigV4 signer and the test upstream's own verifier, against AWS's test suite.

Vectors: tests/vectors/sigv4 (see its README for what was left out and why).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import botocore.auth
import pytest
import sigv4_verifier
from botocore.credentials import Credentials

from gateway.upstream_auth.sigv4 import sign

VECTORS = Path(__file__).parent / "vectors" / "sigv4"
ALL = sorted(p.name for p in VECTORS.iterdir() if p.is_dir())
# Raw UTF-8 in a request target is not HTTP/1.1; no such request reaches the gateway's signer.
NOT_ON_THE_WIRE = {"get-vanilla-utf8-query"}


def _request(name: str) -> tuple[str, str, list[tuple[bytes, bytes]], bytes]:
    """request.txt: request line, `Name:value` headers (continuation lines folded in), body."""
    head, _, body = (VECTORS / name / "request.txt").read_bytes().partition(b"\n\n")
    first, *lines = head.split(b"\n")
    method, _, rest = first.partition(b" ")
    target = rest[: rest.rindex(b" HTTP/")]
    headers: list[tuple[bytes, bytes]] = []
    for line in filter(None, lines):
        if line[:1] in (b" ", b"\t"):
            headers[-1] = (headers[-1][0], headers[-1][1] + b"\n" + line)
            continue
        header, _, value = line.partition(b":")
        headers.append((header.lower(), value))
    return method.decode(), target.decode(), headers, body


def _context(name: str) -> dict:
    return json.loads((VECTORS / name / "context.json").read_text())


def _signed_headers(name: str) -> dict[str, str]:
    text = (VECTORS / name / "header-signed-request.txt").read_text()
    pairs = (line.partition(":") for line in text.splitlines()[1:] if ":" in line)
    return {header.lower(): value for header, _, value in pairs}


def _timestamp(context: dict) -> datetime.datetime:
    return datetime.datetime.strptime(context["timestamp"], "%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("name", sorted(set(ALL) - NOT_ON_THE_WIRE))
def test_gateway_signer_matches_the_suite(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    context = _context(name)
    method, target, headers, body = _request(name)
    host = dict(headers)[b"host"].decode()
    creds = context["credentials"]
    # The suite signs at a fixed time; botocore reads the clock through this one function.
    fixed = _timestamp(context)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: fixed)
    out = sign(
        Credentials(creds["access_key_id"], creds["secret_access_key"], creds.get("token")),
        context["region"],
        context["service"],
        method,
        f"https://{host}{target}",
        headers,
        body,
    )
    got = {n.decode(): v.decode() for n, v in out}
    want = _signed_headers(name)
    assert got["authorization"] == want["authorization"]
    assert got["x-amz-date"] == want["x-amz-date"]
    assert got.get("x-amz-security-token") == want.get("x-amz-security-token")


@pytest.mark.parametrize("name", ALL)
def test_independent_verifier_matches_the_suite(name: str) -> None:
    context = _context(name)
    method, target, headers, body = _request(name)
    want = _signed_headers(name)
    wire = [(n.decode(), v.decode()) for n, v in headers if n != b"x-amz-date"]
    wire += [
        (n, want[n]) for n in ("x-amz-date", "authorization", "x-amz-security-token") if n in want
    ]
    signed = sigv4_verifier.AUTHORIZATION.match(want["authorization"])["signed"].split(";")
    path, _, query = target.partition("?")
    creq = sigv4_verifier.canonical_request(method, path, query, wire, signed, body)
    assert creq == (VECTORS / name / "header-canonical-request.txt").read_text()
    creds = context["credentials"]
    secret = sigv4_verifier.Secret(
        creds["access_key_id"], creds["secret_access_key"], creds.get("token")
    )
    sigv4_verifier.verify(secret, context["region"], context["service"], method, target, wire, body)
    tampered = body + b"x"
    with pytest.raises(sigv4_verifier.SignatureError, match="signature does not match"):
        sigv4_verifier.verify(
            secret, context["region"], context["service"], method, target, wire, tampered
        )
