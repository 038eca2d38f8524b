"""The gateway's two h11 legs and nothing else: what a proxy built on them costs at the least.

    python benches/h11_floor_proxy.py --upstream http://127.0.0.1:9000

Listens on a free port (prints `listening on URL`) with the gateway's own server
(`gateway/server.py`: uvloop, h11, limits, timers) and upstream client (`gateway/upstream.py`:
pooled h11 connections), and relays every request to the upstream as it is and the answer back
chunk by chunk (with the upstream's Content-Length when it sent one, as the gateway relays a
body of known length): no token check, policy, masking, audit, access log or metrics.
`bench_ttft.py` and `bench_cpu.py` run it beside the gateway, so the part of the gateway's added
time and CPU that h11 and the socket hops take by themselves is measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import urlsplit

import uvloop

from gateway import headers as hdr
from gateway.config import ConnectionConfig, ServerConfig
from gateway.server import IncomingRequest, ResponseWriter, ServerState, serve
from gateway.upstream import UpstreamPool

NOT_RELAYED = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}
# h11 frames the answer by its Content-Length if it has one, else chunked.
NOT_RELAYED_BACK = NOT_RELAYED - {b"content-length"}


async def run(upstream: str) -> None:
    limits = ServerConfig(host="127.0.0.1", port=0)
    pool = UpstreamPool(ConnectionConfig(name="upstream", upstream=upstream), limits)
    netloc = urlsplit(upstream).netloc.encode()

    async def relay(request: IncomingRequest, writer: ResponseWriter) -> None:
        headers = [(n, v) for n, v in request.headers if n not in NOT_RELAYED]
        headers += [(b"host", netloc), (b"content-length", str(len(request.body)).encode())]
        response = await pool.request(request.method, request.target, headers, request.body)
        out = hdr.without(response.headers, NOT_RELAYED_BACK)
        started = False
        while (chunk := await response.read()) is not None:
            if started:
                await writer.write(chunk)
            else:
                await writer.start(response.status, out, chunk)
                started = True
        if not started:
            await writer.start(response.status, out)
        await writer.end()

    server = await serve(ServerState(relay, limits), limits.host, limits.port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    await asyncio.Event().wait()  # until killed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    uvloop.run(run(parser.parse_args().upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
