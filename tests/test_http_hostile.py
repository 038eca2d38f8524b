"""Hostile and unusual HTTP against the real gateway process (issue 9): the gateway refuses
clearly, never quotes a credential, and the policy sees what the upstream will execute."""

from __future__ import annotations

import re
import select
import socket
import subprocess
from pathlib import Path

import httpx
import orjson
import peers
import rawhttp
import standins
from conftest import UPSTREAM_KEY, audited_config, entries, gateway_config

CHAT = "/llama/v1/chat/completions"
UUID_FORM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


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


def upstream_saw(upstream) -> dict[str, list[str]]:
    """The headers of the last request the demo upstream received, by lower-case name."""
    seen: dict[str, list[str]] = {}
    for name, value in peers.upstream_requests(upstream.url)[-1]["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


def test_two_authorization_headers_are_refused(gateway, upstream, analyst_token, intern_token):
    peers.upstream_reset(upstream.url)
    for first, second in ((analyst_token, intern_token), (intern_token, analyst_token)):
        raw = head(
            "GET", "/llama/v1/models", f"Authorization: Bearer {first}", f"authorization: {second}"
        )
        response = rawhttp.send(gateway.url, raw)
        assert response.status == 400
        assert response.error_code() == "duplicate_header"
        assert "authorization" in response.error_message().lower()
        assert second.rsplit(".", 1)[1] not in response.error_message()
    auth = f"Authorization: Bearer {analyst_token}"
    for name, one, other in (
        ("content-type", "application/json", "text/plain"),
        ("x-request-id", "0b6c1d9e-3f5a-4c27-9e1d-7a2b8c4d5e6f", "x"),
        ("x-approval-id", "apr_" + "0" * 24, "apr_" + "1" * 24),
        ("x-approval-reason", "a", "b"),
    ):
        raw = head("GET", "/llama/v1/models", auth, f"{name}: {one}", f"{name}: {other}")
        response = rawhttp.send(gateway.url, raw)
        assert (response.status, response.error_code()) == (400, "duplicate_header"), name
    assert peers.upstream_stats(upstream.url)["requests"] == 0


def test_approval_headers_never_reach_the_upstream_on_allow_rules(
    gateway, upstream, analyst_token
) -> None:
    peers.upstream_reset(upstream.url)
    response = httpx.post(
        f"{gateway.url}{CHAT}",
        json={"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]},
        headers={
            "authorization": f"Bearer {analyst_token}",
            "prefer": "wait=5, respond-async",
            "x-approval-id": "apr_" + "0" * 24,
            "x-approval-reason": "my private reason",
        },
    )
    assert response.status_code == 200
    seen = upstream_saw(upstream)
    assert not {"prefer", "x-approval-id", "x-approval-reason"} & set(seen)


def test_lower_case_method_cannot_slip_past_a_method_rule(
    start_gateway, issuer, upstream, analyst_token
) -> None:
    rules = """
[[rules]]
id = "no-deletes"
groups = ["analysts"]
methods = ["DELETE"]
action = "deny"

[[rules]]
id = "analysts-anything"
groups = ["analysts"]
action = "allow"
"""
    text = gateway_config(issuer.url, upstream.url).split("[[rules]]")[0] + rules
    gateway = start_gateway(text)
    auth = f"Authorization: Bearer {analyst_token}"
    peers.upstream_reset(upstream.url)
    assert rawhttp.send(gateway.url, head("DELETE", "/llama/v1/models", auth)).status == 403
    for method in ("delete", "Delete", "dELETE"):
        response = rawhttp.send(gateway.url, head(method, "/llama/v1/models", auth))
        assert response.status == 400, method
        assert response.error_code() == "bad_method"
        assert "DELETE" in response.error_message()
    assert peers.upstream_stats(upstream.url)["requests"] == 0
    # The gateway's own endpoints read the method the same way.
    assert rawhttp.send(gateway.url, head("get", "/_gateway/health?live")).status == 400
    assert rawhttp.send(gateway.url, head("GET", "/_gateway/health?live")).status == 200


def test_method_and_path_overrides_never_reach_the_upstream(
    gateway, upstream, analyst_token
) -> None:
    """The same class: headers that make some frameworks run another method or path."""
    overrides = {
        "x-http-method-override": "DELETE",
        "x-http-method": "DELETE",
        "x-method-override": "DELETE",
        "x-original-url": "/v1/admin",
        "x-rewrite-url": "/v1/admin",
    }
    response = httpx.post(
        f"{gateway.url}{CHAT}",
        json={"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {analyst_token}", **overrides},
    )
    assert response.status_code == 200
    assert not set(overrides) & set(upstream_saw(upstream))


def curl_post(url: str, token: str, body: bytes, tmp_path: Path) -> tuple[int, bytes]:
    """curl as a user runs it; curl itself adds `Expect: 100-continue` for a body this size."""
    path = tmp_path / "body.json"
    path.write_bytes(body)
    headers = ["-H", f"authorization: Bearer {token}", "-H", "content-type: application/json"]
    output = ["-o", "-", "-w", "\n%{http_code}"]
    upload = ["-X", "POST", *headers, "--data-binary", f"@{path}"]
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "60", *output, *upload, url],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body_out, _, status = result.stdout.rpartition(b"\n")
    return int(status), body_out


def test_curl_posting_a_large_body_with_expect_100_continue(
    gateway, upstream, analyst_token, tmp_path
) -> None:
    prompt = "word " * 240_000  # 1.2 MB: over curl's 1 MB threshold for Expect
    body = orjson.dumps(
        {"model": "llama-3-8b", "max_tokens": 2, "messages": [{"role": "user", "content": prompt}]}
    )
    status, answer = curl_post(f"{gateway.url}{CHAT}", analyst_token, body, tmp_path)
    assert status == 200, answer
    assert orjson.loads(answer)["choices"]
    assert "expect" not in upstream_saw(upstream)  # answered by the gateway, not passed on


def test_expect_100_continue_is_answered_before_the_body(gateway, analyst_token) -> None:
    body = b'{"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]}'
    lines = (f"Authorization: Bearer {analyst_token}", "Content-Type: application/json")
    raw = head("POST", CHAT, *lines, f"Content-Length: {len(body)}", "Expect: 100-continue")
    with rawhttp.connect(gateway.url) as conn:
        conn.sendall(raw)
        informational = conn.read_response()  # the 100 comes before any body byte is sent
        assert informational is not None and informational.status == 100
        conn.sendall(body)
        final = conn.read_response()
    assert final is not None and final.status == 200


def test_expect_100_continue_gets_the_refusal_without_sending_the_body(
    gateway, upstream, issuer, analyst_token
) -> None:
    expired = peers.mint(issuer.url, "alice@example.com", ["analysts"], ttl_s=-60)
    cases = [
        ((), 401, "unauthenticated"),
        ((f"Authorization: Bearer {expired}",), 401, "unauthenticated"),
        ((f"Authorization: Bearer {analyst_token}", "Content-Length: 999999999"), 413, None),
    ]
    for lines, status, code in cases:
        length = () if any("Content-Length" in line for line in lines) else ("Content-Length: 50",)
        raw = head("POST", CHAT, *lines, *length, "Expect: 100-continue")
        with rawhttp.connect(gateway.url) as conn:
            conn.sendall(raw)  # and never the body: the answer must not wait for it
            response = conn.read_response()
        assert response is not None and response.status == status, lines
        assert code is None or response.error_code() == code
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def push_until_blocked(sock: socket.socket, cap: int, stall_s: float) -> int:
    """Send junk until the peer stops reading (not writable for stall_s) or cap bytes went."""
    chunk = b"X" * 65536
    sent = 0
    sock.setblocking(False)
    while sent < cap:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], stall_s)
            if not writable:
                break
    return sent


