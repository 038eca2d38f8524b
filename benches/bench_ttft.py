"""Token streams at a 5 ms cadence: what each system adds to the first token and to every token.

    python benches/bench_ttft.py                # 3 rounds x 10 streams x 100 tokens per system
    python benches/bench_ttft.py --quick        # 1 round x 3 streams
    python benches/bench_ttft.py --interval-ms 5 --tokens 100 --streams 10 --rounds 3

The upstream is `benches/sse_cadence.py`: an OpenAI-style SSE stream of ordinary prose, one
token of 1-6 characters per chat.completion.chunk, sent on a timer every interval (each event
stamped with its index and CLOCK_MONOTONIC send time). Systems, measured side by side in one
run, in rotating rounds so machine noise hits all of them:

- `upstream direct`;
- `nginx proxy` (Debian's nginx, `proxy_buffering off`): the floor for one hop;
- `h11 legs only` (`benches/h11_floor_proxy.py`): the gateway's own server and upstream client
  relaying as they are, with nothing between them: the floor for a proxy on h11 (issue 11
  keeps h11 on both legs);
- `gateway`: identity + policy, no masking rule;
- `+ masking`: a rule with `mask = ["all"]` (every built-in detector, as docs/masking.md);
- `+ audit batch`, `+ audit sync`: masking and a sealed audit log.

The client reads each response with raw sockets (one keep-alive connection per system),
decoding chunks and events as they arrive. Per system:

- time to the first non-empty token, from the request's send, p50 / p99 over all streams, and
  what that adds over the same figure direct (ms, and in token intervals); of that, how much
  is the request's way in (until the upstream sent token 0, by its stamp);
- per-token lag: for each upstream token, when its last character reached the client minus
  when the upstream sent it (masking may move text to a later event; characters are counted),
  averaged over every token of every stream; and what that adds over direct;
- CPU per token: user + system time of the system's process tree (from /proc) while its
  streams ran, over the tokens (the upstream's own, direct), less sensitive to the machine's
  load than the times.

The machine's load average and the busy share of all cores are printed for each round: the
machine is shared, so compare systems within one run. The last lines judge issue 11's targets:
no masking rule, the first token added <= 0.5 ms; masking, <= one interval + 1.5 ms and the
mean token lag added <= 1.5 intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import uvloop
from bench_cpu import Nginx, gateway_config, machine_busy, tree_cpu
from bench_proxy import pct, verdict
from sse_cadence import tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import peers

BENCHES = Path(__file__).resolve().parent
GATEWAYS = ("gateway", "+ masking", "+ audit batch", "+ audit sync")
NGINX_SSE = (
    "location / { proxy_pass http://bench_upstream; proxy_http_version 1.1; "
    'proxy_set_header Connection ""; proxy_buffering off; }'
)


@dataclass
class System:
    name: str
    url: str
    pid: int  # process tree whose CPU counts as this system's (the upstream's, direct)
    cpu: float = 0.0  # CPU seconds of that tree while its streams ran
    ttft: list[float] = field(default_factory=list)  # seconds, per stream
    inbound: list[float] = field(default_factory=list)  # request sent -> token 0 sent, seconds
    lags: list[float] = field(default_factory=list)  # seconds, per token


class Stream:
    """One keep-alive connection; `run` sends the request and times every token's arrival."""

    def __init__(self, url: str, token: str, count: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "", parts.port or 80
        body = orjson.dumps(
            {
                "model": "llama-3-8b",
                "messages": [{"role": "user", "content": "Tell me about the gateway."}],
                "max_tokens": count,
                "stream": True,
            }
        )
        self.request = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        ends, total = [], 0
        for text in tokens(count):
            total += len(text)
            ends.append(total)
        self.ends = ends  # characters received once token k has fully arrived

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def run(self) -> tuple[float, float, list[float]]:
        """Seconds to the first non-empty token and until the upstream sent token 0, and each
        token's lag after its send."""
        sent = time.monotonic_ns()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
            raise RuntimeError(f"unexpected response head: {head[:200]!r}")
        emitted: dict[int, int] = {}
        arrived: list[int] = []
        first = 0
        chars = 0
        pending = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await self.reader.readexactly(size + 2)
            now = time.monotonic_ns()
            if size == 0:
                break
            pending += data[:-2]
            *events, pending = pending.split(b"\n\n")
            for ev in events:
                if not ev.startswith(b"data: {"):
                    continue
                doc = orjson.loads(ev[6:])
                emitted.setdefault(doc["x_token"], doc["x_emit_ns"])
                text = doc["choices"][0]["delta"].get("content") or ""
                if text and not first:
                    first = now
                chars += len(text)
                while len(arrived) < len(self.ends) and self.ends[len(arrived)] <= chars:
                    arrived.append(now)
        if len(arrived) != len(self.ends):
            raise RuntimeError(f"{len(arrived)} of {len(self.ends)} tokens arrived")
        lags = [(at - emitted[k]) / 1e9 for k, at in enumerate(arrived)]
        return (first - sent) / 1e9, (emitted[0] - sent) / 1e9, lags


async def measure(args: argparse.Namespace, systems: list[System], token: str) -> None:
    streams = {s.name: Stream(s.url, token, args.tokens) for s in systems}
    for stream in streams.values():
        await stream.open()
        await stream.run()  # warm up: pools, token caches
    for r in range(args.rounds):
        busy0, total0 = machine_busy()
        load0 = os.getloadavg()[0]
        for s in systems:
            cpu0 = tree_cpu(s.pid)
            for _ in range(args.streams):
                ttft, inbound, lags = await streams[s.name].run()
                s.ttft.append(ttft)
                s.inbound.append(inbound)
                s.lags += lags
            s.cpu += tree_cpu(s.pid) - cpu0
        busy1, total1 = machine_busy()
        print(
            f"round {r + 1}: load average {load0:.2f} -> {os.getloadavg()[0]:.2f}, "
            f"all cores busy {(busy1 - busy0) / (total1 - total0):.0%} (this bench included)"
        )


def report(systems: list[System], interval_ms: float) -> None:
    direct = systems[0]
    d50, d99 = pct(direct.ttft, 0.5), pct(direct.ttft, 0.99)
    d_lag = statistics.fmean(direct.lags) * 1000
    print(
        "\n| system | first token p50 / p99 ms | added p50 / p99 ms | added p50, intervals "
        "| of which the way in, p50 ms | token lag mean / p50 ms | added mean ms (intervals) "
        "| CPU µs / token |\n|---|---|---|---|---|---|---|---|"
    )
    for s in systems:
        t50, t99 = pct(s.ttft, 0.5), pct(s.ttft, 0.99)
        lag = statistics.fmean(s.lags) * 1000
        inbound = pct(s.inbound, 0.5) - pct(direct.inbound, 0.5)
        print(
            f"| {s.name} | {t50:.2f} / {t99:.2f} | {t50 - d50:+.2f} / {t99 - d99:+.2f} | "
            f"{(t50 - d50) / interval_ms:.2f} | {inbound:+.2f} | {lag:.2f} / "
            f"{pct(s.lags, 0.5):.2f} | {lag - d_lag:+.2f} ({(lag - d_lag) / interval_ms:.2f}) | "
            f"{s.cpu / len(s.lags) * 1e6:.0f} |"
        )
    print(
        f"\n{len(direct.ttft)} streams of {len(direct.lags) // len(direct.ttft)} tokens per "
        f"system, one every {interval_ms:g} ms\n"
    )
    by_name = {s.name: s for s in systems}
    if "gateway" in by_name:
        added = pct(by_name["gateway"].ttft, 0.5) - d50
        print(
            f"- no masking rule: first token added {added:+.2f} ms at p50; target <= 0.5 ms: "
            f"{verdict(added <= 0.5)}"
        )
    if "+ masking" in by_name:
        masked = by_name["+ masking"]
        added, bound = pct(masked.ttft, 0.5) - d50, interval_ms + 1.5
        lag = (statistics.fmean(masked.lags) * 1000 - d_lag) / interval_ms
        print(
            f"- masking: first token added {added:+.2f} ms at p50; target <= one interval + 1.5 "
            f"= {bound:g} ms: {verdict(added <= bound)}; mean token lag added {lag:.2f} "
            f"intervals; target <= 1.5: {verdict(lag <= 1.5)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--streams", type=int, default=10, help="streams per system per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.streams, args.rounds = 3, 1
    source = [sys.executable, str(BENCHES / "sse_cadence.py"), "--interval-ms"]
    with (
        tempfile.TemporaryDirectory() as tmp_dir,
        peers.start_issuer() as issuer,
        peers.launch([*source, str(args.interval_ms)]) as upstream,
    ):
        tmp = Path(tmp_dir)
        keys = ["gateway", "keys", "init", "--dir", str(tmp / "keys")]
        subprocess.run(keys, check=True, capture_output=True)
        proxy = Nginx(tmp, "proxy", NGINX_SSE, urlsplit(upstream.url).port or 80)
        path = "/v1/chat/completions"
        systems = [
            System("upstream direct", upstream.url + path, upstream.proc.pid),
            System("nginx proxy", proxy.url + path, proxy.pid),
        ]
        started: list[peers.Peer] = []
        try:
            floor = [sys.executable, str(BENCHES / "h11_floor_proxy.py"), "--upstream"]
            started.append(peers.launch([*floor, upstream.url]))
            systems.append(System("h11 legs only", started[-1].url + path, started[-1].proc.pid))
            for name in GATEWAYS:
                conf = tmp / f"{name.replace(' ', '_').replace('+', 'p')}.toml"
                conf.write_text(gateway_config(issuer.url, upstream.url, tmp, name, '["all"]'))
                started.append(peers.launch(["gateway", "serve", "-c", str(conf)]))
                systems.append(System(name, f"{started[-1].url}/llama{path}", started[-1].proc.pid))
            token = peers.mint(issuer.url, "bench@example.com", ["analysts"])
            print(
                f"# bench_ttft: {os.cpu_count()} cores, {args.rounds} rounds x {args.streams} "
                f"streams x {args.tokens} tokens per system, {args.interval_ms:g} ms cadence"
            )
            uvloop.run(measure(args, systems, token))
        finally:
            for peer in started:
                peer.stop()
            proxy.stop()
    report(systems, args.interval_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
