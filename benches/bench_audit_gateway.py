"""Latency the audit log adds per request, through the real gateway, against its targets.

    python benches/bench_audit_gateway.py --rate 100             # full run (about 1 minute)
    python benches/bench_audit_gateway.py --quick                # smoke run
    python benches/bench_audit_gateway.py --baseline /tmp/old    # also a checkout to compare
    python benches/bench_audit_gateway.py --cpu 1                # gateways pinned (taskset)

Starts the demo issuer, the demo upstream (no token delay) and three gateways on the same
upstream: without [audit], with durability "batch", and with "sync" (a decision entry fsynced
before forwarding, an inference entry with the sealed request and response before the last
byte). `--baseline DIR` adds a batch and a sync gateway run from another checkout of the repo
(its `gateway` package on PYTHONPATH), so old and new are measured in the same run. Each serves
the same non-streamed ~1 KB chat completion, and the upstream is also called directly
(`--cpu N` runs every gateway under `taskset -c N`, see docs/operations.md on pinning):
  1. one request at a time on a keep-alive connection (the cost a lone caller sees);
  2. an open-loop fixed rate (requests on a schedule; latency counted from when each was due).
Phases rotate between all of them so machine noise hits each alike. The last lines judge the
targets of issue 11 (sync adds at most 2 x fdatasync + 0.3 ms at p50 one at a time, sync at most
8 ms at p99 open loop, batch adds at p99 at most 2 x what the gateway without audit adds + 1 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import uvloop
from bench_proxy import (
    CHAT_BODY,
    UPSTREAM_KEY,
    config,
    fixed_rate,
    pct,
    raw_request,
    streams,
    verdict,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import peers

PATH = "/llama/v1/chat/completions"
Results = dict[str, list[float]]


@contextlib.contextmanager
def bench_peers() -> Iterator[tuple[peers.Peer, peers.Peer, Path]]:
    """The demo issuer, the demo upstream (no token delay) and a temporary directory whose
    `keys/` holds the audit keys `audit_section` names."""
    with (
        peers.start_issuer() as issuer,
        peers.start_upstream(api_key=UPSTREAM_KEY, token_delay_ms=0) as upstream,
        tempfile.TemporaryDirectory() as tmp_dir,
    ):
        tmp = Path(tmp_dir)
        keys = ["gateway", "keys", "init", "--dir", str(tmp / "keys")]
        subprocess.run(keys, check=True, capture_output=True)
        yield issuer, upstream, tmp


def audit_section(tmp: Path, durability: str, name: str) -> str:
    keys = tmp / "keys"
    return f"""
