"""What this machine charges before the gateway does anything: the floors under issue 11's
two latency targets, measured in one run.

    python benches/bench_floor.py              # about 20 s
    python benches/bench_floor.py --n 1000

1. Disk. Issue 11 budgets a sync request "2 x fdatasync + 0.3 ms": the unit is the fdatasync
   of one 1 KB append (what `bench_audit_gateway.py` probes); a request commits two entries
   (`decision`, then `inference`), each with a sealed body. A commit makes one file durable,
   the write-ahead log holding the entries and blobs (docs/audit-format.md); before it,
   `entries` and the sealed segment were fdatasynced in parallel. Measured: one file; one file
   overwritten where it was written before (the write-ahead log keeps its size, so its
   fdatasync changes no metadata); two files in parallel (two threads); two files one after
   the other.
2. Hand-offs. The writer runs on a thread of its own so the event loop never blocks on the
   disk; a commit costs one hand-off to it and one back. Measured: a uvloop loop handing a
   no-op to the audit log's writer thread (`WriterThread`) and awaiting it, with the two on
   any CPU (as the gateway runs) and pinned to one CPU (where a wake-up needs no cross-CPU
   interrupt); and handing it a commit's disk work (overwrite 1 KB, fdatasync), whose wait
   lets the CPUs go idle between.
3. Idle CPUs. Issue 11's no-masking first-token target is met or missed on the way in, which
   runs once per stream: the same Python work (h11 parsing a chat request and serialising
   the upstream request) timed back to back and after the process slept 5 and 100 ms (a
   stream's token cadence and a stream's length).

Each is printed with the ratio that matters; the last lines put them together against the
two targets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h11
import uvloop
from bench_proxy import pct

from gateway.audit.writer_thread import WriterThread

KB = b"x" * 1024


def timed(step: Callable[[int], None], n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        step(i)
        out.append(time.perf_counter() - start)
    return out


def disk(directory: Path, n: int) -> dict[str, float]:
    pool = ThreadPoolExecutor(1)
    fds = [os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) for name in "abc"]
    a, b, kept = fds
    os.pwrite(kept, KB * n, 0)  # written once, as the write-ahead log is by earlier batches
    os.fsync(kept)

    def overwrite(i: int) -> None:
        os.pwrite(kept, KB, i * 1024)
        os.fdatasync(kept)

    def one(i: int) -> None:
        os.pwrite(a, KB, i * 1024)
        os.fdatasync(a)

    def parallel(i: int) -> None:
        os.pwrite(a, KB, (n + i) * 1024)
        os.pwrite(b, KB, i * 1024)
        other = pool.submit(os.fdatasync, b)
        os.fdatasync(a)
        other.result()

    def serial(i: int) -> None:
        os.pwrite(a, KB, (2 * n + i) * 1024)
        os.pwrite(b, KB, (n + i) * 1024)
        os.fdatasync(b)
        os.fdatasync(a)

    try:
        return {
            "one file": pct(timed(one, n), 0.5),
            "one file, overwritten where it was written before": pct(timed(overwrite, n), 0.5),
            "two files, in parallel": pct(timed(parallel, n), 0.5),
            "two files, one after the other": pct(timed(serial, n), 0.5),
        }
    finally:
        for fd in fds:
            os.close(fd)
        pool.shutdown()


def hand_off(n: int, pinned: bool, durable: int | None = None) -> float:
    """Median ms of a call on the audit log's writer thread (gateway.audit.writer_thread),
    awaited from the loop: doing nothing, or (`durable`: a file of n KB already written)
    overwriting 1 KB of that file and fdatasyncing it, as a commit."""
    cpu = {min(os.sched_getaffinity(0))}

    def commit(i: int) -> None:
        assert durable is not None
        os.pwrite(durable, KB, i % n * 1024)
        os.fdatasync(durable)

    job = commit if durable is not None else lambda i: None

    async def run() -> list[float]:
        thread = WriterThread("bench-hand-off")
        try:
            if pinned:
                await thread.run(os.sched_setaffinity, 0, cpu)  # 0: the calling thread
            out = []
            for i in range(n):
                start = time.perf_counter()
                await thread.run(job, i)
                out.append(time.perf_counter() - start)
                await asyncio.sleep(0.0005)  # a gap, as between appends
            return out
        finally:
            thread.shutdown()

    before = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, cpu)
    try:
        return pct(uvloop.run(run()), 0.5)
    finally:
        os.sched_setaffinity(0, before)


REQUEST = (
    b"POST /llama/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Authorization: Bearer " + b"e" * 700 + b"\r\nContent-Type: application/json\r\n"
    b"Content-Length: 110\r\n\r\n" + b"{" + b" " * 108 + b"}"
)
UPSTREAM_HEADERS = [
    (b"host", b"127.0.0.1:9000"),
    (b"content-type", b"application/json"),
    (b"content-length", b"110"),
    (b"x-request-id", b"0" * 36),
    (b"authorization", b"Bearer sk-upstream"),
]


def way_in() -> None:
    """The h11 work of one request on the way in: parse it, serialise the upstream's."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(REQUEST)
    while not isinstance(server.next_event(), h11.EndOfMessage):
        pass
    client = h11.Connection(h11.CLIENT)
    head = h11.Request(method=b"POST", target=b"/v1/chat/completions", headers=UPSTREAM_HEADERS)
    client.send(head)
    client.send(h11.Data(data=b"{" + b" " * 108 + b"}"))
    client.send(h11.EndOfMessage())


