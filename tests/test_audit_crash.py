"""kill -9 never loses an acknowledged exchange, and never loses a signed entry.

A real `gateway serve` with sync durability runs under load from real clients (plain and
streamed chat completions) and is SIGKILLed at random moments, then restarted on the same audit
directory. While each fresh gateway is quiet (started, not yet given to the clients) the log must
verify, hold an `inference` entry for every response a client received whole, and keep every
entry that a signed checkpoint covered byte for byte. Set CRASH_SEED to rerun a failure.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

import httpx
import orjson
import peers
import pytest
from conftest import audited_config, launch_gateway

from gateway.audit import Checkpoint, verify_log
from gateway.audit.store import iter_records, scan_frames

ROUNDS = 20
CLIENTS = 4  # threads; one of them streams
LONGEST_RUN_S = 0.6  # a gateway lives for a uniform random time up to this under load
BODY = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 6}


@dataclass
class Load:
    """Clients that call whichever gateway is current and note what came back whole."""

    token: str
    url: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: set[str] = field(default_factory=set)
    broken: int = 0  # exchanges cut off by a kill (evidence the kills land mid-request)

    def run(self, stream: bool) -> None:
        headers = {"authorization": f"Bearer {self.token}", "x-demo-token-delay-ms": "5"}
        with httpx.Client(timeout=5, headers=headers) as client:
            while not self.stop.is_set():
                url = self.url
                if url is None:
                    time.sleep(0.005)
                    continue
                try:
                    request_id = self._call(client, url, stream)
                except httpx.HTTPError:
                    with self.lock:
                        self.broken += 1
                    continue
                if request_id is not None:
                    with self.lock:
                        self.acknowledged.add(request_id)

    @staticmethod
    def _call(client: httpx.Client, url: str, stream: bool) -> str | None:
        """The request id of a 200 whose body arrived whole (httpx raises on a cut body)."""
        target = f"{url}/llama/v1/chat/completions"
        with client.stream("POST", target, json={**BODY, "stream": stream}) as response:
            response.read()
        return response.headers["x-request-id"] if response.status_code == 200 else None

    def snapshot(self) -> set[str]:
        with self.lock:
            return set(self.acknowledged)


def records(audit_dir) -> tuple[bytes, list[bytes]]:
    """The whole-record part of `entries` and its records."""
    data = (audit_dir / "entries").read_bytes()
    scan = scan_frames(data)
    return data[: scan.end], [bytes(r) for r in iter_records(data, scan)]


def signed_prefix(audit_dir) -> bytes:
    """The bytes of `entries` covered by the latest signed checkpoint."""
    note = (audit_dir / "checkpoint").read_bytes()
    size = Checkpoint.parse_body(note[: note.index(b"\n\n") + 1]).size
    data, recs = records(audit_dir)
    return data[: sum(4 + len(r) for r in recs[:size])]


def check_log(audit_dir, acknowledged: set[str], signed: bytes, seed: int) -> None:
    """It verifies, holds every acknowledged exchange, and keeps what was signed before."""
    report = verify_log(audit_dir)
    assert report.problem is None, f"seed {seed}: {report.problem}"
    data, recs = records(audit_dir)
    assert data.startswith(signed), f"seed {seed}: an entry under a signed checkpoint was lost"
    logged = {e["request_id"] for e in map(orjson.loads, recs) if e["type"] == "inference"}
    lost = acknowledged - logged
    assert not lost, f"seed {seed}: {len(lost)} acknowledged exchanges missing, e.g. {min(lost)}"


@pytest.mark.timeout(120)
def test_kill_9_under_load_loses_nothing_acknowledged(issuer, upstream, tmp_path) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(2**32)))
    print(f"CRASH_SEED={seed}")
    rng = random.Random(seed)
    config = tmp_path / "gateway.toml"
    config.write_text(audited_config(issuer.url, upstream.url, tmp_path, durability="sync"))
    audit_dir = tmp_path / "audit"
    load = Load(peers.mint(issuer.url, "alice@example.com", ["analysts"]))
    clients = [
        threading.Thread(target=load.run, args=(i == 0,), daemon=True) for i in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    signed = b""  # the entries under the latest signed checkpoint: this only grows
    try:
        for _ in range(ROUNDS):
            gateway = launch_gateway(config)  # recovers the torn tail the last kill left
            check_log(audit_dir, load.snapshot(), signed, seed)
            load.url = gateway.url
            time.sleep(rng.uniform(0, LONGEST_RUN_S))
            gateway.proc.kill()
            gateway.proc.wait()
            load.url = None
            gateway.stop()  # closes its pipes
            now_signed = signed_prefix(audit_dir)
            assert now_signed.startswith(signed), f"seed {seed}: a signed checkpoint forked"
            signed = now_signed
        gateway = launch_gateway(config)
        check_log(audit_dir, load.snapshot(), signed, seed)
        assert gateway.stop() == 0
    finally:
        load.stop.set()
        for client in clients:
            client.join()
    check_log(audit_dir, load.snapshot(), signed, seed)
    kinds = [orjson.loads(r)["type"] for r in records(audit_dir)[1]]
    assert kinds[-1] == "gateway.stopped"
    assert kinds.count("gateway.started") == ROUNDS + 1
    print(
        f"acknowledged {len(load.acknowledged)}, cut off {load.broken}, "
        f"recovered {kinds.count('gateway.recovered')} times"
    )
    assert len(load.acknowledged) > ROUNDS and load.broken > 0, f"seed {seed}: load too light"
