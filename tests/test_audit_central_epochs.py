"""The central store and audit epochs: a real gateway (two workers) whose epoch rolls while it
runs ships each epoch's log under its own origin, in order, and resumes after a restart from
what the store holds; the database itself refuses an epoch that does not chain to the final
checkpoint of its writer's last log, whoever sends it.

The gateway's wall clock is moved a day forward with libfaketime (Debian's `libfaketime`,
LD_PRELOADed into the real process, its offset read from a file the test rewrites); the
monotonic clock, which timers and timeouts use, is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from central_helpers import Central, central_config, metric, run
from conftest import DAY1, Clock, audited_config, entries, launch_gateway
from peers import wait_for

from gateway import config as config_module
from gateway.audit import LogReader, epoch_keys, init_keys, read_secret_key
from gateway.audit.central_keys import KeyCopies
from gateway.audit.epochs import EpochLog, previous_fields
from gateway.audit.periods import Epoch
from gateway.audit.shipper import Shipper, local_checkpoints
from gateway.audit.store import VERIFIER
from gateway.config import ConfigError

ORIGIN = "test.gateway/audit"
STOP_S = 60  # a loaded machine's graceful stop of two workers, each with a last shipment
SHIP_S = 60  # a loaded machine's shipper pass (connect, read what the store holds, ship)
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


def assert_no_key_material(central: Central, keys: Path, origins: Iterable[str]) -> None:
    """No table of the central store holds an epoch's key, wrapped (as in the keys directory,
    raw or base64) or unwrapped: shredding the keys directory's copy must leave none behind."""
    tables = [
        row["t"]
        for row in central.fetch("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'")
        if row["t"] != "audit_epoch_keys"  # the deletable copies, apart from history
    ]
    assert "audit_entries" in tables and "audit_sealed" in tables
    held = b"".join(
        orjson.dumps([str(v) if not isinstance(v, bytes) else v.hex() for v in row.values()])
        + b"".join(v for v in row.values() if isinstance(v, bytes))
        for table in tables
        for row in central.fetch(f"SELECT * FROM {table}")
    )
    for origin in origins:
        stored = epoch_keys.key_file(keys / "sealing.key", origin).read_bytes().strip()
        wrapped = base64.b64decode(stored)
        key = epoch_keys.epoch_key(keys / "sealing.key", origin)
        for secret in (stored, wrapped, key, wrapped.hex().encode(), key.hex().encode()):
            assert secret not in held, origin
    assert read_secret_key(keys / "sealing.key") not in held


def key_copies(central: Central) -> dict[str, bytes]:
    rows = central.fetch("SELECT origin, wrapped FROM audit_epoch_keys")
    return {row["origin"]: bytes(row["wrapped"]) for row in rows}


def local_keys(keys: Path, origins: Iterable[str]) -> dict[str, bytes]:
    """The wrapped epoch keys as the keys directory holds them (base64 in the file)."""
    files = {origin: epoch_keys.key_file(keys / "sealing.key", origin) for origin in origins}
    return {o: base64.b64decode(f.read_bytes()) for o, f in files.items() if f.exists()}


def epoch_config(issuer, upstream, tmp_path: Path, central: Central) -> Path:
    text = central_config(issuer, upstream, tmp_path, central.url)
    text = text.replace('durability = "sync"', 'durability = "sync"\nepoch = "daily"')
    text += f'keys_store = "{central.keys_url}"\n'  # [audit.central] is the last table
    path = tmp_path / "gateway.toml"
    path.write_text(text.replace("[server]\n", "[server]\nworkers = 2\n", 1))
    return path


