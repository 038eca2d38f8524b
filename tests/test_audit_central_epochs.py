"""The central store and audit epochs: a real gateway (two workers) whose epoch rolls while it
runs ships each epoch's log under its own origin, in order, and resumes after a restart from
what the store holds.

The gateway's wall clock is moved a day forward with libfaketime (Debian's `libfaketime`,
LD_PRELOADed into the real process, its offset read from a file the test rewrites); the
monotonic clock, which timers and timeouts use, is left alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from central_helpers import Central, central_config, run
from conftest import entries, launch_gateway
from peers import wait_for

from gateway.audit import LogReader
from gateway.audit.periods import Epoch

ORIGIN = "test.gateway/audit"
FAKETIME = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))


@pytest.fixture
def central(postgres) -> Central:
    return Central(postgres)


def shifted_clock(offset_file: Path) -> dict[str, str | None]:
    """The environment that runs a process with its wall clock shifted by `offset_file`."""
    assert FAKETIME, "libfaketime is missing: apt-get install libfaketime"
    return {
        "LD_PRELOAD": str(FAKETIME[0]),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",  # the offset file is read again at every clock call
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def shipped(central: Central, origin: str) -> list[bytes]:
    query = "SELECT entry FROM audit_entries WHERE origin = $1 ORDER BY seq"
    return [bytes(row["entry"]) for row in central.fetch(query, origin)]


def local(directory: Path) -> list[bytes]:
    reader = LogReader(directory)
    return [reader.read_raw(i) for i in range(reader.size)]


def store_origins(central: Central) -> set[str]:
    return {row["origin"] for row in central.fetch("SELECT origin FROM audit_origins")}


def epoch_config(issuer, upstream, tmp_path: Path, store: str) -> Path:
    text = central_config(issuer, upstream, tmp_path, store)
    text = text.replace('durability = "sync"', 'durability = "sync"\nepoch = "daily"')
    path = tmp_path / "gateway.toml"
    path.write_text(text.replace("[server]\n", "[server]\nworkers = 2\n", 1))
    return path


def test_each_workers_epochs_are_shipped_in_order_and_resume_after_restart(
    central, issuer, upstream, tmp_path
) -> None:
    config = epoch_config(issuer, upstream, tmp_path, central.url)
    offset = tmp_path / "clock-offset"
    offset.write_text("+0\n")
    base = tmp_path / "audit"
    now = datetime.now(UTC)
    today, tomorrow = (Epoch.at("daily", now + timedelta(days=d)).name for d in (0, 1))
    logs = {f"{ORIGIN}/{n}/{day}": base / str(n) / day for n in (0, 1) for day in (today, tomorrow)}

    def in_store(origin: str) -> bool:
        return logs[origin].is_dir() and shipped(central, origin) == local(logs[origin])

    chat = "/llama/v1/chat/completions"
    with launch_gateway(config, shifted_clock(offset)) as gateway:
        for _ in range(4):
            assert httpx.post(f"{gateway.url}{chat}", json={}).status_code == 401
        wait_for(lambda: all(in_store(f"{ORIGIN}/{n}/{today}") for n in (0, 1)))
        offset.write_text("+1d\n")  # the gateway's clock: tomorrow; its next entry rolls over
        for _ in range(4):
            assert httpx.post(f"{gateway.url}{chat}", json={}).status_code == 401
        # The worker(s) that served these rolled over while running, and ship the new epoch.
        wait_for(lambda: any(in_store(f"{ORIGIN}/{n}/{tomorrow}") for n in (0, 1)))
    # gateway.stopped rolled the other worker too; the last shipment took it.
    assert store_origins(central) == set(logs)
    for origin in logs:
        assert in_store(origin), origin
        first = entries(logs[origin])[0]
        assert first["type"] == "epoch.started"
    for n in (0, 1):
        link = entries(logs[f"{ORIGIN}/{n}/{tomorrow}"])[0]["previous"]
        assert link["origin"] == f"{ORIGIN}/{n}/{today}"
        assert link["size"] == len(shipped(central, link["origin"]))  # its final checkpoint

    # A restart resumes from what the store holds: nothing refused, nothing sent twice.
    before = {origin: shipped(central, origin) for origin in logs}
    with launch_gateway(config, shifted_clock(offset)) as gateway:
        assert httpx.post(f"{gateway.url}{chat}", json={}).status_code == 401
        health = httpx.get(f"{gateway.url}/_gateway/health", timeout=10).json()
        assert not [w for w in health["warnings"] if w["check"] == "audit_shipping"]
    for origin in logs:
        assert in_store(origin), origin
        held = shipped(central, origin)
        assert held[: len(before[origin])] == before[origin]
        assert (len(held) > len(before[origin])) == origin.endswith(tomorrow), origin
    verified = run("verify", "--store", central.url)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.count("OK ") == 4
