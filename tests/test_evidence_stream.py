"""Evidence is collected in one pass over each log, read in chunks: the figures equal the
traffic written, across a chain of epochs with sealed bodies, whatever the chunk size.

The log is written by the real writer (`EpochLog`, driven by an explicit clock across a UTC
midnight so two chained epochs exist) and reported on by the real `gateway evidence` process;
the same report is then built in-process with chunks smaller than one entry, so every entry
straddles a chunk boundary, and must come out byte for byte the same.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from test_audit_epochs import Clock, open_epochs

from gateway.audit import init_keys
from gateway.audit.store import LEN
from gateway.evidence import build_report, collect

ORIGIN = "stream.test/audit"
START = datetime(2026, 11, 30, 23, 59, 0, tzinfo=UTC).timestamp()  # a minute before midnight
SUBJECTS = ("alice@example.com", "bob@example.com", "carol@example.com")
MODELS = ("llama-3-70b", "llama-3-8b")
REQUESTS = 40
COUNTED = ("requests", "allowed", "denied", "exchanges", "tokens_in", "tokens_out")

CONFIG = """
[identity]
issuer = "https://idp.example.com"
audience = "inference-gateway"

[[connections]]
name = "llama"
upstream = "https://models.internal"
credential_env = "STREAM_TEST_UPSTREAM_KEY"

[[rules]]
id = "chat"
groups = ["analysts"]
connections = ["llama"]
models = ["llama-3*"]
action = "allow"

[audit]
dir = "{dir}/audit"
origin = "stream.test/audit"
signing_key = "{dir}/keys/signing.key"
sealing_key = "{dir}/keys/sealing.key"
epoch = "daily"
"""


def traffic(i: int) -> tuple[dict, bool]:
    """Request i's fields, and whether policy refuses it (every fifth)."""
    fields = {
        "request_id": f"req-{i:04d}",
        "method": "POST",
        "path": "/llama/v1/chat/completions",
        "subject": SUBJECTS[i % 3],
        "groups": ["analysts"],
        "connection": "llama",
        "model": MODELS[i % 2],
    }
    return fields, i % 5 == 4


async def write(base: Path, keys: Path) -> None:
    clock = Clock(START)
    log = await open_epochs(base, keys, clock, origin=ORIGIN)
    for i in range(REQUESTS):
        clock.now = START + i * 3  # past midnight from request 20 on: a second epoch
        fields, refused = traffic(i)
        if refused:
            await log.append({**fields, "type": "denied", "status": 403, "code": "denied"})
            continue
        seq = await log.append(
            {**fields, "type": "decision", "decision": "allow", "rule": "chat"},
            {"request": b"q" * (100 + i)},
        )
        await log.append(
            {**fields, "type": "inference", "decision_seq": seq, "status": 200,
             "served_model": fields["model"] + "-instruct", "tokens_in": i, "tokens_out": 2 * i},
            {"response": b"r" * (200 + i)},
        )  # fmt: skip
    await log.close()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    init_keys(root / "keys", ORIGIN)
    asyncio.run(write(root / "audit", root / "keys"))
    (root / "gateway.toml").write_text(CONFIG.format(dir=root))
    return root


def report_json(out: Path) -> dict:
    """evidence.json without what differs between two runs: when, and how long verify took."""
    raw = re.sub(rb", [0-9]+[.][0-9]+s([\"\]])", rb"\1", (out / "evidence.json").read_bytes())
    report = orjson.loads(raw)
    report.pop("generated")
    return report


def test_usage_and_figures_equal_the_traffic_across_epochs(written: Path) -> None:
    env = {**os.environ, "STREAM_TEST_UPSTREAM_KEY": "unused"}
    out = written / "report"
    subprocess.run(
        ["gateway", "evidence", "-c", str(written / "gateway.toml"), "--out", str(out)],
        check=True,
        capture_output=True,
        env=env,
    )
    report = report_json(out)
    origins = [log["origin"] for log in report["logs"]]
    assert origins == [f"{ORIGIN}/2026-11-30", f"{ORIGIN}/2026-12-01"]
    assert all(" 0 sealed blobs" not in log["verification"] for log in report["logs"])

    want: dict[tuple, Counter] = {}
    for i in range(REQUESTS):
        fields, refused = traffic(i)
        row = want.setdefault((fields["subject"], fields["model"]), Counter())
        row["requests"] += 1
        row["denied" if refused else "allowed"] += 1
        if not refused:
            row["exchanges"] += 1
            row["tokens_in"] += i
            row["tokens_out"] += 2 * i
    got = {
        (row["subject"], row["model"]): Counter({k: row[k] for k in COUNTED if row[k]})
        for row in report["usage"]
    }
    assert got == want
    figures = {f["name"]: f["total"] for f in report["figures"]}
    refused = sum(traffic(i)[1] for i in range(REQUESTS))
    assert (figures["requests"], figures["allowed"], figures["denied_403"]) == (
        REQUESTS,
        REQUESTS - refused,
        refused,
    )
    assert figures["exchanges"] == REQUESTS - refused


def test_chunks_smaller_than_an_entry_give_the_same_report(
    written: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = written / "report"
    if not (out / "evidence.json").exists():  # run alone: the CLI's report first
        test_usage_and_figures_equal_the_traffic_across_epochs(written)
    monkeypatch.setattr(collect, "CHUNK", 16)
    monkeypatch.setenv("STREAM_TEST_UPSTREAM_KEY", "unused")
    build_report(written / "gateway.toml", None, None, None, written / "small-chunks")
    assert report_json(written / "small-chunks") == report_json(out)


def test_entries_changed_after_verification_are_refused_and_later_ones_wait(
    written: Path, tmp_path: Path
) -> None:
    log_dir = tmp_path / "epoch"
    shutil.copytree(written / "audit" / "2026-12-01", log_dir)  # one epoch given alone
    (log,) = collect.open_logs([log_dir])  # verified now
    with open(log_dir / "entries", "ab") as f:
        f.write(LEN.pack(5) + b"junk!")  # appended since: not verified, left for next time
    fed: list[int] = []
    collect.stream_log(log, lambda _log, seq, _entry: fed.append(seq))
    assert fed == list(range(log.report.size))
    data = bytearray((log_dir / "entries").read_bytes())
    data[LEN.size] = ord("[")  # entry 0 is no longer the JSON object verified
    (log_dir / "entries").write_bytes(bytes(data))
    with pytest.raises(collect.EvidenceError, match="changed while it was read"):
        collect.stream_log(log, lambda *_: None)
