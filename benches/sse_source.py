"""A bench upstream: any POST gets an OpenAI-style SSE stream of `--mb` megabytes, at once.

    python benches/sse_source.py --mb 200 [--port 0]

Each event is a chat.completion.chunk whose delta is ~1 KB of prose; every 16th carries an
e-mail address, so a masking rule has something to do. Prints `listening on URL` like the demo
servers. The events are made once and written as fast as the reader takes them.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
from aiohttp import web

PROSE = "The gateway relays each token as it arrives and seals the original as it passes. " * 12


def event(i: int) -> bytes:
    text = PROSE + (f" write to user{i}@example.com." if i % 16 == 0 else "")
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "model": "llama-3-8b",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def stream(request: web.Request) -> web.StreamResponse:
    await request.read()
    total = request.app["bytes"]
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    events = [event(i) for i in range(64)]
    batch = b"".join(events)
    sent = 0
    while sent < total:
        await response.write(batch)
        sent += len(batch)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=200)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    app = web.Application()
    app["bytes"] = int(args.mb * 1024 * 1024)
    app.router.add_post("/{tail:.*}", stream)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
