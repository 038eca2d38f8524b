"""Where one request's time goes inside the real gateway, step by step (sync audit by default).

    python benches/bench_sync_timeline.py                  # 1000 requests, one at a time
    python benches/bench_sync_timeline.py --cpu 1          # the gateway pinned (taskset -c 1)
    python benches/bench_sync_timeline.py --durability none

Starts the demo issuer, the demo upstream and one gateway whose PYTHONPATH holds
`benches/timeline_probe/` (a `sitecustomize` that timestamps the entry and exit of a few
methods and of `os.fdatasync`, on whichever thread runs them), sends the requests one at a time
on a keep-alive connection, stops the gateway and prints the median time between consecutive
steps over the requests that took the most common path. Numbers from wrapped methods carry the
wrappers' own cost (about a microsecond a step); they tell where the time goes, not how much
the gateway adds in all, which `bench_audit_gateway.py` measures unwrapped.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
from pathlib import Path

import orjson
import uvloop
from bench_audit_gateway import PATH, audit_section, bench_peers
from bench_proxy import CHAT_BODY, UPSTREAM_KEY, config, raw_request, streams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import peers

PROBE = Path(__file__).resolve().parent / "timeline_probe"
FIRST, LAST = "read >", "response sent >"
WARM_UP = 200  # requests sent first and left out of the report


def requests_in(marks: list[tuple[str, float]]) -> list[list[tuple[str, float]]]:
    """The marks cut into requests: from a request's first read to its response sent."""
    out: list[list[tuple[str, float]]] = []
    current: list[tuple[str, float]] | None = None
    for step, at in marks:
        if step == FIRST and current is None:
            current = []
        if current is not None:
            current.append((step, at))
            if step == LAST:
                out.append(current)
                current = None
    return out


def report(marks: list[tuple[str, float]]) -> None:
    requests = requests_in(marks)[WARM_UP:]
    paths = collections.Counter(tuple(step for step, _ in r) for r in requests)
    path, count = paths.most_common(1)[0]
    same = [r for r in requests if tuple(step for step, _ in r) == path]
    print(f"{len(requests)} requests, {count} took the most common path; medians in µs\n")
    print("| from | to | µs |\n|---|---|---|")
    for i in range(1, len(path)):
        gap = statistics.median((r[i][1] - r[i - 1][1]) * 1e6 for r in same)
        print(f"| {path[i - 1]} | {path[i]} | {gap:.1f} |")
    total = statistics.median((r[-1][1] - r[0][1]) * 1e6 for r in same)
    print(f"| {FIRST} | {LAST} | {total:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--durability", choices=["sync", "batch", "none"], default="sync")
    parser.add_argument("--cpu", help="run the gateway pinned to these CPUs (taskset -c)")
    args = parser.parse_args()
    with bench_peers() as (issuer, upstream, tmp):
        text = config(issuer.url, upstream.url)
        if args.durability != "none":
            text += audit_section(tmp, args.durability, args.durability)
        (tmp / "gateway.toml").write_text(text)
        marks_file = tmp / "marks.json"
        env = {
            **os.environ,
            "BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")])),
            "GATEWAY_TIMELINE": str(marks_file),
        }
        command = ["gateway", "serve", "-c", str(tmp / "gateway.toml")]
        if args.cpu:
            command = ["taskset", "-c", args.cpu, *command]
        gateway = peers.launch(command, env=env)
        try:
            token = peers.mint(issuer.url, "bench", ["analysts"])
            target = raw_request(gateway.url, PATH, CHAT_BODY, token)
            uvloop.run(streams(target, WARM_UP))  # the pool, the token cache, the log
            uvloop.run(streams(target, args.count))
        finally:
            gateway.stop()
        if not marks_file.exists():
            print(f"the gateway wrote no timeline; its stderr:\n{gateway.stderr()}")
            return 1
        marks = [(step, at) for step, at in orjson.loads(marks_file.read_bytes())]
    print(
        f"# bench_sync_timeline: durability {args.durability}, {args.count} requests one at a "
        f"time, load average {os.getloadavg()[0]:.2f}"
        + (f", gateway on CPU {args.cpu}" if args.cpu else "")
    )
    report(marks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
