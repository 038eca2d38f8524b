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

    def error_message(self) -> str:
        return orjson.loads(self.body)["error"]["message"]


class RawConnection:
    """A socket plus a read buffer, so pipelined responses are not lost between reads."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        if self.buffer:
            data, self.buffer = self.buffer[:size], self.buffer[size:]
            return data
        return self.sock.recv(size)

    def settimeout(self, seconds: float) -> None:
        self.sock.settimeout(seconds)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read_response(self) -> RawResponse | None:
        """One response with a Content-Length body, or None if the server closed first."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length and self._fill():
            pass
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return RawResponse(int(lines[0].split()[1]), headers, body)

    def closed_by_peer(self) -> bool:
        """True once the server has closed its end (recv returns EOF)."""
        try:
            return self.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def connect(url: str, timeout: float = 10.0) -> RawConnection:
    return RawConnection(url, timeout)


def send(url: str, raw: bytes, timeout: float = 10.0) -> RawResponse | None:
    with connect(url, timeout) as conn:
        conn.sendall(raw)
        return conn.read_response()
