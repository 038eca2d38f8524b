"""Tiny raw-socket upstreams for behaviour the demo upstream does not have.

Each answers every request on a real loopback socket with bytes a function computes from the
request head, so a test can play a model server that breaks the protocol in one exact way or
enforces one rule of a real one (llama-cpp-python's UUID-only request ids, say).
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field


@dataclass
class Head:
    """A request head as the stand-in received it (header names lower-cased)."""

    method: str
    target: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)


@dataclass
class StandIn:
    url: str
    seen: list[Head] = field(default_factory=list)


def read_head(conn: socket.socket) -> tuple[Head, bytes] | None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    raw, _, rest = buffer.partition(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    head = Head(method, target, headers)
    length = int(head.get("content-length") or 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head, rest


def _serve_one(conn: socket.socket, answer: Callable[[Head], bytes], seen: list[Head]) -> None:
    with conn, suppress(OSError):
        while (got := read_head(conn)) is not None:
            seen.append(got[0])
            conn.sendall(answer(got[0]))


@contextmanager
def raw_upstream(answer: Callable[[Head], bytes]) -> Iterator[StandIn]:
    """Serve `answer(head)` to every request, keep-alive, until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    standin = StandIn(f"http://127.0.0.1:{listener.getsockname()[1]}")

    def accept() -> None:
        with suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(
                    target=_serve_one, args=(conn, answer, standin.seen), daemon=True
                ).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield standin
    finally:
        listener.close()


def json_response(body: bytes, status: int = 200) -> bytes:
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body


def uuid_request_ids_only(head: Head) -> bytes:
    """llama-cpp-python's server (starlette-context, validate=True): a request id that is not a
    UUID gets 400 with an empty body; otherwise an OpenAI-shaped answer."""
    request_id = head.get("x-request-id")
    if request_id is not None:
        try:
            uuid.UUID(request_id)
        except ValueError:
            return b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
    return json_response(b'{"object":"list","data":[{"id":"llama-3-8b","object":"model"}]}')
