"""Proxy overhead: the demo upstream called directly and through the gateway, in one run.

    python benches/bench_proxy.py            # full run (about 2 minutes)
    python benches/bench_proxy.py --quick    # smoke run (seconds)

Starts the demo issuer, the demo upstream (no token delay) and a gateway with auth and policy on,
all on loopback, then measures with an open-loop load generator (requests are sent on a fixed
schedule, so a slow response cannot hide queueing; latency is taken from the scheduled time):
  1. a non-streamed ~1 KB chat completion at a fixed rate: p50/p99 direct, through the gateway,
     and the difference;
  2. the highest rate a closed loop of concurrent connections reaches through one gateway;
  3. a 200-token SSE stream: time to first token and total, direct and through the gateway.
Phases alternate direct/gateway so machine noise hits both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import peers

UPSTREAM_KEY = "sk-bench-upstream"
CHAT_BODY = orjson.dumps(
    {
        "model": "llama-3-8b",
        "messages": [{"role": "user", "content": "Summarise the gateway design. " * 8}],
        "max_tokens": 120,
    }
)
STREAM_BODY = orjson.dumps(
    {
        "model": "llama-3-8b",
        "messages": [{"role": "user", "content": "stream"}],
        "max_tokens": 200,
        "stream": True,
    }
)


def config(issuer: str, upstream: str) -> str:
    return f"""
[server]
listen = "127.0.0.1:0"
[identity]
issuer = "{issuer}"
audience = "inference-gateway"
[[connections]]
name = "llama"
upstream = "{upstream}"
credential_env = "BENCH_UPSTREAM_KEY"
[[rules]]
id = "interns"
groups = ["interns"]
action = "deny"
[[rules]]
id = "analysts"
groups = ["analysts"]
connections = ["llama"]
models = ["llama-3*"]
action = "allow"
"""


def raw_request(url: str, path: str, body: bytes, auth: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return parts.hostname or "", parts.port or 80, head + body


class Client:
    """One keep-alive connection that sends a prepared request and reads the response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Client:
        return cls(*await asyncio.open_connection(host, port))

    async def exchange(self, request: bytes) -> tuple[float, float]:
        """Send; return (seconds to first body byte, seconds to the end)."""
        started = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {head[:60]!r}")
        lower = head.lower()
        if b"content-length:" in lower:
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            await self.reader.readexactly(length)
            done = time.perf_counter() - started
            return done, done
        first = None
        while True:  # chunked
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            if first is None:
                first = time.perf_counter() - started
            await self.reader.readexactly(size + 2)
            if size == 0:
                return first, time.perf_counter() - started

    def close(self) -> None:
        self.writer.close()


async def fixed_rate(target: tuple[str, int, bytes], rate: float, seconds: float) -> list[float]:
    """Open loop: request i is due at i/rate; latency counts from when it was due."""
    host, port, request = target
    count = int(rate * seconds)
    pool = [await Client.open(host, port) for _ in range(32)]
    idle = asyncio.Queue()
    for client in pool:
        idle.put_nowait(client)
    latencies: list[float] = []
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        client = await idle.get()
        await client.exchange(request)
        latencies.append(time.perf_counter() - due)
        idle.put_nowait(client)

    await asyncio.gather(*(one(i) for i in range(count)))
    for client in pool:
        client.close()
    return latencies


async def closed_loop(target: tuple[str, int, bytes], concurrency: int, seconds: float) -> float:
    host, port, request = target
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        client = await Client.open(host, port)
        while time.perf_counter() < deadline:
            await client.exchange(request)
            done += 1
        client.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def streams(target: tuple[str, int, bytes], count: int) -> tuple[list[float], list[float]]:
    host, port, request = target
    client = await Client.open(host, port)
    ttft, total = [], []
    for _ in range(count):
        first, end = await client.exchange(request)
        ttft.append(first)
        total.append(end)
    client.close()
    return ttft, total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def verdict(ok: bool) -> str:
    """How a bench's last lines judge a target of issue 11."""
    return "met" if ok else "MISSED"


def row(name: str, direct: list[float], gateway: list[float]) -> str:
    d50, d99, g50, g99 = pct(direct, 0.5), pct(direct, 0.99), pct(gateway, 0.5), pct(gateway, 0.99)
    return (
        f"| {name} | {d50:.3f} / {d99:.3f} | {g50:.3f} / {g99:.3f} | "
        f"+{g50 - d50:.3f} / +{g99 - d99:.3f} |"
    )


async def run(args: argparse.Namespace, upstream_url: str, gateway_url: str, token: str) -> None:
    path = "/v1/chat/completions"
    direct = raw_request(upstream_url, path, CHAT_BODY, UPSTREAM_KEY)
    through = raw_request(gateway_url, "/llama" + path, CHAT_BODY, token)
    seconds = 2.0 if args.quick else args.seconds
    await fixed_rate(direct, 200, 0.5)  # warm both paths: pools, token cache, JIT-less caches
    await fixed_rate(through, 200, 0.5)

    lat_direct: list[float] = []
    lat_gateway: list[float] = []
    for _ in range(1 if args.quick else 3):
        lat_direct += await fixed_rate(direct, args.rate, seconds)
        lat_gateway += await fixed_rate(through, args.rate, seconds)
    print(f"\n## Non-streamed chat completion at {args.rate:g} req/s (open loop), ms p50 / p99\n")
    print("| case | direct | through gateway | added |\n|---|---|---|---|")
    print(row(f"{len(CHAT_BODY)} B request, ~1 KB response", lat_direct, lat_gateway))

    rps_direct = await closed_loop(direct, args.concurrency, seconds)
    rps_gateway = await closed_loop(through, args.concurrency, seconds)
    print(f"\n## Throughput, closed loop, {args.concurrency} connections\n")
    print("| direct req/s | through gateway req/s | ratio |\n|---|---|---|")
    print(f"| {rps_direct:.0f} | {rps_gateway:.0f} | {rps_gateway / rps_direct:.2f} |")

    stream_direct = raw_request(upstream_url, path, STREAM_BODY, UPSTREAM_KEY)
    stream_through = raw_request(gateway_url, "/llama" + path, STREAM_BODY, token)
    n = 5 if args.quick else 40
    d_first, d_total = await streams(stream_direct, n)
    g_first, g_total = await streams(stream_through, n)
    print("\n## 200-token SSE stream (no token delay), ms p50 / p99\n")
    print("| measure | direct | through gateway | added |\n|---|---|---|---|")
    print(row("time to first token", d_first, g_first))
    print(row("total", d_total, g_total))
    print(
        f"\nmedian of {len(lat_gateway)} gateway requests; "
        f"stdev direct {statistics.pstdev(lat_direct) * 1000:.3f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if args.quick:
        args.rate = 200.0
    with (
        peers.start_issuer() as issuer,
        peers.start_upstream(api_key=UPSTREAM_KEY, token_delay_ms=0) as upstream,
        tempfile.TemporaryDirectory() as tmp,
    ):
        config_path = Path(tmp) / "gateway.toml"
        config_path.write_text(config(issuer.url, upstream.url))
        env = {**os.environ, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}
        with peers.launch(["gateway", "serve", "-c", str(config_path)], env=env) as gateway:
            token = peers.mint(issuer.url, "bench", ["analysts"])
            print(f"# bench_proxy: {os.cpu_count()} cores, python {sys.version.split()[0]}")
            uvloop.run(run(args, upstream.url, gateway.url, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