def test_each_workers_epochs_are_shipped_in_order_and_resume_after_restart(
    central, issuer, upstream, tmp_path
) -> None:
    config = epoch_config(issuer, upstream, tmp_path, central)
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
        wait_for(lambda: all(in_store(f"{ORIGIN}/{n}/{today}") for n in (0, 1)), SHIP_S)
        offset.write_text("+1d\n")  # the gateway's clock: tomorrow; its next entry rolls over
        for _ in range(4):
            assert httpx.post(f"{gateway.url}{chat}", json={}).status_code == 401
        # The worker(s) that served these rolled over while running, and ship the new epoch.
        wait_for(lambda: any(in_store(f"{ORIGIN}/{n}/{tomorrow}") for n in (0, 1)), SHIP_S)
        assert gateway.stop(timeout=STOP_S) == 0  # a graceful stop, never the harness's SIGKILL
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

    assert_no_key_material(central, tmp_path / "keys", logs)
    assert key_copies(central) == local_keys(tmp_path / "keys", logs)  # keys_store: copies

    # A restart resumes from what the store holds: nothing refused, nothing sent twice.
    before = {origin: shipped(central, origin) for origin in logs}
    with launch_gateway(config, shifted_clock(offset)) as gateway:
        assert httpx.post(f"{gateway.url}{chat}", json={}).status_code == 401

        def resumed(n: int) -> bool:  # this start's entries shipped: a pass of its shipper ran
            origin = f"{ORIGIN}/{n}/{tomorrow}"
            return in_store(origin) and len(shipped(central, origin)) > len(before[origin])

        wait_for(lambda: all(resumed(n) for n in (0, 1)), SHIP_S)
        health = httpx.get(f"{gateway.url}/_gateway/health", timeout=10).json()
        assert not [w for w in health["warnings"] if w["check"] == "audit_shipping"]
        assert gateway.stop(timeout=STOP_S) == 0
    for origin in logs:
        assert in_store(origin), origin
        held = shipped(central, origin)
        assert held[: len(before[origin])] == before[origin]
        assert (len(held) > len(before[origin])) == origin.endswith(tomorrow), origin
    verified = run("verify", "--store", central.url)
    assert verified.returncode == 0, verified.stderr
    assert sorted(line.split(":")[0] for line in verified.stdout.splitlines()) == sorted(
        [*(f"OK {origin}" for origin in logs), *(f"OK chain {ORIGIN}/{n}" for n in (0, 1))]
    )

    # The replica loses its disk and comes back a day later: its fresh epoch names no previous
    # checkpoint, and the database refuses it (the shipper's own checks see nothing wrong).
    held = {origin: shipped(central, origin) for origin in logs}
    for n in (0, 1):
        for day in (today, tomorrow):
            for path in sorted((base / str(n) / day).rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
    offset.write_text("+2d\n")
    with launch_gateway(config, shifted_clock(offset)) as gateway:
        wait_for(lambda: metric(gateway.url, "gateway_audit_ship_refused_total") >= 1, SHIP_S)

        def refused() -> list[str]:  # each worker answers for itself: wait for one refused
            health = httpx.get(f"{gateway.url}/_gateway/health", timeout=10)
            assert health.status_code == 200  # shipping is never the replica's own fault
            return [
                w["problem"] for w in health.json()["warnings"] if w["check"] == "audit_shipping"
            ]

        (problem,) = wait_for(refused, SHIP_S)
        assert "names no previous checkpoint" in problem, problem
    assert store_origins(central) == set(logs)  # nothing of the unchained epochs went in
    assert {origin: shipped(central, origin) for origin in logs} == held
    again = run("verify", "--store", central.url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("OK chain") == 2


WRITER = "w.test/audit"


async def write_epochs(base: Path, keys: Path, start: float, days: int) -> None:
    """`days` daily epochs written by the real writer: two entries in each besides its first,
    each signed before the next (so every epoch has a checkpoint before its final one)."""
    clock = Clock(start)
    log = await EpochLog.open(
        base, origin=WRITER, kind="daily", signing_key=keys / "signing.key",
        sealing_key=keys / "sealing.key", clock=clock,
    )  # fmt: skip
    for day in range(days):
        clock.now = start + day * 86400
        await log.append({"type": "decision", "day": day})
        await log.signed()
        await log.append({"type": "inference", "day": day})
        await log.signed()
    await log.close()


async def insert_log(db: asyncpg.Connection, directory: Path, origin: str) -> None:
    """Everything a shipper would send of one log, straight into the store."""
    verifier = (directory / VERIFIER).read_text().strip()
    await db.execute(
        "INSERT INTO audit_origins VALUES ($1, $2) ON CONFLICT DO NOTHING", origin, verifier
    )
    reader, seq = LogReader(directory), 0
    for cp in local_checkpoints(directory):
        rows = [(origin, n, reader.read_raw(n)) for n in range(seq, cp.size)]
        await db.executemany(
            "INSERT INTO audit_entries (origin, seq, entry) VALUES ($1, $2, $3)", rows
        )
        await db.execute(
            "INSERT INTO audit_checkpoints (origin, size, root, note) VALUES ($1, $2, $3, $4)",
            origin, cp.size, cp.root, cp.note,
        )  # fmt: skip
        seq = cp.size


def first_entry(epoch: str, previous: dict | None) -> bytes:
    entry = {"seq": 0, "ts": "2026-12-01T00:00:00.000000Z", "type": "epoch.started", "epoch": epoch}
    return orjson.dumps({**entry, **({"previous": previous} if previous else {})})


async def refusal(db: asyncpg.Connection, origin: str, entry: bytes) -> str:
    """What the database says to a new origin whose first entry is `entry` (as the gateway role)."""
    try:
        async with db.transaction():
            await db.execute("INSERT INTO audit_origins VALUES ($1, 'key')", origin)
            await db.execute(
                "INSERT INTO audit_entries (origin, seq, entry) VALUES ($1, 0, $2)", origin, entry
            )
    except asyncpg.CheckViolationError as exc:
        return str(exc)
    return "accepted"


def test_the_database_refuses_an_epoch_that_does_not_chain(central, tmp_path) -> None:
    keys, base = tmp_path / "keys", tmp_path / "audit"
    init_keys(keys, WRITER)
    asyncio.run(write_epochs(base, keys, DAY1 + 2, 2))  # 2026-12-01 and 2026-12-02
    first, second = base / "2026-12-01", base / "2026-12-02"
    e1, e2 = f"{WRITER}/2026-12-01", f"{WRITER}/2026-12-02"
    checkpoints = local_checkpoints(first)
    final = checkpoints[-1]
    assert final.size == 3 and len(checkpoints) >= 2

    async def scenario() -> dict[str, str]:
        db = await asyncpg.connect(central.url)  # the gateways' role: INSERT and SELECT only
        try:
            await insert_log(db, first, e1)  # the writer's first epoch: nothing to chain to
            genuine = previous_fields(final.note)
            other_note = checkpoints[0].note
            said = {
                "unchained": await refusal(db, e2, first_entry("2026-12-02", None)),
                "not final": await refusal(
                    db, e2, first_entry("2026-12-02", previous_fields(other_note))
                ),
                "other note": await refusal(
                    db,
                    e2,
                    first_entry(
                        "2026-12-02",
                        {**genuine, "note_sha256": hashlib.sha256(other_note).hexdigest()},
                    ),
                ),
                "other writer": await refusal(
                    db,
                    e2,
                    first_entry("2026-12-02", {**genuine, "origin": "x.test/audit/2026-12-01"}),
                ),
            }
            await insert_log(db, second, e2)  # the genuine successor is taken
            said["e1 extended"] = await refusal_of_more(db, e1, 3)
            said["second successor"] = await refusal(
                db, f"{WRITER}/2026-12-03", first_entry("2026-12-03", genuine)
            )
            return said
        finally:
            await db.close()

    said = asyncio.run(scenario())
    assert "names no previous checkpoint" in said["unchained"]
    assert (
        f"names checkpoint size {checkpoints[0].size}" in said["not final"]
        and "final checkpoint (size 3" in said["not final"]
    )
    assert "not its final checkpoint" in said["other note"]
    assert "not to a log of w.test/audit" in said["other writer"]
    assert "was closed when w.test/audit/2026-12-02 started" in said["e1 extended"]
    assert "already has a successor" in said["second successor"]
    held = central.fetch(
        "SELECT origin, count(*) AS n FROM audit_entries GROUP BY origin ORDER BY origin"
    )
    assert [(r["origin"], r["n"]) for r in held] == [(e1, 3), (e2, 3)]
    verified = run("verify", "--store", central.url)
    assert verified.returncode == 0, verified.stderr
    assert f"OK chain {WRITER}: 2 logs, each chained to the one before" in verified.stdout
    report = evidence(central, tmp_path / "report")
    assert report.returncode == 0, report.stderr
    logs = orjson.loads((tmp_path / "report" / "evidence.json").read_bytes())["logs"]
    assert [(log["origin"], log["entries"]) for log in logs] == [(e1, 3), (e2, 3)]

    # Past the database (its administrator, triggers off): `verify --store` still sees the
    # unchained epoch.
    stray = tmp_path / "stray"
    asyncio.run(write_epochs(stray, keys, DAY1 + 2 + 2 * 86400, 1))  # 2026-12-03, a first epoch

    async def smuggle() -> None:
        db = await asyncpg.connect(central.postgres.url(central.database, "admin"))
        try:
            await db.execute("SET session_replication_role = replica")
            await insert_log(db, stray / "2026-12-03", f"{WRITER}/2026-12-03")
        finally:
            await db.close()

    asyncio.run(smuggle())
    broken = run("verify", "--store", central.url)
    assert broken.returncode == 1
    assert (
        f"FAIL chain: {WRITER}/2026-12-03: does not start with an epoch.started entry"
        in broken.stderr
    )
    refused = evidence(central, tmp_path / "refused")
    assert refused.returncode == 1 and "the chain of epochs breaks" in refused.stderr
    assert not (tmp_path / "refused").exists()


def evidence(central: Central, out: Path) -> subprocess.CompletedProcess[str]:
    command = ["gateway", "evidence", "--store", central.url, "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


async def refusal_of_more(db: asyncpg.Connection, origin: str, seq: int) -> str:
    try:
        await db.execute(
            "INSERT INTO audit_entries (origin, seq, entry) VALUES ($1, $2, '{}')", origin, seq
        )
    except asyncpg.CheckViolationError as exc:
        return str(exc)
    return "accepted"


async def test_a_store_restored_from_an_older_backup_gets_closed_epochs_again(
    central, tmp_path
) -> None:
    """The shipper (its real loop, in this process) forgets what the store held when the
    connection drops: a store restored without the rows it had shipped gets every epoch again,
    the closed ones first, so the database's chain rule takes the later ones."""
    keys, base = tmp_path / "keys", tmp_path / "audit"
    init_keys(keys, WRITER)
    await write_epochs(base, keys, DAY1 + 2, 2)
    want = [(f"{WRITER}/2026-12-01", 3), (f"{WRITER}/2026-12-02", 3)]
    query = "SELECT origin, count(*) AS n FROM audit_entries GROUP BY origin ORDER BY origin"

    def holds_all() -> bool:
        return [(r["origin"], r["n"]) for r in central.fetch(query)] == want

    shipper = Shipper(base, central.url, interval_s=0.05)
    shipper.start()
    try:
        await asyncio.to_thread(wait_for, holds_all, 30)  # the loop ships meanwhile
        await asyncio.to_thread(central.restore_empty)
        await asyncio.to_thread(wait_for, holds_all, 30)
        assert shipper.refusal is None
    finally:
        await shipper.close()


async def test_epoch_keys_are_copied_apart_and_deleted_by_shred_and_retention(
    central, issuer, upstream, tmp_path
) -> None:
    """`keys_store`: each epoch's wrapped key is copied into the deletable table (its own role;
    the gateways' role cannot read it), and deleted there by `gateway audit shred` and by
    retention, as in the keys directory."""
    config = epoch_config(issuer, upstream, tmp_path, central)
    keys, base = tmp_path / "keys", tmp_path / "audit"
    clock = Clock(DAY1)  # 2026-11-30, then 2026-12-01: both ended by now
    log = await EpochLog.open(
        base, origin=ORIGIN, kind="daily", signing_key=keys / "signing.key",
        sealing_key=keys / "sealing.key", clock=clock,
    )  # fmt: skip
    clock.now += 5
    await log.append({"type": "decision"})
    await log.close()
    first, second = f"{ORIGIN}/2026-11-30", f"{ORIGIN}/2026-12-01"
    copies = KeyCopies(central.keys_url, keys / "sealing.key", ORIGIN)

    async def held() -> dict[str, bytes]:
        return await asyncio.to_thread(key_copies, central)

    await copies.sync()
    assert copies.problem is None
    assert await held() == local_keys(keys, [first, second]) and len(await held()) == 2
    denied = central.sql("SELECT * FROM audit_epoch_keys")  # as the gateways' role
    assert "permission denied" in denied.stderr

    shred = ["gateway", "audit", "shred", "--epoch", "2026-11-30", "-c", str(config)]
    # On the log's own day: run on a later day, shred would open that day's epoch (and key).
    on_day2 = tmp_path / "day2"
    on_day2.write_text("@2026-12-01 12:00:00\n")
    env = {**os.environ, **shifted_clock(on_day2)}
    done = await asyncio.to_thread(subprocess.run, shred, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "deleted the copies in the epoch keys store" in done.stdout
    assert set(await held()) == {second}

    # Retention (one day) at 2026-12-03: the writer shreds 2026-12-01's key; the next sync
    # deletes its copy and copies the new epoch's key.
    later = await EpochLog.open(
        base, origin=ORIGIN, kind="daily", signing_key=keys / "signing.key",
        sealing_key=keys / "sealing.key", clock=Clock(DAY1 + 3 * 86400), retention_days=1,
    )  # fmt: skip
    await later.close()
    assert not epoch_keys.key_file(keys / "sealing.key", second).exists()
    await copies.sync()
    assert await held() == local_keys(keys, [f"{ORIGIN}/2026-12-03"])
    assert len(await held()) == 1
    await copies.close()


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("", "audit.central.keys_store: needs [audit] epoch"),
        ('epoch = "daily"\n', "audit.central.keys_store: must be postgresql://"),
    ],
)
def test_keys_store_is_refused_without_epochs_or_a_postgresql_url(tmp_path, extra, problem) -> None:
    store = "postgresql://gw@127.0.0.1/audit" if not extra else "sqlite:///keys.db"
    text = audited_config("http://127.0.0.1:1", "http://127.0.0.1:2", tmp_path)
    text += f'[audit.central]\nstore = "postgresql://gw@127.0.0.1/audit"\nkeys_store = "{store}"\n'
    text = text.replace('durability = "sync"', f'durability = "sync"\n{extra}')
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        config_module.load(path)
    assert problem in str(refused.value)
