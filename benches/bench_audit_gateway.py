"""Latency the audit log adds per request, through the real gateway.

    python benches/bench_audit_gateway.py            # full run (about 1 minute)
    python benches/bench_audit_gateway.py --quick    # smoke run

Starts the demo issuer, the demo upstream (no token delay) and three gateways on the same
upstream: without [audit], with durability "batch", and with "sync" (a decision entry fsynced
before forwarding, an inference entry with the sealed request and response before the last
byte). Each serves the same non-streamed ~1 KB chat completion:
  1. one request at a time on a keep-alive connection (the cost a lone caller sees);
  2. an open-loop fixed rate (requests on a schedule; latency counted from when each was due).
Phases rotate between the three gateways so machine noise hits all of them alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from bench_proxy import CHAT_BODY, UPSTREAM_KEY, config, fixed_rate, pct, raw_request, streams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import peers

MODES = ("none", "batch", "sync")
PATH = "/llama/v1/chat/completions"


def audit_section(tmp: Path, durability: str) -> str:
    keys = tmp / "keys"
    return f"""
[audit]
dir = "{tmp / durability}"
origin = "bench.gateway/{durability}"
durability = "{durability}"
signing_key = "{keys / "signing.key"}"
sealing_key = "{keys / "sealing.key"}"
"""


def row(name: str, results: dict[str, list[float]]) -> str:
    """p50 / p99 per mode, then what batch and sync add over no audit log."""
    p = {m: (pct(results[m], 0.5), pct(results[m], 0.99)) for m in MODES}
    cells = [f"{p[m][0]:.3f} / {p[m][1]:.3f}" for m in MODES]
    base50, base99 = p["none"]
    added = [
        f"{p[m][0] - base50:+.3f} / {p[m][1] - base99:+.3f} (x{p[m][0] / base50:.2f})"
        for m in ("batch", "sync")
    ]
    return f"| {name} | {' | '.join(cells)} | {' | '.join(added)} |"


async def run(args: argparse.Namespace, urls: dict[str, str], token: str) -> None:
    targets = {m: raw_request(urls[m], PATH, CHAT_BODY, token) for m in MODES}
    for target in targets.values():
        await fixed_rate(target, 200, 0.5)  # warm pools and token caches
    lone: dict[str, list[float]] = {m: [] for m in MODES}
    rated: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(1 if args.quick else 3):
        for mode, target in targets.items():
            lone[mode] += (await streams(target, args.count))[1]
        for mode, target in targets.items():
            rated[mode] += await fixed_rate(target, args.rate, args.seconds)
    print(
        "\n## Audit log cost per non-streamed chat completion, ms p50 / p99\n\n"
        "| case | no [audit] | batch | sync | batch adds | sync adds |\n|---|---|---|---|---|---|"
    )
    print(row("one request at a time", lone))
    print(row(f"open loop, {args.rate:g} req/s", rated))
    print(f"\n{len(lone['sync'])} sequential and {len(rated['sync'])} open-loop requests per mode")
    syncs = fdatasync_seconds(Path(urls["dir"]))
    print(
        f"fdatasync of a 1 KB append on this disk: p50 {pct(syncs, 0.5):.3f} ms, "
        f"p99 {pct(syncs, 0.99):.3f} ms (sync's target at p50: 2 x fdatasync + 0.3 ms = "
        f"{2 * pct(syncs, 0.5) + 0.3:.3f} ms added)"
    )


def fdatasync_seconds(directory: Path, count: int = 300) -> list[float]:
    """What one durable append costs on the disk the logs are on, measured in this run."""
    fd = os.open(directory / "fdatasync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        out = []
        for _ in range(count):
            os.write(fd, b"x" * 1024)
            start = time.perf_counter()
            os.fdatasync(fd)
            out.append(time.perf_counter() - start)  # seconds, as pct() takes them
        return out
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=500, help="sequential requests per phase")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.seconds, args.count = 100.0, 1.0, 50
    env = {**os.environ, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}
    with (
        peers.start_issuer() as issuer,
        peers.start_upstream(api_key=UPSTREAM_KEY, token_delay_ms=0) as upstream,
        tempfile.TemporaryDirectory() as tmp_dir,
    ):
        tmp = Path(tmp_dir)
        keys = ["gateway", "keys", "init", "--dir", str(tmp / "keys")]
        subprocess.run(keys, check=True, capture_output=True)
        gateways = {}
        try:
            for mode in MODES:
                text = config(issuer.url, upstream.url)
                if mode != "none":
                    text += audit_section(tmp, mode)
                (tmp / f"{mode}.toml").write_text(text)
                command = ["gateway", "serve", "-c", str(tmp / f"{mode}.toml")]
                gateways[mode] = peers.launch(command, env=env)
            token = peers.mint(issuer.url, "bench", ["analysts"])
            print(
                f"# bench_audit_gateway: {os.cpu_count()} cores, python {sys.version.split()[0]}, "
                f"load average {os.getloadavg()[0]:.2f}"
            )
            urls = {m: g.url for m, g in gateways.items()} | {"dir": tmp_dir}
            uvloop.run(run(args, urls, token))
        finally:
            for gateway in gateways.values():
                gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
