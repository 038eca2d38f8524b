"""Bad input on raw sockets: every case gets a clear JSON error, and nothing crashes or leaks."""

from __future__ import annotations

import time

import httpx
import peers
import pytest
import rawhttp
from conftest import gateway_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LIMITS = {
    "max_header_bytes": 2048,
    "max_body_bytes": 1024,
    "header_timeout_s": 1.0,
    "idle_timeout_s": 2.0,
}


@pytest.fixture(scope="module")
def tight(start_gateway, issuer, upstream) -> peers.Peer:
    return start_gateway(gateway_config(issuer.url, upstream.url, **LIMITS))


def request(path: str = "/llama/v1/models", *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gw", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_malformed_request_line(tight) -> None:
    response = rawhttp.send(tight.url, b"GARBAGE\r\n\r\n")
    assert response.status == 400
    assert response.error_code() == "bad_request"
    assert "x-request-id" in response.headers


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: identity\r\n\r\n",
            501,
            "Only Transfer-Encoding: chunked is supported",
        ),
        (b"GET / HTTP/1.1\r\nHost: gw\r\nHost: other\r\n\r\n", 400, "Found multiple Host: headers"),
        (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, "Missing mandatory Host: header"),
    ],
)
def test_protocol_errors_say_all_of_what_was_wrong(tight, head, status, reason) -> None:
    """h11's own sentences that hold a colon reach the client whole (they quote no bytes)."""
    response = rawhttp.send(tight.url, head)
    assert response.status == status
    assert response.error_message() == f"malformed HTTP request: {reason}"


def test_oversized_headers_431(tight) -> None:
    response = rawhttp.send(tight.url, request("/", "X-Big: " + "a" * 4000))
    assert response.status == 431


def test_header_flood_431(tight) -> None:
    flood = [f"X-H{i}: v" for i in range(1000)]
    assert rawhttp.send(tight.url, request("/", *flood)).status == 431


def test_declared_body_too_large_refused_before_reading(tight, analyst_token) -> None:
    head = request(
        "/llama/v1/chat/completions",
        f"Authorization: Bearer {analyst_token}",
        "Content-Length: 5000",
        method="POST",
    )
    with rawhttp.connect(tight.url) as sock:
        sock.sendall(head)  # no body sent: the answer must not wait for it
        response = sock.read_response()
    assert response.status == 413
    assert "max_body_bytes" in response.error_message()


