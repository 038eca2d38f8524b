"""What a sync-mode append costs beyond its fdatasync, in process, old checkout vs new.

    python benches/bench_audit_append.py --baseline /work/main       # about 30 s
    python benches/bench_audit_append.py --baseline /work/main --rounds 3 --n 1000

One caller appends a `decision`-shaped entry (with and without a sealed 1 KB body) and waits
for it, 1 ms apart, as a lone request does. Each checkout runs in a child process of its own
(its `gateway` package on PYTHONPATH), the checkouts alternating round by round so machine
noise hits both alike. "stubbed" replaces os.fdatasync with a no-op in the child: what is left
is the hand-off from the event loop to the writer thread and back plus the writer's own work,
the part of issue 11's "sync adds <= 2 x fdatasync + 0.3 ms" that is ours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENTRY = {
    "type": "decision",
    "request_id": "ab" * 16,
    "client": "127.0.0.1:5555",
    "method": "POST",
    "path": "/llama/v1/chat/completions",
    "subject": "alice",
    "issuer": "http://127.0.0.1:9000",
    "groups": ["analysts", "ml"],
    "connection": "llama",
    "model": "llama-3",
    "decision": "allow",
    "rule": "analysts-chat",
    "request_sha256": "cd" * 32,
}


def p50(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] * 1e3


async def appends(n: int, sealed: bool) -> float:
    """p50 ms of one awaited sync append."""
    from gateway.audit import AuditLog, init_keys

    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        d = Path(tmp)
        init_keys(d / "keys", "bench")
        log = await AuditLog.open(
            d / "log", origin="bench/append", signing_key=d / "keys" / "signing.key",
            sealing_key=d / "keys" / "sealing.key", durability="sync",
        )  # fmt: skip
        body = {"request": b"q" * 1024} if sealed else None
        took = []
        for _ in range(n):
            t = time.perf_counter()
            await log.append(dict(ENTRY), body)
            took.append(time.perf_counter() - t)
            await asyncio.sleep(0.001)
        await log.close()
    return p50(took)


def child(n: int, stub: bool) -> None:
    import uvloop

    if stub:
        os.fdatasync = lambda fd: None
    out = {s: uvloop.run(appends(n, s)) for s in (False, True)}
    print(json.dumps(out))


def run(checkout: Path, n: int, stub: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    args = [sys.executable, __file__, "--child", str(n)] + (["--stub"] if stub else [])
    return json.loads(subprocess.run(args, env=env, check=True, capture_output=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=False, help="the old checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=1000, help="appends per run")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stub", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.stub)
        return
    checkouts = {"new": Path(__file__).resolve().parents[1]}
    if args.baseline:
        checkouts["baseline"] = args.baseline
    print(f"load average {os.getloadavg()[0]:.2f}; p50 ms of one sync append, n={args.n}")
    columns = "stubbed, no body | stubbed, sealed 1 KB | real, no body | real, sealed 1 KB"
    print(f"| round | checkout | {columns} |")
    print("|---|---|---|---|---|---|")
    for r in range(1, args.rounds + 1):
        for name, path in checkouts.items():
            stub, real = run(path, args.n, True), run(path, args.n, False)
            cells = [f"{x[k]:.3f}" for x in (stub, real) for k in ("false", "true")]
            print(f"| {r} | {name} | {' | '.join(cells)} |")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