def test_bytes_sent_while_an_exchange_runs_are_not_read_without_bound(
    start_gateway, issuer, upstream, analyst_token
) -> None:
    gateway = start_gateway(gateway_config(issuer.url, upstream.url))
    body = b'{"model": "fail-slow-headers", "messages": [{"role": "user", "content": "hi"}]}'
    lines = (f"Authorization: Bearer {analyst_token}", "x-demo-delay-s: 20")
    raw = head("POST", CHAT, *lines, f"Content-Length: {len(body)}") + body
    cap = 256 * 1024 * 1024
    with rawhttp.connect(gateway.url) as conn:
        conn.sendall(raw)
        before = rss_bytes(gateway.proc.pid)
        sent = push_until_blocked(conn.sock, cap, stall_s=2.0)
        grown = rss_bytes(gateway.proc.pid) - before
    # Kernel socket buffers take some (tens of MB at most here); the gateway keeps one read.
    assert sent < cap // 8, f"{sent} bytes accepted while the request was still in flight"
    assert grown < 16 * 1024 * 1024, f"RSS grew by {grown} bytes"


def is_uuid(text: str) -> bool:
    return UUID_FORM.fullmatch(text) is not None


def test_request_ids_are_uuids_a_clients_uuid_is_kept_and_traceparent_passes(
    start_gateway, issuer, analyst_token
) -> None:
    """Behind the gateway, a server that takes only UUID request ids (as llama-cpp-python's)."""
    with standins.raw_upstream(standins.uuid_request_ids_only) as standin:
        gateway = start_gateway(gateway_config(issuer.url, standin.url))
        url = f"{gateway.url}/llama/v1/models"
        auth = {"authorization": f"Bearer {analyst_token}"}
        made = httpx.get(url, headers=auth)
        assert made.status_code == 200, made.text
        assert is_uuid(made.headers["x-request-id"])
        assert standin.seen[-1].get("x-request-id") == made.headers["x-request-id"]

        own = "0b6c1d9e-3f5a-4c27-9e1d-7a2b8c4d5e6f"
        trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        kept = httpx.get(url, headers={**auth, "x-request-id": own, "traceparent": trace})
        assert kept.status_code == 200
        assert kept.headers["x-request-id"] == own
        assert standin.seen[-1].get("x-request-id") == own
        assert standin.seen[-1].get("traceparent") == trace

        for junk in ("not-a-uuid", "0b6c1d9e3f5a4c279e1d7a2b8c4d5e6f", own + "x"):
            replaced = httpx.get(url, headers={**auth, "x-request-id": junk})
            assert replaced.status_code == 200
            assert is_uuid(replaced.headers["x-request-id"]), junk
            assert standin.seen[-1].get("x-request-id") == replaced.headers["x-request-id"]


