"""A masked stream holds back only what could still become an entity (issue 11, item 5).

The upstream here is lock-step: it sends token k+1 only once the client has received token k
through the gateway. Prose whose end cannot grow into an entity (a word and its space, a
sentence's full stop) must cross the gateway on its own; a gateway that holds a token until
the next one arrives stalls the stream, and the upstream records which token it waited for.
The "never less" half (an entity cut anywhere is never partly released) is shown on the
masker itself in test_masker_streams.py (every cut, and one byte or one character per event).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import httpx
from conftest import gateway_config
from standins import read_head

# Ordinary prose, one word and what ends it per event: context words (`call`, `account`,
# `born`, `passport`), key-name words (`secret`, `https`) and e-mail-like words included.
SETTLED = [
    "The ", "gateway ", "relays ", "each ", "word ", "as ", "it ", "arrives. ", "Call ", "my ",
    "account ", "team, ", "born ", "in ", "spring; ", "passport ", "and ", "secret ", "https ",
    "first.last ", "done! ", "Bye.\n",
]  # fmt: skip
# Sent without waiting, after the prose: an address split across events must still be masked.
ENTITY = ["mail bob@exa", "mple.com now"]
WAIT_S = 10.0  # bounded wait for the client; only a stalled gateway ever reaches it

MASKED_ALL = """
[[connections]]
name = "lockstep"
upstream = "{url}"

[[rules]]
id = "lockstep-masked"
groups = ["analysts"]
connections = ["lockstep"]
action = "allow"
mask = ["all"]
"""


def sse_chunk(text: str | None) -> bytes:
    delta = {"content": text} if text is not None else {}
    doc = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "llama-3-8b",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None if text else "stop"}],
    }
    event = f"data: {json.dumps(doc)}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(event), event)


@dataclass
class LockStep:
    url: str
    received: list[threading.Event] = field(
        default_factory=lambda: [threading.Event() for _ in SETTLED]
    )
    waited_for: list[int] = field(default_factory=list)  # tokens the client never got in time


def _serve(conn: socket.socket, upstream: LockStep) -> None:
    with conn, suppress(OSError):
        if read_head(conn) is None:
            return
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for k, token in enumerate(SETTLED):
            conn.sendall(sse_chunk(token))
            if not upstream.received[k].wait(WAIT_S):
                upstream.waited_for.append(k)
                return  # cut the stream: the gateway held token k back
        for part in ENTITY:
            conn.sendall(sse_chunk(part))
        conn.sendall(sse_chunk(None) + sse_chunk_done() + b"0\r\n\r\n")


def sse_chunk_done() -> bytes:
    event = b"data: [DONE]\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


@contextmanager
def lockstep_upstream() -> Iterator[LockStep]:
    listener = socket.create_server(("127.0.0.1", 0))
    upstream = LockStep(f"http://127.0.0.1:{listener.getsockname()[1]}")

    def accept() -> None:
        with suppress(OSError):
            conn, _ = listener.accept()
            _serve(conn, upstream)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        listener.close()
        for event in upstream.received:
            event.set()  # release the server thread whatever happened
        thread.join(WAIT_S)


def test_prose_tokens_cross_a_masking_gateway_one_by_one(
    issuer, start_gateway, analyst_token
) -> None:
    with lockstep_upstream() as upstream:
        config = gateway_config(issuer.url, "http://127.0.0.1:9") + MASKED_ALL.format(
            url=upstream.url
        )
        gateway = start_gateway(config)
        ends = [sum(map(len, SETTLED[: k + 1])) for k in range(len(SETTLED))]
        text = ""
        # A stalled gateway sees the upstream cut the stream: the assertions below say why.
        with (
            suppress(httpx.RemoteProtocolError),
            httpx.stream(
                "POST",
                f"{gateway.url}/lockstep/v1/chat/completions",
                headers={"authorization": f"Bearer {analyst_token}"},
                json={"model": "llama-3-8b", "messages": [], "stream": True},
                timeout=30,
            ) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"]
                text += delta.get("content") or ""
                for k, end in enumerate(ends):
                    if len(text) >= end:
                        upstream.received[k].set()
    assert upstream.waited_for == [], (
        f"the gateway held token {upstream.waited_for} ({SETTLED[upstream.waited_for[0]]!r}) "
        f"until the next one; the client had {text!r}"
    )
    assert text.startswith("".join(SETTLED)), text
    assert text.endswith("mail [EMAIL] now"), text  # masking was on, across events
    assert "bob@" not in text
