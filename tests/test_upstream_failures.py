"""The upstream misbehaves: down, slow, closing early, stalling; clients disconnect mid-stream."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import peers
import pytest
import rawhttp


def post(gateway: peers.Peer, token: str, model: str, connection: str = "llama", **body):
    return httpx.post(
        f"{gateway.url}/{connection}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], **body},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_upstream_down_is_502(gateway, analyst_token) -> None:
    response = post(gateway, analyst_token, "llama-3-8b", connection="down")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "cannot connect to upstream 'down'" in response.json()["error"]["message"]


def test_upstream_slow_headers_is_504(gateway, analyst_token) -> None:
    # The upstream answers after 30 s: only the connection's 1 s upstream_timeout_s gives a 504.
    response = post(gateway, analyst_token, "fail-slow-headers", connection="slow")
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_upstream_error_status_passes_through(gateway, analyst_token) -> None:
    response = post(gateway, analyst_token, "fail-500")
    assert response.status_code == 500
    assert response.json()["error"]["type"] != "gateway_error"


def test_upstream_closing_early_is_502(gateway, analyst_token) -> None:
    # A small body with a Content-Length is read whole before the head goes out, so the
    # client gets a clean 502 instead of a truncated 200.
    response = post(gateway, analyst_token, "fail-close-early")
    assert response.status_code == 502
    assert "closed connection" in response.json()["error"]["message"]
    # The gateway is unharmed and the next call works.
    assert post(gateway, analyst_token, "llama-3-8b", max_tokens=2).status_code == 200


def test_stalled_stream_is_cut_after_read_timeout(gateway, analyst_token) -> None:
    sdk = openai.OpenAI(
        base_url=f"{gateway.url}/slow/v1", api_key=analyst_token, max_retries=0, timeout=20
    )
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)) as cut:
        for _ in sdk.chat.completions.create(
            model="fail-stall-stream", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass
    # The gateway cut it (its 1 s read timeout), not the client's own 20 s timeout.
    assert not isinstance(cut.value, (openai.APITimeoutError, httpx.TimeoutException))


def long_stream_request(token: str) -> bytes:
    """A streamed chat completion of 500 tokens: still flowing when the client leaves."""
    body = (
        b'{"model":"llama-3-8b","stream":true,"max_tokens":500,'
        b'"messages":[{"role":"user","content":"long"}]}'
    )
    head = (
        f"POST /llama/v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def stats_once_cancelled(upstream) -> dict:
    """The demo upstream's counters, once it has seen a stream cancelled."""
    return peers.wait_for(
        lambda: (s := peers.upstream_stats(upstream.url))["streams_cancelled"] and s, timeout=5
    )


def test_client_disconnect_mid_stream_releases_upstream(gateway, upstream, analyst_token) -> None:
    peers.upstream_reset(upstream.url)
    with rawhttp.connect(gateway.url) as sock:
        sock.sendall(long_stream_request(analyst_token))
        assert b"200 OK" in sock.recv(4096)
        time.sleep(0.2)  # a few tokens flow, then the client hangs up
    stats = stats_once_cancelled(upstream)
    assert stats["streams_cancelled"] == 1
    assert stats["streams_completed"] == 0


def test_client_half_close_cancels_the_exchange(gateway, upstream, analyst_token) -> None:
    """A client that shuts its sending side down mid-answer (`nc -N`) has left, as with nginx's
    499: the stream upstream is cancelled and the connection closed (docs/operations.md)."""
    peers.upstream_reset(upstream.url)
    with rawhttp.connect(gateway.url) as sock:
        sock.sendall(long_stream_request(analyst_token))
        assert b"200 OK" in sock.recv(4096)
        sock.sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # what was in flight, then the close
            pass
    stats = stats_once_cancelled(upstream)
    assert stats["streams_cancelled"] == 1
    assert stats["streams_completed"] == 0