[audit]
dir = "{tmp / name.replace("@", "-")}"
origin = "bench.gateway/{name.replace("@", "-")}"
durability = "{durability}"
signing_key = "{keys / "signing.key"}"
sealing_key = "{keys / "sealing.key"}"
"""


def row(name: str, modes: list[str], results: Results) -> str:
    """p50 / p99 per mode, then what each gateway adds over the one before it in the chain:
    the gateway over the upstream direct, audit modes over the gateway without [audit]."""
    p = {m: (pct(results[m], 0.5), pct(results[m], 0.99)) for m in modes}
    cells = [f"{p[m][0]:.3f} / {p[m][1]:.3f}" for m in modes]
    added = [adds(p, m) for m in modes if m != "direct"]
    return f"| {name} | {' | '.join(cells)} | {' | '.join(added)} |"


def base_of(mode: str) -> str:
    return "direct" if mode == "none" else "none"


def adds(p: dict[str, tuple[float, float]], mode: str) -> str:
    (m50, m99), (b50, b99) = p[mode], p[base_of(mode)]
    return f"{m50 - b50:+.3f} / {m99 - b99:+.3f}"


def verdicts(modes: list[str], lone: Results, rated: Results, syncs: list[float]) -> list[str]:
    """Each target of issue 11, measured in this run, with what was measured."""
    sync50 = 2 * pct(syncs, 0.5) + 0.3
    gateway99 = pct(rated["none"], 0.99) - pct(rated["direct"], 0.99)
    out = []
    for mode in (m for m in modes if m.startswith("sync")):
        added = pct(lone[mode], 0.5) - pct(lone["none"], 0.5)
        out.append(
            f"- {mode}, one at a time: adds {added:.3f} ms at p50; target <= 2 x fdatasync + 0.3 "
            f"= {sync50:.3f} ms: {verdict(added <= sync50)}"
        )
        p99 = pct(rated[mode], 0.99)
        p99_added = p99 - pct(rated["none"], 0.99)
        out.append(
            f"- {mode}, open loop: p99 {p99:.3f} ms (adds {p99_added:+.3f}); target <= 8 ms: "
            f"{verdict(p99 <= 8)}"
        )
    for mode in (m for m in modes if m.startswith("batch")):
        added = pct(rated[mode], 0.99) - pct(rated["none"], 0.99)
        bound = 2 * max(gateway99, 0.0) + 1
        out.append(
            f"- {mode}, open loop: adds {added:+.3f} ms at p99; target <= 2 x gateway's "
            f"{gateway99:+.3f} + 1 = {bound:.3f} ms: {verdict(added <= bound)}"
        )
    return out


async def run(args: argparse.Namespace, urls: dict[str, str], token: str, tmp: Path) -> None:
    modes = list(urls)
    targets = {m: raw_request(urls[m], PATH, CHAT_BODY, token) for m in modes if m != "direct"}
    targets["direct"] = raw_request(urls["direct"], "/v1/chat/completions", CHAT_BODY, UPSTREAM_KEY)
    for target in targets.values():
        await fixed_rate(target, 200, 0.5)  # warm pools and token caches
    lone: Results = {m: [] for m in modes}
    rated: Results = {m: [] for m in modes}
    syncs: list[float] = []  # probed between phases, so the disk is judged at the same times
    for _ in range(1 if args.quick else 3):
        for mode in modes:
            lone[mode] += (await streams(targets[mode], args.count))[1]
            syncs += fdatasync_seconds(tmp, 30)
        for mode in modes:
            rated[mode] += await fixed_rate(targets[mode], args.rate, args.seconds)
            syncs += fdatasync_seconds(tmp, 30)
    names = {"direct": "upstream direct", "none": "no [audit]"}
    header = [names.get(m, m) for m in modes] + [f"{names.get(m, m)} adds" for m in modes[1:]]
    print(
        "\n## Audit log cost per non-streamed chat completion, ms p50 / p99\n\n"
        f"| case | {' | '.join(header)} |\n|{'---|' * (len(header) + 1)}"
    )
    print(row("one request at a time", modes, lone))
    print(row(f"open loop, {args.rate:g} req/s", modes, rated))
    print(
        "\n'no [audit] adds' is over the upstream called directly; each audit mode's is over the "
        f"gateway without [audit]. {len(lone['none'])} sequential and {len(rated['none'])} "
        "open-loop requests per mode."
    )
    print(
        "fdatasync of a 1 KB append on this disk (probed between the phases): "
        f"p50 {pct(syncs, 0.5):.3f} ms, "
        f"p99 {pct(syncs, 0.99):.3f} ms; load average {os.getloadavg()[0]:.2f}\n"
    )
    print("\n".join(verdicts(modes, lone, rated, syncs)))


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
    parser.add_argument("--baseline", type=Path, help="a checkout to run batch and sync from too")
    parser.add_argument("--cpu", help="run the gateways pinned to these CPUs (taskset -c)")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.seconds, args.count = 100.0, 1.0, 50
    env = {**os.environ, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}
    modes = ["none", "batch", "sync"]
    if args.baseline:
        modes += ["batch@baseline", "sync@baseline"]
    with bench_peers() as (issuer, upstream, tmp):
        gateways = {}
        try:
            for mode in modes:
                text = config(issuer.url, upstream.url)
                durability, _, baseline = mode.partition("@")
                if durability != "none":
                    text += audit_section(tmp, durability, mode)
                path = tmp / f"{mode.replace('@', '-')}.toml"
                path.write_text(text)
                mode_env = {**env, "PYTHONPATH": str(args.baseline)} if baseline else env
                command = ["gateway", "serve", "-c", str(path)]
                if args.cpu:
                    command = ["taskset", "-c", args.cpu, *command]
                gateways[mode] = peers.launch(command, env=mode_env)
            token = peers.mint(issuer.url, "bench", ["analysts"])
            print(
                f"# bench_audit_gateway: {os.cpu_count()} cores, python {sys.version.split()[0]}, "
                f"load average {os.getloadavg()[0]:.2f}"
                + (f", baseline {args.baseline}" if args.baseline else "")
                + (f", gateways on CPU {args.cpu}" if args.cpu else "")
            )
            urls = {"direct": upstream.url} | {m: g.url for m, g in gateways.items()}
            uvloop.run(run(args, urls, token, tmp))
        finally:
            for gateway in gateways.values():
                gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
