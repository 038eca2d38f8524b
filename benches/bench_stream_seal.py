"""Memory of a long streamed response through sync audit: sealed in chunks, never held whole.

    python benches/bench_stream_seal.py            # 200 MB, unmasked and masked SSE
    python benches/bench_stream_seal.py --mb 20    # smoke run

Starts the demo issuer, benches/sse_source.py (an upstream that streams `--mb` MB of SSE as
fast as it is read) and one gateway with `[audit] durability = "sync"` and two rules on the same
upstream: one relays the stream as it is, one masks e-mail addresses in it. For each, the
gateway's resident set (VmRSS from /proc, sampled every 10 ms) is read before the stream and at
its highest during it; the target is a rise of at most 64 MB. Then the log is verified and each
sealed original is unsealed (`gateway audit unseal`, streamed) and checked against the SHA-256
of the bytes the upstream sent.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import peers

from gateway.audit import LogReader

TARGET_MB = 64


def config(issuer: str, upstream: str, tmp: Path) -> str:
    return f"""
[server]
listen = "127.0.0.1:0"
[identity]
issuer = "{issuer}"
audience = "inference-gateway"
[[connections]]
name = "llama"
upstream = "{upstream}"
[[rules]]
id = "masked"
groups = ["masked"]
connections = ["llama"]
action = "allow"
mask = ["email"]
[[rules]]
id = "plain"
groups = ["analysts"]
connections = ["llama"]
action = "allow"
[audit]
dir = "{tmp / "audit"}"
origin = "bench/stream-seal"
durability = "sync"
signing_key = "{tmp / "keys" / "signing.key"}"
sealing_key = "{tmp / "keys" / "sealing.key"}"
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Sampler(threading.Thread):
    """The highest VmRSS of a process while running."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, rss_mb(self.pid))


def stream_once(url: str, token: str) -> tuple[int, str, str, float]:
    """Bytes received, their SHA-256, the request id, seconds."""
    body = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "x"}], "stream": True}
    digest, size = hashlib.sha256(), 0
    started = time.perf_counter()
    headers = {"authorization": f"Bearer {token}"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 16):
            digest.update(chunk)
            size += len(chunk)
        request_id = response.headers["x-request-id"]
    return size, digest.hexdigest(), request_id, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=200)
    args = parser.parse_args()
    source = [sys.executable, str(Path(__file__).with_name("sse_source.py")), "--mb", str(args.mb)]
    with (
        peers.start_issuer() as issuer,
        peers.launch(source) as upstream,
        tempfile.TemporaryDirectory() as tmp_dir,
    ):
        tmp = Path(tmp_dir)
        keys = ["gateway", "keys", "init", "--dir", str(tmp / "keys")]
        subprocess.run(keys, check=True, capture_output=True)
        (tmp / "gateway.toml").write_text(config(issuer.url, upstream.url, tmp))
        gateway = peers.launch(["gateway", "serve", "-c", str(tmp / "gateway.toml")])
        url = f"{gateway.url}/llama/v1/chat/completions"
        rows, results = [], []
        try:
            print(f"# bench_stream_seal: {args.mb:g} MB SSE, load average {os.getloadavg()}")
            for label, group in (("unmasked", "analysts"), ("masked (email)", "masked")):
                token = peers.mint(issuer.url, "bench", [group])
                before = rss_mb(gateway.proc.pid)
                sampler = Sampler(gateway.proc.pid)
                sampler.start()
                size, digest, request_id, seconds = stream_once(url, token)
                sampler.stop.set()
                sampler.join()
                rise = sampler.peak - before
                rows.append((label, size, before, sampler.peak, rise, seconds))
                results.append((label, request_id, digest))
        finally:
            gateway.stop()
        print("\n| stream | MB sent | RSS before | RSS peak | rise | target | seconds |")
        print("|---|---|---|---|---|---|---|")
        for label, size, before, peak, rise, seconds in rows:
            verdict = "met" if rise <= TARGET_MB else "NOT met"
            print(
                f"| {label} | {size / 2**20:.0f} | {before:.0f} MB | {peak:.0f} MB | "
                f"**{rise:+.0f} MB** | <= {TARGET_MB} MB ({verdict}) | {seconds:.1f} |"
            )
        verify = subprocess.run(
            ["gateway", "audit", "verify", "--dir", str(tmp / "audit")],
            capture_output=True,
            text=True,
        )
        print(f"\naudit verify: {verify.stdout.strip() or verify.stderr.strip()}")
        reader = LogReader(tmp / "audit")
        log = [reader.read_entry(i) for i in range(reader.size)]
        for label, request_id, received in results:
            entry = next(
                e for e in log if e["type"] == "inference" and e["request_id"] == request_id
            )
            unseal = subprocess.Popen(
                [
                    "gateway",
                    "audit",
                    "unseal",
                    "--dir",
                    str(tmp / "audit"),
                    str(entry["seq"]),
                    "--name",
                    "response",
                    "--key",
                    str(tmp / "keys" / "sealing.key"),
                ],
                stdout=subprocess.PIPE,
            )
            digest = hashlib.sha256()
            assert unseal.stdout is not None
            while chunk := unseal.stdout.read(1 << 20):
                digest.update(chunk)
            ok = unseal.wait() == 0 and digest.hexdigest() == entry["response_sha256"]
            same = received == entry["response_sha256"]  # unmasked: the client got the original
            ref = entry["sealed"]["response"]
            print(
                f"{label}: entry {entry['seq']} sealed {ref['length'] / 2**20:.0f} MB in "
                f"{ref['file']}; unsealed = recorded response_sha256: {ok}; "
                f"client got the upstream bytes unchanged: {same}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