def test_chunked_body_too_large(tight) -> None:
    head = request("/llama/v1/chat/completions", "Transfer-Encoding: chunked", method="POST")
    chunks = b"".join(b"200\r\n" + b"x" * 0x200 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
    assert rawhttp.send(tight.url, head + chunks).status == 413


def test_smuggling_cl_and_te_refused(tight) -> None:
    raw = request(
        "/llama/v1/models", "Content-Length: 4", "Transfer-Encoding: chunked", method="POST"
    )
    response = rawhttp.send(tight.url, raw + b"0\r\n\r\n")
    assert response.status == 400
    assert "Transfer-Encoding" in response.error_message()


def test_conflicting_content_lengths_refused(tight) -> None:
    raw = request("/", "Content-Length: 4", "Content-Length: 5", method="POST")
    assert rawhttp.send(tight.url, raw + b"abcd").status == 400


def test_unsupported_transfer_encoding_501(tight) -> None:
    raw = request("/", "Transfer-Encoding: gzip, chunked", method="POST")
    assert rawhttp.send(tight.url, raw).status == 501


def test_slow_headers_time_out_408(tight) -> None:
    with rawhttp.connect(tight.url) as sock:
        sock.sendall(b"GET /llama/v1/models HTTP/1.1\r\nHost: gw\r\n")
        started = time.monotonic()
        response = sock.read_response()
    assert response.status == 408
    assert time.monotonic() - started >= 0.8  # not before header_timeout_s (1 s)


def test_silent_connection_closed_after_header_timeout(tight) -> None:
    with rawhttp.connect(tight.url) as sock:
        assert sock.closed_by_peer()


def test_ambiguous_paths_refused(tight, analyst_token) -> None:
    auth = f"Authorization: Bearer {analyst_token}"
    for path in ("/llama/v1/../v1/models", "/llama/v1/%2e%2e/models", "/llama//v1/models"):
        response = rawhttp.send(tight.url, request(path, auth))
        assert response.status == 400, path
        assert response.error_code() == "bad_path"


def test_absolute_form_target_refused(tight, analyst_token) -> None:
    auth = f"Authorization: Bearer {analyst_token}"
    response = rawhttp.send(tight.url, request("http://evil.example/llama/v1/models", auth))
    assert response.status == 400


def test_keep_alive_and_pipelining(tight, analyst_token) -> None:
    auth = f"Authorization: Bearer {analyst_token}"
    with rawhttp.connect(tight.url) as sock:
        sock.sendall(request("/llama/v1/models", auth))
        first = sock.read_response()
        # Two pipelined requests on the same connection, answered in order.
        sock.sendall(request("/llama/v1/models", auth) + request("/nope/x", auth))
        second = sock.read_response()
        third = sock.read_response()
    assert (first.status, second.status, third.status) == (200, 200, 404)
    assert len({first.headers["x-request-id"], second.headers["x-request-id"]}) == 2


def test_idle_keep_alive_connection_closed(tight, analyst_token) -> None:
    with rawhttp.connect(tight.url) as sock:
        sock.sendall(request("/llama/v1/models", f"Authorization: Bearer {analyst_token}"))
        assert sock.read_response().status == 200
        sock.settimeout(LIMITS["idle_timeout_s"] + 3)
        started = time.monotonic()
        assert sock.closed_by_peer()
        assert time.monotonic() - started >= LIMITS["idle_timeout_s"] * 0.8


def test_half_sent_request_then_disconnect_leaves_gateway_serving(tight) -> None:
    for _ in range(20):
        with rawhttp.connect(tight.url) as sock:
            sock.sendall(b"POST /llama/v1/chat HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
    assert rawhttp.send(tight.url, request("/_gateway/health?live")).status == 200


header_name = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
    min_size=1,
    max_size=30,
)
header_value = st.binary(min_size=0, max_size=60)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(headers=st.lists(st.tuples(header_name, header_value), max_size=8))
def test_arbitrary_headers_never_crash(tight, headers) -> None:
    """Whatever header bytes arrive, the answer is a well-formed 4xx JSON error (no token)."""
    raw = b"GET /llama/v1/models HTTP/1.1\r\nHost: gw\r\n"
    raw += b"".join(n.encode() + b": " + v + b"\r\n" for n, v in headers)
    with rawhttp.connect(tight.url) as sock:
        sock.sendall(raw + b"\r\n")
        try:
            response = sock.read_response()
        except (TimeoutError, ConnectionResetError):
            response = None
    assert response is not None
    assert 400 <= response.status < 500
    assert response.error_code() in {"bad_request", "unauthenticated"}


@pytest.mark.parametrize(
    ("path", "with_token", "status"),
    [
        ("/_gateway/health", True, 200),  # the gateway's own page
        ("/llama/v1/models", False, 401),  # a refusal
        ("/nope/v1/models", True, 404),  # an error before any rule
    ],
)
def test_head_gets_the_head_of_the_answer(tight, analyst_token, path, with_token, status) -> None:
    """HEAD is answered with the status and headers a GET would get, and no body (RFC 9110
    §9.3.2), not a closed connection."""
    auth = {"authorization": f"Bearer {analyst_token}"} if with_token else {}
    got = httpx.get(tight.url + path, headers=auth)
    head = httpx.head(tight.url + path, headers=auth)
    assert (head.status_code, got.status_code) == (status, status)
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]
    assert "x-request-id" in head.headers


def test_head_refused_before_the_handler_still_gets_its_status(tight) -> None:
    response = httpx.head(tight.url + "/_gateway/health", headers={"x-big": "a" * 4000})
    assert response.status_code == 431
    assert response.content == b""


def test_proxied_head_names_no_length_it_cannot_know(
    start_gateway, issuer, upstream, analyst_token
):
    """A HEAD the policy lets through is relayed; its answer's Content-Length would be the
    masked GET's, which the gateway cannot know without the body, so it sends none."""
    rule = """
[[rules]]
id = "analysts-head"
groups = ["analysts"]
methods = ["HEAD"]
paths = ["/v1/models"]
action = "allow"
mask = ["email"]
"""
    gateway = start_gateway(gateway_config(issuer.url, upstream.url) + rule)
    response = httpx.head(
        gateway.url + "/llama/v1/models", headers={"authorization": f"Bearer {analyst_token}"}
    )
    assert response.status_code == 200
    assert response.content == b""
    assert "content-length" not in response.headers
    assert response.headers["content-type"] == "application/json"
