"""`gateway evidence` on a big log: peak memory (RSS) and time of one report.

    python benches/bench_evidence.py                  # 1,000,000 entries
    python benches/bench_evidence.py --entries 200000 --dir /var/tmp

Builds a log shaped like a busy gateway's (per request a `decision` and an `inference` entry,
each with a small sealed body; every 20th request refused instead), then runs `gateway evidence`
and `gateway audit verify` on it as child processes and reports each one's peak RSS (getrusage
of the child). The bound: evidence on 1M entries under 300 MB. `audit verify` is the baseline
measured in the same run: evidence verifies the log first, so it cannot use less.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.audit import AuditLog, init_keys

ORIGIN = "bench.local/audit"
CONFIG = """
[identity]
issuer = "https://idp.example.com"
audience = "inference-gateway"

[[connections]]
name = "llama"
upstream = "https://models.internal"
credential_env = "BENCH_UPSTREAM_KEY"

[[rules]]
id = "analysts-chat"
groups = ["analysts"]
connections = ["llama"]
models = ["llama-3*"]
action = "allow"
mask = ["all"]

[audit]
dir = "{dir}/audit"
origin = "bench.local/audit"
signing_key = "{dir}/keys/signing.key"
sealing_key = "{dir}/keys/sealing.key"
readers = ["auditors"]
"""


def request(i: int) -> dict:
    return {
        "request_id": f"{i:08x}-0000-4000-8000-{i:012x}",
        "received": "2026-01-01T00:00:00.000000Z",
        "client": f"10.1.{i % 250}.{i % 200}:51514",
        "method": "POST",
        "path": "/llama/v1/chat/completions",
        "subject": f"analyst-{i % 97:03d}@example.com",
        "groups": ["analysts"],
        "connection": "llama",
        "model": "llama-3-70b",
        "request_sha256": "ab" * 32,
    }


async def build(directory: Path, keys: Path, entries: int) -> None:
    log = await AuditLog.open(
        directory,
        origin=ORIGIN,
        signing_key=keys / "signing.key",
        sealing_key=keys / "sealing.key",
        durability="batch",
    )
    await log.append({"type": "gateway.started", "config_sha256": "00" * 32, "version": "b"})
    await log.append(
        {"type": "policy.loaded", "config_sha256": "00" * 32, "rules": ["analysts-chat"],
         "connections": ["llama"]}
    )  # fmt: skip
    requests = (entries - 2) // 2

    async def one(i: int) -> None:
        fields = request(i)
        if i % 20 == 19:
            denied = {**fields, "type": "denied", "status": 403, "code": "denied",
                      "reason": "no rule allows this request"}  # fmt: skip
            await log.append(denied, {"request": b"q" * 64})
            await log.append({**denied, "request_id": fields["request_id"][:-1] + "f"})
            return
        allowed = {**fields, "decision": "allow", "rule": "analysts-chat"}
        seq = await log.append({**allowed, "type": "decision"}, {"request": b"q" * 64})
        exchange = {**allowed, "type": "inference", "decision_seq": seq, "status": 200,
                    "served_model": "llama-3-70b-instruct", "tokens_in": 12, "tokens_out": 40,
                    "bytes_in": 64, "bytes_upstream": 128, "bytes_out": 128,
                    "upstream_ttfb_ms": 80.1, "total_ms": 900.2, "masked": {"email": i % 2},
                    "response_sha256": "cd" * 32}  # fmt: skip
        await log.append(exchange, {"response": b"r" * 128})

    for start in range(0, requests, 1000):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 1000, requests))))
    await log.close()


def peak_rss(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one child process, from its own rusage (wait4)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(argv[:3])} failed: {err.read().decode()}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t


def collect_only(root: Path) -> None:
    """Verify, then report the peak RSS of what follows (the pass, the proofs, the files).

    Linux's clear_refs "5" resets the process's peak RSS (VmHWM) once verification is done."""
    from gateway import config as config_module
    from gateway.evidence import collect, report

    cfg = config_module.load(root / "gateway.toml")
    logs = collect.open_logs([root / "audit"])
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    report.write_report(report.report_on(cfg, logs, None, None), root / "report")
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))  # fmt: skip
    print(int(hwm.split()[1]) / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--dir", help="where to write (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the log (reuse it with --reuse)")
    ap.add_argument("--reuse", help="an existing bench dir: skip building the log")
    ap.add_argument("--build", help=argparse.SUPPRESS)  # the child that builds the log
    ap.add_argument("--collect", help=argparse.SUPPRESS)  # the child measuring collection
    args = ap.parse_args()
    if args.collect:
        collect_only(Path(args.collect))
        return
    if args.build:
        init_keys(Path(args.build) / "keys", ORIGIN)
        asyncio.run(build(Path(args.build) / "audit", Path(args.build) / "keys", args.entries))
        (Path(args.build) / "gateway.toml").write_text(CONFIG.format(dir=args.build))
        return
    root = Path(args.reuse or tempfile.mkdtemp(dir=args.dir))
    env = {**os.environ, "BENCH_UPSTREAM_KEY": "bench"}
    try:
        if not args.reuse:
            # Built in a child: a child's peak RSS includes its parent's at fork, so the
            # measuring process must stay small.
            t = time.perf_counter()
            build_argv = [sys.executable, __file__, "--build", str(root)]
            subprocess.run([*build_argv, "--entries", str(args.entries)], check=True)
            print(f"built {args.entries:,} entries in {time.perf_counter() - t:.0f}s")
        size = (root / "audit" / "entries").stat().st_size / 2**20
        print(f"entries file: {size:,.0f} MB")
        verify = ["gateway", "audit", "verify", "--dir", str(root / "audit")]
        rss, took = peak_rss(verify, env)
        print(f"baseline: gateway audit verify: peak RSS {rss:,.0f} MB, {took:.1f}s")
        evidence = ["gateway", "evidence", "-c", str(root / "gateway.toml"),
                    "--out", str(root / "report")]  # fmt: skip
        rss_e, took_e = peak_rss(evidence, env)
        print(f"gateway evidence: peak RSS {rss_e:,.0f} MB ({rss_e / rss:.2f}x verify), "
              f"{took_e:.1f}s; bound 300 MB: {'met' if rss_e < 300 else 'NOT met'}")  # fmt: skip
        child = [sys.executable, __file__, "--collect", str(root)]
        after = float(subprocess.run(child, capture_output=True, text=True, env=env,
                                     check=True).stdout.split()[-1])  # fmt: skip
        print(f"of which collection and writing, after verification: peak RSS {after:,.0f} MB")
    finally:
        if not (args.keep or args.reuse):
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
