"""A stand-in model server whose every response byte is scripted by the test (h11 on asyncio).

    python tests/scripted_upstream.py --port 0        # prints "listening on http://127.0.0.1:N"

`POST /_script/NAME` with `{"status", "headers": [[name, value]], "chunks": [latin-1 text],
"encoding", "only_if_accepted", "framing": "chunked" | "length", "cut"}` sets what `/NAME...`
answers (any method). `encoding` is null, "gzip", "deflate", "raw-deflate" (sent as deflate
without the zlib wrapper) or any other name (sent as it is, only named); `only_if_accepted`
compresses only when the request's Accept-Encoding names it. `{auth}` in a chunk or header
value is replaced by the `Authorization` value the request carried and `{auth_b64}` by its
base64, so an upstream that echoes the credential it received can be played. Chunks are
written one by one with a drain between them; `"cut": N` re-cuts the filled (and compressed)
body into chunks of N bytes.
`GET /_requests` lists what was asked (path and headers), oldest first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import zlib
from typing import Any

import h11

scripts: dict[str, dict[str, Any]] = {}
seen: list[dict[str, Any]] = []


def _compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)  # HTTP "deflate" is the zlib format (RFC 9110 §8.4.1.2)
    if encoding == "raw-deflate":  # what some servers send as "deflate"
        return zlib.compress(body, wbits=-zlib.MAX_WBITS)
    return body  # any other coding is only named: the test checks it is never relayed


def _answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, list[bytes]]:
    if path.startswith("/_script/"):
        scripts[path.removeprefix("/_script/")] = json.loads(body)
        return 200, [("content-type", "application/json")], [b"{}"]
    if path == "/_requests":
        return 200, [("content-type", "application/json")], [json.dumps(seen).encode()]
    seen.append({"path": path, "headers": headers})
    script = scripts.get(path.lstrip("/").split("/", 1)[0])
    if script is None:
        return 404, [("content-type", "text/plain")], [b"no script"]
    auth = headers.get("authorization", "")
    auth_b64 = base64.b64encode(auth.encode("latin-1")).decode()

    def fill(text: str) -> str:
        return text.replace("{auth}", auth).replace("{auth_b64}", auth_b64)

    chunks = [fill(c).encode("latin-1") for c in script.get("chunks", [])]
    out_headers = [(n, fill(v)) for n, v in script.get("headers", [])]
    encoding = script.get("encoding")
    accepted = encoding and encoding in headers.get("accept-encoding", "")
    if encoding and (accepted or not script.get("only_if_accepted")):
        chunks = [_compress(b"".join(chunks), encoding)]
        out_headers.append(("content-encoding", encoding.removeprefix("raw-")))
    if cut := script.get("cut"):
        body = b"".join(chunks)
        chunks = [body[i : i + cut] for i in range(0, len(body), cut)]
    if script.get("framing", "chunked") == "length":
        out_headers.append(("content-length", str(sum(map(len, chunks)))))
    return script.get("status", 200), out_headers, chunks


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request, body = None, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            if request is None:
                return
            names = {n.decode(): v.decode("latin-1") for n, v in request.headers}
            status, headers, chunks = _answer(request.target.decode(), names, body)
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
            for chunk in chunks:
                if chunk:
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.ProtocolError, ConnectionError):
        return
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
