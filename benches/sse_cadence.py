"""A bench upstream: any POST gets an OpenAI-style SSE stream of prose tokens at a fixed cadence.

    python benches/sse_cadence.py [--interval-ms 5] [--port 0]

Each event is a chat.completion.chunk with one token of 1-6 characters (words with their
leading space, long words cut, punctuation alone: ordinary prose, no digit, no `@`), then a
finish event and `data: [DONE]`. The request's `max_tokens` sets how many (default 100).
Token k is due `k` intervals after the request arrived: a thread per connection sleeps until
each due time and sends that event in one write (TCP_NODELAY), so the cadence is kept by the
clock, not by how fast the reader takes it. Every event carries `x_token` (its index) and
`x_emit_ns` (CLOCK_MONOTONIC when it was sent, comparable across processes on this machine).
Prints `listening on URL` like the demo servers.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import threading
import time

import orjson

PROSE = (
    "The gateway relays each token as it arrives and keeps the original sealed for the audit "
    "log. Policy decides who may call which model, and masking replaces personal data before "
    "anyone sees it. Ordinary sentences carry no entity at all, so nothing should wait longer "
    "than the word that is still being written. When the answer ends, the stream says so and "
    "the client closes the connection or asks again on the same one. "
)


def tokens(count: int) -> list[str]:
    """`count` prose tokens of 1-6 characters, the first without its leading space."""
    out: list[str] = []
    for word in re.findall(r" ?[A-Za-z]+| ?[^A-Za-z ]", PROSE):
        out += [word[i : i + 6] for i in range(0, len(word), 6)]
    out[0] = out[0].lstrip()
    return [out[i % len(out)] for i in range(count)]


def event(data: dict) -> bytes:
    """One SSE event as one HTTP chunk."""
    body = b"data: " + orjson.dumps(data) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(body), body)


def chunk(k: int, delta: dict, finish: str | None) -> dict:
    return {
        "id": "chatcmpl-cadence",
        "object": "chat.completion.chunk",
        "model": "llama-3-8b",
        "x_token": k,
        "x_emit_ns": time.monotonic_ns(),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def read_request(conn: socket.socket, buffer: bytes) -> tuple[bytes, bytes] | None:
    """(body, leftover) of the next request on the connection, or None at its end."""
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head, rest = buffer.split(b"\r\n\r\n", 1)
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            return None
        rest += data
    return rest[:length], rest[length:]


def serve_connection(conn: socket.socket, interval: float) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    with conn, contextlib.suppress(OSError):  # a client that went away ends its thread
        while (request := read_request(conn, buffer)) is not None:
            body, buffer = request
            count = int(orjson.loads(body or b"{}").get("max_tokens") or 100)
            start = time.monotonic()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for k, token in enumerate(tokens(count)):
                time.sleep(max(0.0, start + k * interval - time.monotonic()))
                conn.sendall(event(chunk(k, {"content": token}, None)))
            time.sleep(max(0.0, start + count * interval - time.monotonic()))
            tail = event(chunk(count, {}, "stop")) + b"%x\r\n%s\r\n0\r\n\r\n" % (
                len(b"data: [DONE]\n\n"),
                b"data: [DONE]\n\n",
            )
            conn.sendall(tail)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", args.port), backlog=128)
    print(f"listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        worker = threading.Thread(
            target=serve_connection, args=(conn, args.interval_ms / 1000), daemon=True
        )
        worker.start()


if __name__ == "__main__":
    main()