def test_refusals_before_the_handler_carry_a_uuid_request_id(gateway) -> None:
    response = rawhttp.send(gateway.url, b"GARBAGE\r\n\r\n")
    assert response.status == 400
    assert is_uuid(response.headers["x-request-id"])


def test_metric_labels_take_only_configured_connection_names(
    start_gateway, issuer, upstream, analyst_token
) -> None:
    gateway = start_gateway(gateway_config(issuer.url, upstream.url))
    auth = {"authorization": f"Bearer {analyst_token}"}
    with httpx.Client(base_url=gateway.url, headers=auth) as client:
        assert client.get("/llama/v1/models").status_code == 200
        names = ["123-45-6789", *(f"probe-{i}" for i in range(300))]
        for name in names:
            assert client.get(f"/{name}/v1/models").status_code == 404
        page = client.get("/_gateway/metrics").text
    assert "123-45-6789" not in page and "probe-" not in page
    labels = set(re.findall(r'connection="([^"]*)"', page))
    assert labels <= {"llama", "down", "slow", "-"}, labels
    assert "llama" in labels
    assert len(page) < 64 * 1024  # 300 more unknown names did not grow the page


def test_client_gets_only_the_content_type_the_gateway_read(
    start_gateway, issuer, analyst_token
) -> None:
    """The same class as two Authorization headers, on the response: the client must read the
    media type the gateway acted on (masked by), not a second one the upstream added."""

    def two_types(_: standins.Head) -> bytes:
        body = b'{"object": "list", "data": []}'
        head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-type: application/json\r\n"
        return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body

    with standins.raw_upstream(two_types) as standin:
        gateway = start_gateway(gateway_config(issuer.url, standin.url))
        raw = head("GET", "/llama/v1/models", f"Authorization: Bearer {analyst_token}")
        with rawhttp.connect(gateway.url) as conn:
            conn.sendall(raw)
            conn.sock.settimeout(10)
            received = b""
            while b"\r\n\r\n" not in received:
                received += conn.sock.recv(65536)
    lines = received.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert [line for line in lines if line.startswith(b"content-type:")] == [
        b"content-type: text/plain"
    ]


def test_refusals_before_the_handler_name_their_request_id_in_the_audit_log(
    start_gateway, issuer, upstream, tmp_path, analyst_token
) -> None:
    gateway = start_gateway(audited_config(issuer.url, upstream.url, tmp_path))
    garbage = rawhttp.send(gateway.url, b"GARBAGE\r\n\r\n")
    own = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b"
    lines = (f"Authorization: Bearer {analyst_token}", f"x-request-id: {own}")
    too_big = rawhttp.send(gateway.url, head("POST", CHAT, *lines, "Content-Length: 999999999"))
    assert too_big.status == 413 and too_big.headers["x-request-id"] == own
    gateway.stop()
    denied = [e for e in entries(tmp_path / "audit") if e["type"] == "denied"]
    assert [(e["status"], e["request_id"]) for e in denied] == [
        (400, garbage.headers["x-request-id"]),
        (413, own),
    ]