def after_idle(n: int, idle_s: float) -> float:
    for _ in range(50):
        way_in()  # warm
    out = []
    for _ in range(n):
        if idle_s:
            time.sleep(idle_s)
        start = time.perf_counter()
        way_in()
        out.append(time.perf_counter() - start)
    return pct(out, 0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400, help="samples per disk and hand-off case")
    args = parser.parse_args()
    print(f"# bench_floor: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}\n")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        syncs = disk(Path(tmp), args.n)
        fd = os.open(Path(tmp) / "commit", os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(fd, KB * args.n, 0)
        os.fsync(fd)
        commit = hand_off(args.n, False, fd)
        os.close(fd)
    print("| disk: 1 KB appends made durable | p50 ms | x one file |\n|---|---|---|")
    for name, ms in syncs.items():
        print(f"| {name} | {ms:.3f} | {ms / syncs['one file']:.2f} |")
    free, pinned = hand_off(args.n, False), hand_off(args.n, True)
    print("\n| hand-off: loop -> thread -> loop | p50 ms |\n|---|---|")
    print(f"| threads on any CPU (as the gateway runs) | {free:.3f} |")
    print(f"| both pinned to one CPU | {pinned:.3f} |")
    kept = syncs["one file, overwritten where it was written before"]
    print(
        f"| the thread making a 1 KB overwrite durable, as a commit | {commit:.3f} "
        f"({commit - kept:+.3f} over that fdatasync alone) |"
    )
    idle = {gap: after_idle(max(args.n // 8, 30), gap) for gap in (0.0, 0.005, 0.1)}
    print("\n| h11 way in (parse + serialise) | p50 ms | x back to back |\n|---|---|---|")
    for gap, ms in idle.items():
        label = "back to back" if not gap else f"after {gap * 1000:g} ms idle"
        print(f"| {label} | {ms:.3f} | {ms / idle[0.0]:.1f} |")
    one, pair = syncs["one file"], syncs["two files, in parallel"]
    budget = 2 * one + 0.3
    floor, before = 2 * commit, 2 * (pair + commit - kept)
    print(
        f"\nsync target: 2 x {one:.3f} + 0.3 = {budget:.3f} ms per request. Its floor here, "
        f"before any of the gateway's own work, is two commits (decision, inference), each one "
        f"file's fdatasync (the write-ahead log, which keeps its size: an overwrite) on the "
        f"writer thread, awaited from the event loop: 2 x {commit:.3f} = {floor:.3f} ms, "
        f"leaving {budget - floor:.3f} ms for building, sealing and writing both entries (in "
        f"the gateway that work and the wake-ups run colder: docs/benchmarks.md). With "
        f"`entries` and the segment fdatasynced in parallel instead (before the write-ahead log)"
        f" it was 2 x ({pair:.3f} + {commit - kept:.3f}) = {before:.3f} ms, leaving "
        f"{budget - before:.3f} ms."
    )
    print(
        f"first-token target (no masking) 0.5 ms: the h11 work alone of the way in costs "
        f"{idle[0.1]:.3f} ms after 100 ms idle ({idle[0.1] / idle[0.0]:.1f}x back to back)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
