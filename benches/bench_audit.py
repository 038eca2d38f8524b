"""Audit log benchmark: append throughput (sync and batch), latency, verify and proof at scale.

    python benches/bench_audit.py                 # quick: 50k appends, verify of 200k
    python benches/bench_audit.py --big 1000000   # the 1M-entry verify/proof/open figures
    python benches/bench_audit.py --big 1000000 --skip-append --keep /var/tmp/big1m

Entries are ~1 KB of canonical JSON. Runs in a temporary directory on the current disk;
`--keep DIR` keeps the big log (and its keys) in DIR and reuses it on later runs, since
building a million entries takes minutes (one DIR per shape: with --big-sealed or without).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from gateway.audit import AuditLog, LogReader, init_keys, verify_log

ORIGIN = "bench.local/audit"


def make_entry(i: int) -> dict:
    """An inference entry of about 1 KB, shaped like what the proxy records."""
    return {
        "type": "inference",
        "request_id": f"{i:032x}",
        "subject": "analyst-042@example.com",
        "groups": ["analysts", "ml-platform"],
        "client": "10.1.2.3:51514",
        "connection": "llama",
        "method": "POST",
        "path": "/llama/v1/chat/completions",
        "model_requested": "llama-3-70b",
        "model_served": "llama-3-70b-instruct",
        "model_version": "2024-06-01",
        "status": 200,
        "bytes_in": 1834,
        "bytes_out": 5120,
        "ttfb_us": 81234,
        "total_us": 912345,
        "rule": "analysts-chat",
        "decision": "allow",
        "masked": {"email": 2, "phone": 1},
        "body_sha256": {"request": "ab" * 32, "response": "cd" * 32},
        "pad": "x" * 440,
    }


async def open_log(d: Path, keys: Path, durability: str) -> AuditLog:
    return await AuditLog.open(
        d,
        origin=ORIGIN,
        signing_key=keys / "signing.key",
        sealing_key=keys / "sealing.key",
        durability=durability,  # type: ignore[arg-type]
    )


async def throughput(
    d: Path, keys: Path, durability: str, n: int, workers: int, sealed: bool
) -> tuple[float, list[float]]:
    """Entries/s with `workers` concurrent appenders, and per-append latencies (s)."""
    log = await open_log(d, keys, durability)
    body = {"request": b"q" * 1024, "response": b"r" * 2048} if sealed else None
    lat: list[float] = []
    per = n // workers

    async def worker(w: int) -> None:
        for j in range(per):
            t = time.perf_counter()
            await log.append(make_entry(w * per + j), body)
            lat.append(time.perf_counter() - t)
            if durability == "batch":
                await asyncio.sleep(0)  # a real caller yields (network I/O) between requests

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    await log.close()  # includes the final flush for batch mode
    return per * workers / (time.perf_counter() - t0), lat


async def single_latency(d: Path, keys: Path, n: int) -> list[float]:
    """Latency of one append with nothing else in flight (sync durability)."""
    log = await open_log(d, keys, "sync")
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await log.append(make_entry(i))
        lat.append(time.perf_counter() - t)
    await log.close()
    return lat


async def time_open(d: Path, keys: Path, runs: int = 5) -> float:
    """Median seconds to open (recover) the log in `d` for writing."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        log = await open_log(d, keys, "sync")
        times.append(time.perf_counter() - t)
        await log.close()
    return statistics.median(times)


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1e3


async def big(d: Path, keys: Path, n: int, sealed: bool) -> None:
    """Build an n-entry log (unless `d` holds one kept earlier), then time verify, open
    (recovery scan) and proofs."""
    blobs = " with 2 sealed blobs each" if sealed else ""
    if (d / "checkpoint").exists():
        n = LogReader(d).size
        print(f"reusing the {n}-entry log in {d}")
    else:
        t = time.perf_counter()
        rate, _ = await throughput(d, keys, "batch", n, 1000, sealed=sealed)
        took = time.perf_counter() - t
        print(f"built {n} entries{blobs} in {took:.1f}s ({rate:,.0f}/s batch)")
    t = time.perf_counter()
    report = verify_log(d)
    took = time.perf_counter() - t
    files = [str(d / "entries"), *map(str, sorted((d / "sealed").iterdir()))]
    t = time.perf_counter()
    subprocess.run(["sha256sum", *files], check=True, capture_output=True)  # noqa: ASYNC221 (timed on purpose)
    floor = time.perf_counter() - t
    print(
        f"audit verify {n}: {took:.2f}s -> {report.summary()[:60]}; sha256sum over the same "
        f"files {floor:.2f}s (ratio {took / floor:.2f})"
    )
    small = d.with_name(d.name + "-10k")
    await throughput(small, keys, "batch", 10_000, 100, sealed=sealed)
    open_small, open_big = await time_open(small, keys), await time_open(d, keys)
    print(
        f"open (resume from the last checkpoint): 10k {open_small * 1e3:.1f} ms, "
        f"{n} {open_big * 1e3:.1f} ms, ratio {open_big / open_small:.2f}"
    )
    shutil.rmtree(small)
    log = await open_log(d, keys, "sync")
    times = []
    for _ in range(1000):
        i = random.randrange(n)
        t = time.perf_counter()
        log.inclusion_proof(i)
        times.append(time.perf_counter() - t)
    print(f"inclusion proof at {n}: p50 {pct(times, 0.5):.3f} ms, p99 {pct(times, 0.99):.3f} ms")
    times = []
    for _ in range(200):
        old = random.randrange(1, n)
        t = time.perf_counter()
        log.consistency_proof(old, n)
        times.append(time.perf_counter() - t)
    print(f"consistency proof at {n}: p50 {pct(times, 0.5):.3f} ms, p99 {pct(times, 0.99):.3f} ms")
    await log.close()
    reader = LogReader(d)
    t = time.perf_counter()
    reader.node_getter(n)
    print(f"CLI reader proof setup at {n}: {(time.perf_counter() - t) * 1e3:.1f} ms")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--big", type=int, default=200_000, help="entries for verify/proof timing")
    ap.add_argument("--big-sealed", action="store_true", help="big log entries carry blobs")
    ap.add_argument("--skip-append", action="store_true", help="only the big-log figures")
    ap.add_argument("--dir", help="where to write (default: a temp dir on the work disk)")
    ap.add_argument(
        "--keep", metavar="DIR", help="keep the big log in DIR; reuse the one already there"
    )
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(dir=args.dir))
    kept = Path(args.keep) if args.keep else root
    try:
        if not (kept / "keys").exists():
            init_keys(kept / "keys", ORIGIN)
        runs = () if args.skip_append else (("sync", False), ("sync", True), ("batch", False))
        for durability, sealed in runs:
            d = root / f"{durability}-{sealed}"
            rate, lat = await throughput(
                d, kept / "keys", durability, args.entries, args.workers, sealed
            )
            label = f"{durability}{' +2 sealed blobs (1 KB, 2 KB)' if sealed else ''}"
            print(
                f"{label}: {rate:,.0f} entries/s with {args.workers} concurrent appenders; "
                f"append latency p50 {pct(lat, 0.5):.2f} ms p99 {pct(lat, 0.99):.2f} ms"
            )
            shutil.rmtree(d)
        if not args.skip_append:
            lat = await single_latency(root / "single", kept / "keys", 2000)
            print(
                f"sync, one appender: p50 {pct(lat, 0.5):.3f} ms, p99 {pct(lat, 0.99):.3f} ms, "
                f"mean {statistics.mean(lat) * 1e3:.3f} ms"
            )
        await big(kept / "big", kept / "keys", args.big, args.big_sealed)
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    asyncio.run(main())
