"""An upstream that echoes the connection's credential never shows it to the caller.

The scripted upstream puts the Authorization value it received (and its base64) into headers
and bodies, cut across chunks, in plain, streamed and masked responses.
"""

from __future__ import annotations

import base64
import re

import httpx
import peers
import pytest
from conftest import UPSTREAM_KEY, gateway_config
from dot_provider import fixture as dot
from test_cloud_auth import CLIENT_SECRET, cloud_config, oauth2_connection

ECHO_RULES = """
[[connections]]
name = "scripted"
upstream = "{url}"
credential_env = "TEST_UPSTREAM_KEY"

[[rules]]
id = "echo-plain"
groups = ["echoers"]
connections = ["scripted"]
action = "allow"

[[rules]]
id = "echo-masked"
groups = ["masked-echoers"]
connections = ["scripted"]
action = "allow"
mask = ["email"]
"""
SECRET = UPSTREAM_KEY.encode()


def encodings_of_secret() -> list[bytes]:
    """base64 of the secret behind 0, 1 and 2 other bytes, as a Basic header would carry it."""
    return [base64.b64encode(b"u" * n + SECRET + b":x") for n in range(3)]


def leaked(text: bytes) -> list[str]:
    """Any trace of the secret: itself, or 12+ characters of any of its base64 alignments."""
    found = [UPSTREAM_KEY] if SECRET in text else []
    for align in range(3):
        core = base64.b64encode(b"\0" * align + SECRET)[4:-4]
        if re.search(re.escape(core[:12]), text):
            found.append(f"base64 alignment {align}")
    return found


@pytest.fixture(scope="module")
def echo_gateway(start_gateway, issuer, upstream, scripted) -> peers.Peer:
    return start_gateway(
        gateway_config(issuer.url, upstream.url) + ECHO_RULES.format(url=scripted.url)
    )


def call(gateway, issuer, scripted, name, chunks, headers, group="echoers", **spec):
    peers.script(scripted.url, name, chunks, headers, **spec)
    token = peers.mint(issuer.url, f"{group}@example.com", [group])
    return httpx.post(
        f"{gateway.url}/scripted/{name}",
        json={"model": "m"},
        headers={"authorization": f"Bearer {token}"},
    )


def counted(gateway) -> float:
    metrics = httpx.get(f"{gateway.url}/_gateway/metrics").text
    match = re.search(r'gateway_credential_redacted_total\{connection="scripted"\} (\S+)', metrics)
    return float(match.group(1)) if match else 0.0


ECHOES = [
    '{"error": {"message": "bad key {auth}"}}',
    " and again: ",
    "{auth_b64}",
    " basic: " + " ".join(e.decode() for e in encodings_of_secret()),
]


@pytest.mark.parametrize(
    ("name", "content_type", "framing", "group"),
    [
        ("json-401", "application/json", "length", "echoers"),
        ("text-chunked", "text/plain", "chunked", "echoers"),
        ("octet-chunked", "application/octet-stream", "chunked", "echoers"),
        ("masked-text", "text/plain", "chunked", "masked-echoers"),
    ],
)
def test_echoed_credential_is_redacted(
    echo_gateway, issuer, scripted, name, content_type, framing, group
) -> None:
    before = counted(echo_gateway)
    joined = "".join(ECHOES)
    headers = [["content-type", content_type], ["www-authenticate", 'Bearer error="{auth}"']]
    # cut=7: every echo is cut across chunks, so the secret arrives in pieces.
    response = call(
        echo_gateway,
        issuer,
        scripted,
        name,
        ECHOES,
        headers,
        group,
        status=401,
        framing=framing,
        cut=7,
    )
    assert response.status_code == 401
    assert leaked(response.content) == []
    assert leaked(str(response.headers).encode()) == []
    assert b"bad key Bearer *****" in response.content
    # Same length: the Content-Length of an unmasked answer still holds.
    assert len(response.content) == len(
        joined.replace("{auth}", "Bearer " + UPSTREAM_KEY).replace(
            "{auth_b64}", base64.b64encode(b"Bearer " + SECRET).decode()
        )
    )
    # The body (1 exact, 1 + 3 base64) and the header (1 exact).
    assert counted(echo_gateway) - before == 6


def test_sse_stream_echo_is_redacted(echo_gateway, issuer, scripted) -> None:
    events = ['data: {"choices":[{"delta":{"content":"key {auth}"}}]}\n\n', "data: [DONE]\n\n"]
    sse = [["content-type", "text/event-stream"]]
    response = call(echo_gateway, issuer, scripted, "sse", events, sse, cut=5)
    assert response.status_code == 200 and leaked(response.content) == []
    assert response.content.endswith(b"data: [DONE]\n\n")


def test_answer_without_echo_is_unchanged(echo_gateway, issuer, scripted) -> None:
    body = '{"answer": "sk-upstream-connection is a prefix, not the secret"}'
    response = call(
        echo_gateway, issuer, scripted, "clean", [body], [["content-type", "application/json"]]
    )
    assert response.content == body.encode()


def test_echoed_oauth2_token_is_redacted(start_gateway, issuer, scripted, dot_provider) -> None:
    """A token the gateway fetched (django-oauth-toolkit, client credentials) is redacted too."""
    dot.create_client(dot_provider.url, "gw-echo", CLIENT_SECRET)
    connection = oauth2_connection(scripted.url, dot.token_url(dot_provider.url), "gw-echo", "echo")
    gateway = start_gateway(
        cloud_config(issuer.url, connection), {"TEST_CLIENT_SECRET": CLIENT_SECRET}
    )
    peers.script(
        scripted.url,
        "chat",
        ["bad token {auth}"],
        [["content-type", "text/plain"]],
        status=401,
        cut=5,
    )
    caller = peers.mint(issuer.url, "cloud@example.com", ["analysts"])
    response = httpx.post(
        f"{gateway.url}/echo/chat",
        json={"model": "m"},
        headers={"authorization": f"Bearer {caller}"},
    )
    sent = peers.scripted_requests(scripted.url)[-1]["headers"]["authorization"].removeprefix(
        "Bearer "
    )
    assert len(sent) >= 16 and sent not in response.text
    assert response.text == "bad token Bearer " + "*" * len(sent)
