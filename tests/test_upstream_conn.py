"""Upstream connections: TLS verification, stale pooled sockets, header rules as properties."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import peers
import pytest
from conftest import UPSTREAM_KEY
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from gateway.headers import CALLER_SECRETS, HOP_BY_HOP, request_headers_for_upstream
from gateway.upstream_auth.static import StaticAuth

BODY = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}


class Background:
    """An asyncio server on its own thread, for peers the demo servers cannot play."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.stop()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def tls_forwarder(cert: Path, key: Path, target_port: int) -> int:
    """TLS on the outside, plain TCP to the demo upstream on the inside."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    return server.sockets[0].getsockname()[1]


def tls_config(issuer: str, port: int, ca_file: Path | None) -> str:
    ca = f'ca_file = "{ca_file}"' if ca_file else ""
    return f"""
[server]
listen = "127.0.0.1:0"
[identity]
issuer = "{issuer}"
audience = "inference-gateway"
[[connections]]
name = "llama"
upstream = "https://127.0.0.1:{port}"
credential_env = "TEST_UPSTREAM_KEY"
{ca}
[[rules]]
id = "analysts"
groups = ["analysts"]
action = "allow"
"""


def post(gateway: peers.Peer, token: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/llama/v1/chat/completions",
        json=BODY,
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_https_upstream_verified_against_ca_file(
    start_gateway, issuer, upstream, analyst_token, background, tmp_path
) -> None:
    cert, key = self_signed(tmp_path)
    port = background.run(tls_forwarder(cert, key, int(upstream.url.rsplit(":", 1)[1])))
    trusted = start_gateway(tls_config(issuer.url, port, cert))
    assert post(trusted, analyst_token).status_code == 200

    untrusted = start_gateway(tls_config(issuer.url, port, None))
    response = post(untrusted, analyst_token)
    assert response.status_code == 502
    assert "CERTIFICATE_VERIFY_FAILED" in response.json()["error"]["message"]


async def close_after_each_response(delay_s: float) -> tuple[int, list[int]]:
    """An HTTP/1.1 upstream that says keep-alive, then closes each connection shortly after."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"ok":true}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        await asyncio.sleep(delay_s)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server.sockets[0].getsockname()[1], connections


def test_pooled_socket_closed_by_upstream_is_not_reused(
    start_gateway, issuer, analyst_token, background
) -> None:
    port, connections = background.run(close_after_each_response(0.05))
    config = tls_config(issuer.url, port, None).replace("https://", "http://")
    gateway = start_gateway(config)
    assert post(gateway, analyst_token).status_code == 200
    time.sleep(0.3)  # the upstream has closed the idle pooled connection by now
    assert post(gateway, analyst_token).status_code == 200
    assert len(connections) == 2


def test_disconnect_mid_stream_closes_the_upstream_connection(gateway, upstream, analyst_token):
    before = peers.upstream_stats(upstream.url)["open_connections"]
    with httpx.stream(
        "POST",
        f"{gateway.url}/llama/v1/chat/completions",
        json={**BODY, "stream": True, "max_tokens": 400},
        headers={"authorization": f"Bearer {analyst_token}"},
    ) as response:
        stream = response.iter_raw()
        next(stream)
    deadline = time.monotonic() + 5
    while peers.upstream_stats(upstream.url)["open_connections"] > before:
        assert time.monotonic() < deadline, "upstream connection left open"
        time.sleep(0.05)


names = st.sampled_from(
    [*sorted(HOP_BY_HOP), *sorted(CALLER_SECRETS), b"x-custom", b"content-type", b"accept"]
)
header_lists = st.lists(st.tuples(names, st.binary(max_size=20)), max_size=12)


@given(header_lists, st.binary(min_size=1, max_size=10))
def test_caller_secrets_and_hop_by_hop_never_cross(headers, listed) -> None:
    headers = [*headers, (b"connection", b"x-custom, " + listed)]
    auth = StaticAuth("llama", b"authorization", "Bearer ", "connection-secret")
    out = request_headers_for_upstream(headers, b"up:80", b"rid", 0)
    out = asyncio.run(auth.apply("POST", "http://up:80/v1", out, b""))
    names_out = [n for n, _ in out]
    assert not (set(names_out) & (HOP_BY_HOP | {b"cookie"}))
    assert not any(n == b"x-custom" for n in names_out)  # named in Connection
    assert [v for n, v in out if n == b"authorization"] == [b"Bearer connection-secret"]
    assert names_out.count(b"host") == 1 and (b"host", b"up:80") in out
    assert UPSTREAM_KEY not in str(out)


def test_slow_client_slows_the_upstream(gateway, upstream, analyst_token) -> None:
    """Backpressure crosses the gateway: while the client reads nothing, the upstream stalls."""
    peers.upstream_reset(upstream.url)
    body = {**BODY, "stream": True, "max_tokens": 100_000}  # ~20 MB of events, no delay
    with httpx.stream(
        "POST",
        f"{gateway.url}/llama/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {analyst_token}", "x-demo-token-delay-ms": "0"},
        timeout=30,
    ) as response:
        chunks = response.iter_raw()
        next(chunks)
        time.sleep(2.0)  # read nothing: socket buffers and the gateway's marks fill up
        stats = peers.upstream_stats(upstream.url)
        assert stats["streams_started"] == 1
        assert stats["streams_completed"] == 0, "upstream finished: nothing held it back"
        received = sum(len(c) for c in chunks)  # now drain it all
    assert received > 10_000_000
    assert peers.upstream_stats(upstream.url)["streams_completed"] == 1
