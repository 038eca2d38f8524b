"""Raw-socket HTTP/1.1 for bad input no well-behaved client would send."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_code(self) -> str:
        return orjson.loads(self.body)["error"]["code"]


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def read_response(sock: socket.socket) -> RawResponse | None:
    """One response with a Content-Length body, or None if the server closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawResponse(status, headers, rest[:length])


def send(url: str, raw: bytes, timeout: float = 10.0) -> RawResponse | None:
    with connect(url, timeout) as sock:
        sock.sendall(raw)
        return read_response(sock)


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed its end (recv returns EOF)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
