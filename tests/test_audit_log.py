"""The audit log end to end on real files: append, group commit, proofs, recovery, verify."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.audit import (
    AuditLog,
    AuditOpenError,
    AuditUnavailable,
    Checkpoint,
    LogReader,
    Verifier,
    init_keys,
    unseal,
    verify_consistency,
    verify_inclusion,
    verify_log,
)
from gateway.audit import seal as seal_module
from gateway.audit import wal as wal_module
from gateway.audit import writer as writer_module
from gateway.audit.canonical import CanonicalError
from gateway.audit.wal import WAL, begin, record, replay, rewrite
from gateway.audit.writer import Writer

ORIGIN = "gw.test/audit"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys", ORIGIN)
    return tmp_path / "keys"


async def open_log(d: Path, keys: Path, **kw: object) -> AuditLog:
    return await AuditLog.open(
        d, origin=ORIGIN, signing_key=keys / "signing.key", sealing_key=keys / "sealing.key", **kw
    )


def wal_records(d: Path) -> int:
    """How many committed batches the write-ahead log holds (its size says nothing: kept)."""
    return len(wal_module.records((d / WAL).read_bytes()))


def entry(i: int) -> dict:
    return {"type": "inference", "request_id": f"r{i}", "subject": "ana", "note": "ü" * (i % 7)}


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


async def test_append_read_prove_unseal(tmp_path: Path, keys: Path) -> None:
    log = await open_log(tmp_path / "log", keys)
    seqs = [await log.append(entry(i), {"request": b"q%d" % i, "response": b"a"}) for i in range(5)]
    await log.signed()  # the checkpoint follows the release of the last append
    assert seqs == [0, 1, 2, 3, 4] and log.size == 5
    e = log.read_entry(3)
    assert e["seq"] == 3 and e["ts"].endswith("Z") and len(e["ts"]) == 27
    assert set(e["sealed"]["request"]) >= {"sha256_plaintext", "sha256_ciphertext", "file"}
    assert e["sealed"]["request"]["sha256_plaintext"] == hashlib.sha256(b"q3").hexdigest()
    assert unseal(tmp_path / "log", e, "request", keys / "sealing.key") == b"q3"
    cp = Checkpoint.open(log.checkpoint(), Verifier.parse((tmp_path / "log/verifier").read_text()))
    assert cp.size == 5
    p = log.inclusion_proof(3)
    assert bytes.fromhex(p["root"]) == cp.root
    verify_inclusion(
        3, 5, bytes.fromhex(p["leaf_hash"]), [bytes.fromhex(h) for h in p["path"]], cp.root
    )
    c = log.consistency_proof(2, 5)
    verify_consistency(
        2, 5, [bytes.fromhex(h) for h in c["path"]], bytes.fromhex(c["old_root"]), cp.root
    )
    await log.close()
    assert (tmp_path / "log/checkpoint").read_bytes() == log.checkpoint()
    report = verify_log(tmp_path / "log")
    assert report.ok, report.summary()
    assert (report.size, report.sealed_blobs) == (5, 10)


async def test_reader_with_a_lagging_index_scans_entries(tmp_path: Path, keys: Path) -> None:
    """The index is written after a batch's release, so a reader may find it a batch behind."""
    log = await open_log(tmp_path / "log", keys)
    for i in range(6):
        await log.append(entry(i))
    await log.close()
    index = tmp_path / "log" / "index"
    index.write_bytes(index.read_bytes()[:-8])
    reader = LogReader(tmp_path / "log")
    assert reader.size == 6 and reader.read_entry(5)["request_id"] == "r5"


async def test_entries_carry_no_plaintext_of_sealed_bodies(tmp_path: Path, keys: Path) -> None:
    log = await open_log(tmp_path / "log", keys)
    await log.append({"type": "inference"}, {"request": b"SSN 123-45-6789 secret-body"})
    await log.close()
    for path in (tmp_path / "log").rglob("*"):
        if path.is_file():
            assert b"123-45-6789" not in path.read_bytes(), path


async def test_reserved_and_invalid_entries_are_refused(tmp_path: Path, keys: Path) -> None:
    log = await open_log(tmp_path / "log", keys)
    with pytest.raises(ValueError):
        await log.append({"type": "x", "seq": 3})
    with pytest.raises(CanonicalError):
        await log.append({"type": "x", "t": float("nan")})
    assert await log.append({"type": "ok"}) == 0
    await log.close()


async def test_concurrent_sync_appends_share_commits(tmp_path: Path, keys: Path) -> None:
    log = await open_log(tmp_path / "log", keys)
    seqs = await asyncio.gather(*(log.append(entry(i)) for i in range(2000)))
    assert sorted(seqs) == list(range(2000))
    await log.close()
    for seq in (0, 999, 1999):
        assert log.read_entry(seq)["request_id"] == f"r{seqs.index(seq)}"
    report = verify_log(tmp_path / "log")
    assert report.ok, report.summary()
    assert report.checkpoints < 200  # group commit: far fewer checkpoints than entries


async def test_signed_covers_what_was_appended_even_under_constant_load(
    tmp_path: Path, keys: Path
) -> None:
    """The writer signs only when no batch waits, yet `signed` is never starved: a caller
    waiting on it gets a checkpoint covering its entry while appends keep coming."""
    log = await open_log(tmp_path / "log", keys, durability="batch")
    stop = asyncio.Event()

    async def appender() -> None:
        i = 0
        while not stop.is_set():
            await log.append(entry(i))
            i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(appender())
    try:
        for _ in range(3):
            seq = await log.append({"type": "mine"})
            await asyncio.wait_for(log.signed(), 60)  # a bound, not a speed claim
            assert log.size > seq
            assert Checkpoint.parse_body(log.checkpoint().split(b"\n\n")[0] + b"\n").size > seq
    finally:
        stop.set()
        await task
    await log.close()
    assert verify_log(tmp_path / "log").ok


def run_child(script: str, log_dir: Path, keys: Path, *args: str) -> subprocess.CompletedProcess:
    """Run one of this module's child scripts on `log_dir` (its own process: kill -9 and
    resource limits stay out of the test's)."""
    return subprocess.run(
        [sys.executable, "-c", script, str(log_dir), str(keys), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


KILLED_CHILD = textwrap.dedent(
    """
    import asyncio, json, os, signal, sys
    from pathlib import Path
    from gateway.audit import AuditLog

    async def main(d, keys, n):
        log = await AuditLog.open(Path(d), origin="gw.test/audit", signing_key=Path(keys) /
            "signing.key", sealing_key=Path(keys) / "sealing.key")
        for i in range(n):
            await log.append({"type": "inference", "i": i}, {"request": b"q%d" % i})
        # Acknowledged, and (no await since) its batch not signed yet: the writer signs only
        # once the event loop gets back to it.
        print(json.dumps({"committed": log.committed, "size": log.size}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def test_kill_9_keeps_acknowledged_entries_no_checkpoint_covers_yet(
    tmp_path: Path, keys: Path
) -> None:
    """Signing follows the commit: entries acknowledged but not yet signed when the process
    dies are kept at the next start (each is durable with its sealed blob) and signed then."""
    n = 30
    out = run_child(KILLED_CHILD, tmp_path / "log", keys, str(n))
    assert out.returncode == -9, out.stderr
    at_kill = json.loads(out.stdout)
    assert at_kill["committed"] == n and at_kill["size"] < n  # the last batch was unsigned

    async def reopen() -> dict:
        log = await open_log(tmp_path / "log", keys)
        assert log.committed == n and log.size == n  # nothing truncated, nothing torn
        assert [log.read_entry(i)["i"] for i in range(n)] == list(range(n))
        last = log.read_entry(n - 1)
        await log.close()
        return last

    last = asyncio.run(reopen())
    report = verify_log(tmp_path / "log")
    assert report.ok and report.size == n, report.summary()
    assert unseal(tmp_path / "log", last, "request", keys / "sealing.key") == b"q%d" % (n - 1)


POWER_CUT_CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    from gateway.audit import AuditLog

    async def main(d, keys, n):
        log = await AuditLog.open(Path(d), origin="gw.test/audit", signing_key=Path(keys) /
            "signing.key", sealing_key=Path(keys) / "sealing.key")
        await log.append({"type": "warm"}, {"request": b"warm"})
        await log.signed()  # `entries` and the segment are fdatasynced up to here
        synced = {f: os.path.getsize(Path(d) / f) for f in ("entries", "sealed/000000.seal")}
        for i in range(n):
            await log.append({"type": "inference", "i": i}, {"request": b"q%d" % i})
        print(json.dumps(synced), flush=True)
        os._exit(0)  # no close, no signing: only the write-ahead log was fdatasynced since

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def power_cut(log_dir: Path, keys: Path, n: int) -> None:
    """Acknowledge n sealed appends, then leave `entries` and the segment as a power cut may:
    cut back to what was last fdatasynced (their tails were only in the page cache)."""
    out = run_child(POWER_CUT_CHILD, log_dir, keys, str(n))
    assert out.returncode == 0, out.stderr
    for name, size in json.loads(out.stdout).items():
        assert (log_dir / name).stat().st_size > size  # the tail is there before the cut
        os.truncate(log_dir / name, size)


def test_a_power_cut_loses_no_acknowledged_entry_or_body(tmp_path: Path, keys: Path) -> None:
    """Each batch is durable by one fdatasync, of the write-ahead log: what `entries` and the
    segment lost is written back from it at the next start, bodies included, and the start
    records that it did (`gateway.recovered`)."""
    d, n = tmp_path / "log", 12
    power_cut(d, keys, n)

    async def reopen() -> tuple[list[dict], dict]:
        log = await open_log(d, keys)
        await log.signed()
        assert log.committed == 1 + n + 1 and log.size == 1 + n + 1
        found = [log.read_entry(1 + i) for i in range(n)]
        recovered = log.read_entry(1 + n)
        await log.close()
        return found, recovered

    found, recovered = asyncio.run(reopen())
    assert [e["i"] for e in found] == list(range(n))
    for i, e in enumerate(found):
        assert unseal(d, e, "request", keys / "sealing.key") == b"q%d" % i
    assert recovered["type"] == "gateway.recovered" and recovered["entries_kept"] == 1 + n
    assert recovered["restored_entry_bytes"] > 0 and recovered["restored_sealed_bytes"] > 0
    assert recovered["truncated_entry_bytes"] == 0
    assert wal_records(d) == 0  # written back, then emptied
    report = verify_log(d)
    assert report.ok and report.size == 1 + n + 1, report.summary()


def test_a_torn_last_record_of_the_write_ahead_log_is_dropped(tmp_path: Path, keys: Path) -> None:
    """A record cut short (its fdatasync never returned, so its batch was never acknowledged)
    ends the replay: the batches before it are written back, it is not."""
    d, n = tmp_path / "log", 5
    power_cut(d, keys, n)
    os.truncate(d / "wal", (d / "wal").stat().st_size - 3)

    async def reopen() -> int:
        log = await open_log(d, keys)
        committed = log.committed
        await log.close()
        return committed

    assert asyncio.run(reopen()) == n + 1  # warm-up, n - 1 of the n, gateway.recovered
    report = verify_log(d)
    assert report.ok and report.size == n + 1, report.summary()


def test_entries_that_differ_from_the_write_ahead_log_refuse_the_start(
    tmp_path: Path, keys: Path
) -> None:
    """Bytes in `entries` other than the log recorded there are not what a crash leaves."""
    d = tmp_path / "log"
    out = run_child(POWER_CUT_CHILD, d, keys, "3")
    assert out.returncode == 0, out.stderr
    data = bytearray((d / "entries").read_bytes())
    data[-2] ^= 0x01  # inside the last entry, which only the write-ahead log made durable
    (d / "entries").write_bytes(bytes(data))
    with pytest.raises(AuditOpenError, match=r"other bytes at offset \d+ than the write-ahead log"):
        asyncio.run(open_log(d, keys))


async def test_the_write_ahead_log_keeps_its_size_so_commits_overwrite_it(
    tmp_path: Path, keys: Path
) -> None:
    """Emptied at a signing, the log keeps its blocks: the next batches overwrite them, so their
    fdatasync changes no metadata (the file was cut to 0 and grew again, batch by batch)."""
    d = tmp_path / "log"
    log = await open_log(d, keys)
    for i in range(3):
        await log.append(entry(i), {"request": b"q" * 900})
    assert wal_records(d) == 3
    await log.signed()
    size = (d / WAL).stat().st_size
    assert wal_records(d) == 0 and size > 3 * 900
    for i in range(3):
        await log.append(entry(i), {"request": b"r" * 800})  # a little shorter than before
        assert (d / WAL).stat().st_size == size and wal_records(d) == i + 1
    await log.close()  # all signed: the space goes back
    assert (d / WAL).stat().st_size == 0
    assert verify_log(d).ok
    log = await open_log(d, keys)
    assert await log.append(entry(3), {"request": b"s"}) == 6
    await log.close()
    assert verify_log(d).ok


def test_records_of_an_older_generation_are_not_replayed(tmp_path: Path) -> None:
    """After a signing empties the log, what follows its newest records is an older generation's:
    here aligned as whole records (the new one is as long as the old first), and naming bytes
    that now differ. The replay applies the new record and stops."""
    (tmp_path / "entries").write_bytes(b"A" * 100)
    fd = os.open(tmp_path / WAL, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        old, at = begin(fd)
        for offset in (0, 50):
            at += os.pwrite(fd, record(old, offset, b"A" * 50, 0, 0, b""), at)
        new, at = begin(fd)
        assert new != old
        os.pwrite(fd, record(new, 100, b"B" * 50, 0, 0, b""), at)
    finally:
        os.close(fd)
    (tmp_path / "entries").write_bytes(b"A" * 50 + b"C" * 50)  # the old second record differs
    assert replay(tmp_path) == (50, 0)
    assert (tmp_path / "entries").read_bytes() == b"A" * 50 + b"C" * 50 + b"B" * 50


def test_a_write_ahead_log_of_another_format_refuses_the_start(tmp_path: Path, keys: Path) -> None:
    d = tmp_path / "log"
    d.mkdir()
    (d / WAL).write_bytes(b"\x00\x00\x00\x10not a write-ahead log")
    with pytest.raises(AuditOpenError, match="wal does not start as a write-ahead log"):
        asyncio.run(open_log(d, keys))


FAILED_BATCH_CHILD = textwrap.dedent(
    """
    import asyncio, errno, os, sys
    from pathlib import Path
    from gateway.audit import AuditLog, AuditUnavailable
    from gateway.audit.seal import SPILL

    async def main(d, keys, failing):
        log = await AuditLog.open(Path(d), origin="gw.test/audit", signing_key=Path(keys) /
            "signing.key", sealing_key=Path(keys) / "sealing.key")
        await log.append({"type": "kept"}, {"request": b"k" * 900})
        await log.signed()
        await log.append({"type": "kept"}, {"request": b"k" * 900})
        real = os.fdatasync

        def eio(fd):  # the batch's record is written, one of its fdatasyncs fails
            if os.readlink(f"/proc/self/fd/{fd}").endswith(failing):
                raise OSError(errno.EIO, "Input/output error")
            real(fd)

        body = b"r" * 100
        if failing == ".blob":  # a streamed body in a file of its own; the wal's sync works
            body = log.sealed_stream()
            body.add(b"r" * (2 * SPILL))
            body.finish()
        os.fdatasync = eio
        try:
            await log.append({"type": "refused"}, {"request": body})
        except AuditUnavailable:
            print("refused", flush=True)
        os.fdatasync = real
        os._exit(0)  # a crash: no close, no signing

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.mark.parametrize("failing", ["/wal", ".blob"])
def test_a_batch_whose_commit_failed_is_not_replayed(
    tmp_path: Path, keys: Path, failing: str
) -> None:
    """Its record may be whole in the log (the write worked and the wal's fdatasync failed),
    or even durable (a streamed body's fdatasync failed): rolling back voids it, so the next
    start does not bring back what its callers were refused."""
    d = tmp_path / "log"
    out = run_child(FAILED_BATCH_CHILD, d, keys, failing)
    assert out.returncode == 0 and out.stdout == "refused\n", out.stderr
    assert b"refused" in (d / WAL).read_bytes()  # the record's bytes are still there

    async def reopen() -> list[str]:
        log = await open_log(d, keys)
        types = [log.read_entry(i)["type"] for i in range(log.committed)]
        await log.close()
        return types

    assert asyncio.run(reopen()) == ["kept", "kept"]  # and no gateway.recovered: nothing lost
    assert verify_log(d).ok


REFUSED_THEN_POWER_CUT_CHILD = textwrap.dedent(
    """
    import asyncio, errno, json, os, sys
    from pathlib import Path
    from gateway.audit import AuditLog, AuditUnavailable

    async def main(d, keys):
        log = await AuditLog.open(Path(d), origin="gw.test/audit", signing_key=Path(keys) /
            "signing.key", sealing_key=Path(keys) / "sealing.key")
        await log.append({"type": "kept"}, {"request": b"k" * 900})
        await log.signed()
        real_datasync, real_sync = os.fdatasync, os.fsync
        written = {}  # entries and the segment as the failed batch wrote them
        synced_since = set()  # files whose later state a successful sync made durable

        def name_of(fd):
            return os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1]

        def datasync(fd):
            name = name_of(fd)
            if name == "wal" and not written:  # the batch's commit: its record fails
                for f in ("entries", "sealed/000000.seal"):
                    written[f] = (Path(d) / f).read_bytes().hex()
                raise OSError(errno.EIO, "Input/output error")
            real_datasync(fd)
            synced_since.add(name)

        def sync(fd):
            real_sync(fd)
            synced_since.add(name_of(fd))

        os.fdatasync, os.fsync = datasync, sync
        try:
            await log.append({"type": "refused"}, {"request": b"r" * 100})
        except AuditUnavailable:
            pass
        os.fdatasync, os.fsync = real_datasync, real_sync
        print(json.dumps({"written": written, "synced": sorted(synced_since)}), flush=True)
        os._exit(0)  # and the power goes

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_a_refused_batch_does_not_return_after_a_power_cut(tmp_path: Path, keys: Path) -> None:
    """The wal's fdatasync failed, so the batch was refused and rolled back. Its bytes may have
    reached `entries` and the segment by writeback all the same; unless the rollback's cut is
    made durable, a power cut can leave them there, whole, canonical and past the checkpoint,
    and the next start would keep an entry its caller was told was not written. Modelled: a
    file no successful sync covered after the failure is left as the batch wrote it."""
    d = tmp_path / "log"
    out = run_child(REFUSED_THEN_POWER_CUT_CHILD, d, keys)
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    for name, data in state["written"].items():
        if Path(name).name not in state["synced"]:
            (d / name).write_bytes(bytes.fromhex(data))

    async def reopen() -> list[str]:
        log = await open_log(d, keys)
        types = [log.read_entry(i)["type"] for i in range(log.committed)]
        await log.close()
        return types

    assert asyncio.run(reopen()) == ["kept"]
    assert verify_log(d).ok


async def test_the_void_over_a_failed_batch_is_made_durable(
    tmp_path: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the wal's fdatasync failed, the rollback writes over the record and fdatasyncs the
    wal again: left in the page cache, a power cut could bring the record back."""
    d = tmp_path / "log"
    log = await open_log(d, keys)
    await log.append(entry(0), {"request": b"kept"})
    real, synced = os.fdatasync, []

    def failing_once(fd: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        synced.append(name)
        if synced == ["wal"]:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", failing_once)
    with pytest.raises(AuditUnavailable):
        await log.append(entry(1), {"request": b"refused"})
    # the failed commit's, the cuts of the segment and `entries`, then the void's
    assert synced == ["wal", "000000.seal", "entries", "wal"]
    monkeypatch.setattr(os, "fdatasync", real)
    assert wal_records(d) == 1
    await log.close()


async def test_segments_rotate_at_signing_and_every_body_stays_readable(
    tmp_path: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the size limit the next segment starts, at a signing (when the one before is
    durable and no write-ahead record names it); references name the segment each body is in."""
    monkeypatch.setattr(seal_module, "SEGMENT_LIMIT", 4096)
    d = tmp_path / "log"
    log = await open_log(d, keys)
    for i in range(12):
        await log.append(entry(i), {"request": b"%d" % i * 700})
        await log.signed()
    files = [log.read_entry(i)["sealed"]["request"]["file"] for i in range(12)]
    await log.close()
    assert files == sorted(files) and len(set(files)) >= 3, files
    unnamed = {p for p in (d / "sealed").iterdir() if f"sealed/{p.name}" not in files}
    assert all(p.stat().st_size == 0 for p in unnamed), unnamed  # at most the next one, empty
    for i in range(12):
        e = LogReader(d).read_entry(i)
        assert unseal(d, e, "request", keys / "sealing.key") == b"%d" % i * 700
    report = verify_log(d)
    assert report.ok and report.size == 12, report.summary()


async def test_a_failed_fdatasync_at_signing_keeps_the_wal_and_writes_the_tail_again(
    tmp_path: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from `entries`' fdatasync at signing (injected: no real disk fails on demand): the
    checkpoint is not signed and the write-ahead log not emptied; the next signing first
    writes what the log holds back into `entries` and the segment (Linux may have marked the
    failed pages clean), and only then syncs, signs and empties it."""
    d = tmp_path / "log"
    log = await open_log(d, keys)
    await log.append(entry(0), {"request": b"before"})
    await log.signed()
    real, failures, rewrites = os.fdatasync, [1], []

    def flaky(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/entries") and failures[0]:
            failures[0] -= 1
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    def counted(*args: object, **kw: object) -> tuple[int, int]:
        rewrites.append(kw["check"])
        return rewrite(*args, **kw)

    monkeypatch.setattr(os, "fdatasync", flaky)
    monkeypatch.setattr(wal_module, "rewrite", counted)
    for i in range(1, 4):
        await log.append(entry(i), {"request": b"q%d" % i})
    await log.signed()  # the signing failed (logged); `signed` returns once the writer idles
    assert log.size == 1 and log.committed == 4 and wal_records(d) == 3
    assert rewrites == []
    await log.append(entry(4), {"request": b"q4"})
    await log.signed()
    assert log.size == 5 and wal_records(d) == 0
    assert rewrites == [False]  # written again from the log, before the sync that succeeded
    await log.close()
    report = verify_log(d)
    assert report.ok and report.size == 5, report.summary()
    for i in range(1, 5):
        assert unseal(d, LogReader(d).read_entry(i), "request", keys / "sealing.key") == b"q%d" % i


async def test_while_signing_keeps_failing_the_write_ahead_log_stays_bounded(
    tmp_path: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits only need the write-ahead log's fdatasync, so they go on while every signing
    fails (EIO from `entries`, injected), and the log keeps each batch since the last
    signing. Past WAL_LIMIT a commit tries to sign first and is refused when that fails too;
    once the disk works again, the next commit signs, empties the log and is written."""
    d = tmp_path / "log"
    log = await open_log(d, keys)
    await log.append(entry(0), {"request": b"before"})
    await log.signed()
    real = os.fdatasync

    def entries_fail(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/entries"):
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(writer_module, "WAL_LIMIT", 4096)
    monkeypatch.setattr(os, "fdatasync", entries_fail)
    acknowledged = 0
    with pytest.raises(AuditUnavailable, match="write-ahead log full"):
        for i in range(1, 100):
            await log.append(entry(i), {"request": b"q" * 500})
            acknowledged += 1
            await log.signed()  # each signing is tried, and fails
    assert 4 <= acknowledged < 10 and log.size == 1
    assert (d / WAL).stat().st_size <= 4096 + 2048  # the limit and at most one batch more
    monkeypatch.setattr(os, "fdatasync", real)
    seq = await log.append(entry(100), {"request": b"after"})
    await log.signed()
    assert seq == 1 + acknowledged and log.size == seq + 1 and wal_records(d) == 0
    await log.close()
    report = verify_log(d)
    assert report.ok and report.size == seq + 1, report.summary()


async def test_batch_durability_returns_at_once(tmp_path: Path, keys: Path) -> None:
    log = await open_log(tmp_path / "log", keys, durability="batch")
    seqs = [await log.append(entry(i)) for i in range(300)]
    assert seqs == list(range(300))
    await log.signed()
    assert log.size == 300
    await log.close()
    assert verify_log(tmp_path / "log").ok


async def test_a_committer_killed_by_a_defect_fails_closed(
    tmp_path: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A committer that dies of something other than a write error (a defect: here signing
    raises RuntimeError) fails the append queued behind it and refuses later ones; before, the
    queued caller waited forever and every later sync append with it."""
    log = await open_log(tmp_path / "log", keys)
    assert await log.append(entry(0)) == 0  # durable, not signed yet

    def defect(self: Writer, *, always: bool = False) -> None:
        raise RuntimeError("a defect")

    monkeypatch.setattr(Writer, "sign", defect)
    waiter = asyncio.ensure_future(log.signed())  # asks for the signature now
    queued = asyncio.ensure_future(log.append(entry(1)))
    done, _ = await asyncio.wait([waiter, queued], timeout=30)
    assert done == {waiter, queued}, "callers were left waiting on a dead committer"
    with pytest.raises(AuditUnavailable, match="RuntimeError"):
        queued.result()
    with pytest.raises(AuditUnavailable, match="committer stopped"):
        await log.append(entry(2))
    await log.close()
    monkeypatch.undo()
    reopened = await open_log(tmp_path / "log", keys)  # the durable entry is kept and signed
    assert reopened.committed == 1 and reopened.read_entry(0)["request_id"] == "r0"
    await reopened.close()
    assert verify_log(tmp_path / "log").ok


async def test_independent_rfc9162_verifier_agrees(tmp_path: Path, keys: Path) -> None:
    """A third party reading only `entries`, `checkpoint` and `verifier` with its own code."""
    log = await open_log(tmp_path / "log", keys)
    for i in range(37):
        await log.append(entry(i), {"request": b"x"} if i % 3 else None)
    await log.close()

    def mth(leaves: list[bytes]) -> bytes:  # RFC 9162 §2.1.1
        if len(leaves) == 1:
            return hashlib.sha256(b"\x00" + leaves[0]).digest()
        k = 1
        while k * 2 < len(leaves):
            k *= 2
        return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()

    leaves = frames((tmp_path / "log/entries").read_bytes())
    note = (tmp_path / "log/checkpoint").read_bytes()
    text, sigs = note.split(b"\n\n")
    text += b"\n"
    origin, size, root_b64, _ = text.decode().split("\n")
    assert origin == ORIGIN and int(size) == len(leaves) == 37
    assert base64.b64decode(root_b64) == mth(leaves)

    name, key_hex, key_b64 = (tmp_path / "log/verifier").read_text().strip().split("+", 2)
    pub = base64.b64decode(key_b64)
    assert pub[0] == 1 and hashlib.sha256(name.encode() + b"\n" + pub).digest()[:4].hex() == key_hex
    dash, sig_name, sig_b64 = sigs.decode().rstrip("\n").split(" ")
    assert dash == "\u2014" and sig_name == name
    sig = base64.b64decode(sig_b64)
    assert sig[:4].hex() == key_hex
    Ed25519PublicKey.from_public_bytes(pub[1:]).verify(sig[4:], text)
    for leaf in leaves:
        assert (
            json.dumps(
                json.loads(leaf), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
            == leaf
        )


async def test_torn_tail_is_truncated_and_recorded(tmp_path: Path, keys: Path) -> None:
    d = tmp_path / "log"
    log = await open_log(d, keys)
    for i in range(10):
        await log.append(entry(i))
    await log.close()
    whole = (d / "entries").read_bytes()
    append_bytes(d / "entries", struct.pack(">I", 500) + b'{"seq":10,"type":"cut')
    log = await open_log(d, keys)
    await log.signed()  # the recovered entry's checkpoint follows its release
    assert log.size == 11
    rec = log.read_entry(10)
    assert rec["type"] == "gateway.recovered" and rec["truncated_entry_bytes"] == 4 + 21
    await log.close()
    assert (d / "entries").read_bytes().startswith(whole)
    assert verify_log(d).ok


async def test_whole_unsigned_tail_is_kept_and_signed(tmp_path: Path, keys: Path) -> None:
    """Fsynced but not yet checkpointed entries (crash before signing) survive a restart."""
    d = tmp_path / "log"
    log = await open_log(d, keys)
    for i in range(4):
        await log.append(entry(i))
    await log.close()
    body = json.dumps({"seq": 4, "type": "late"}, separators=(",", ":")).encode()
    append_bytes(
        d / "entries", struct.pack(">I", len(body)) + body + struct.pack(">I", 3) + b"\0" * 3
    )
    log = await open_log(d, keys)
    assert log.read_entry(4)["type"] == "late"
    assert log.read_entry(5)["type"] == "gateway.recovered"
    await log.close()
    assert verify_log(d).ok


async def test_fork_is_refused(tmp_path: Path, keys: Path) -> None:
    d = tmp_path / "log"
    log = await open_log(d, keys)
    for i in range(8):
        await log.append(entry(i))
    await log.close()
    records = frames((d / "entries").read_bytes())
    forged = json.loads(records[5])
    forged["subject"] = "mallory"
    records[5] = json.dumps(
        forged, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    (d / "entries").write_bytes(b"".join(struct.pack(">I", len(r)) + r for r in records))
    with pytest.raises(AuditOpenError, match="fork"):
        await open_log(d, keys)
    (d / "entries").write_bytes(b"".join(struct.pack(">I", len(r)) + r for r in records[:5]))
    with pytest.raises(AuditOpenError, match="removed"):
        await open_log(d, keys)


async def test_second_writer_and_wrong_key_are_refused(tmp_path: Path, keys: Path) -> None:
    d = tmp_path / "log"
    log = await open_log(d, keys)
    with pytest.raises(AuditOpenError, match="another writer"):
        await open_log(d, keys)
    await log.close()
    init_keys(tmp_path / "other", "other.example/audit")
    with pytest.raises(AuditOpenError, match="wrong signing_key"):
        await open_log(d, tmp_path / "other")


# -- tampering: one flipped byte anywhere is caught and named --------------------------------


@pytest.fixture(scope="module")
def pristine() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp())
    init_keys(base / "keys", ORIGIN)

    async def build() -> None:
        log = await open_log(base / "log", base / "keys")
        for batch in range(4):
            await asyncio.gather(
                *(
                    log.append(entry(i), {"request": b"req %d" % i, "response": b"r" * i})
                    for i in range(batch * 6, batch * 6 + 6)
                )
            )
        await log.close()

    asyncio.run(build())
    assert verify_log(base / "log").ok
    yield base
    shutil.rmtree(base)


def _flip(src: Path, rel: str, pos: int, bit: int) -> tuple[Path, int]:
    work = Path(tempfile.mkdtemp())
    shutil.copytree(src / "log", work / "log")
    data = bytearray((work / "log" / rel).read_bytes())
    pos %= len(data)
    data[pos] ^= 1 << bit
    (work / "log" / rel).write_bytes(bytes(data))
    return work, pos


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pos=st.integers(0, 10**6), bit=st.integers(0, 7))
@example(pos=2, bit=0)  # entry 0's length grows over entry 1's prefix: still names entry 0
@example(pos=3, bit=0)  # entry 0's length off by one: entry 1 is cut off, entry 0 is named
def test_flipped_entry_byte_names_the_entry(pristine: Path, pos: int, bit: int) -> None:
    work, pos = _flip(pristine, "entries", pos, bit)
    try:
        report = verify_log(work / "log", (pristine / "log/verifier").read_text())
        assert not report.ok
        starts, off = [], 0
        for rec in frames((pristine / "log/entries").read_bytes()):
            starts.append(off)
            off += 4 + len(rec)
        k = max(i for i, s in enumerate(starts) if s <= pos)
        assert (report.problem.kind, report.problem.index) == ("entry", k), report.summary()
        assert f"entry {k}" in report.summary()
    finally:
        shutil.rmtree(work)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rel=st.sampled_from(["checkpoint", "checkpoints"]),
    pos=st.integers(0, 10**6),
    bit=st.integers(0, 7),
)
def test_flipped_checkpoint_byte_is_named(pristine: Path, rel: str, pos: int, bit: int) -> None:
    work, pos = _flip(pristine, rel, pos, bit)
    try:
        report = verify_log(work / "log", (pristine / "log/verifier").read_text())
        assert not report.ok
        assert report.problem.kind == "checkpoint", report.summary()
        assert "checkpoint" in report.summary()
    finally:
        shutil.rmtree(work)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pos=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_flipped_sealed_byte_names_the_blob(pristine: Path, pos: int, bit: int) -> None:
    work, pos = _flip(pristine, "sealed/000000.seal", pos, bit)
    try:
        report = verify_log(work / "log", (pristine / "log/verifier").read_text())
        assert not report.ok and report.problem.kind == "sealed", report.summary()
        seq = report.problem.index
        e = json.loads(frames((work / "log/entries").read_bytes())[seq])
        hit = [n for n, r in e["sealed"].items() if r["offset"] <= pos < r["offset"] + r["length"]]
        assert hit and f"sealed blob {hit[0]!r} of entry {seq}" in report.summary()
    finally:
        shutil.rmtree(work)


def test_pinned_verifier_rejects_a_resigned_log(pristine: Path, tmp_path: Path) -> None:
    """A log checked against another key (e.g. one re-signed by an intruder) fails."""
    pinned = (pristine / "log/verifier").read_text()
    assert verify_log(pristine / "log", pinned).ok
    other = init_keys(tmp_path / "k2", ORIGIN).verifier.encode()
    report = verify_log(pristine / "log", other)
    assert not report.ok and report.problem.kind == "checkpoint", report.summary()


# -- failing writes: disk full -> AuditUnavailable, then recovery by itself -------------------

DISK_FULL_CHILD = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    from pathlib import Path
    from gateway.audit import AuditLog, AuditUnavailable

    async def main(d, keys):
        log = await AuditLog.open(Path(d), origin="gw.test/audit", signing_key=Path(keys) /
            "signing.key", sealing_key=Path(keys) / "sealing.key")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
        ok, failed, err = 0, 0, ""
        for i in range(400):
            try:
                await log.append({"type": "inference", "i": i, "pad": "x" * 300},
                                 {"request": b"y" * 200})
                ok += 1
                if i % 10 == 9:  # signing empties the write-ahead log: `entries` fills first
                    await log.signed()
            except AuditUnavailable as exc:
                failed += 1
                err = str(exc)
                break
        down = log.available
        await log.signed()  # what committed before the failure is signed once the writer idles
        size_at_failure = log.size
        try:  # a concurrent burst of the same entries while the disk is full: all refused
            await asyncio.gather(*(log.append({"type": "inference", "i": -1, "pad": "x" * 300},
                                              {"request": b"y" * 200}) for _ in range(5)))
            burst = "accepted"
        except AuditUnavailable:
            burst = "refused"
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        seq = await log.append({"type": "after"})
        up = log.available
        await log.close()
        print(json.dumps({"ok": ok, "failed": failed, "err": err, "down": down, "up": up,
                          "seq": seq, "size_at_failure": size_at_failure, "burst": burst}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_disk_full_fails_closed_then_recovers(tmp_path: Path, keys: Path) -> None:
    out = run_child(DISK_FULL_CHILD, tmp_path / "log", keys)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["failed"] == 1 and 0 < res["ok"] < 400
    assert res["down"] is False and res["up"] is True and res["burst"] == "refused"
    assert "File too large" in res["err"] and "x" * 20 not in res["err"]
    assert res["seq"] == res["size_at_failure"] == res["ok"]  # no gap, no half entry
    report = verify_log(tmp_path / "log")
    assert report.ok, report.summary()
    assert report.size == res["ok"] + 1


def _refuse_writes(path: Path, refuse: bool) -> None:
    """EPERM on every write to `path`, for root too (root ignores file modes): the immutable
    flag, which needs root and an ext2/3/4 or similar file system."""
    subprocess.run(["chattr", "+i" if refuse else "-i", str(path)], check=True)


@pytest.mark.parametrize("refusing", ["entries", "wal"])
async def test_permission_denied_fails_closed_then_recovers(
    tmp_path: Path, keys: Path, refusing: str
) -> None:
    d = tmp_path / "log"
    log = await open_log(d, keys)
    await log.append(entry(0))
    _refuse_writes(d / refusing, True)  # was a chmod, skipped as root
    try:
        with pytest.raises(AuditUnavailable):
            await log.append(entry(1))
        assert not log.available
    finally:
        _refuse_writes(d / refusing, False)
    assert await log.append(entry(2)) == 1
    await log.close()
    assert verify_log(d).ok


STREAM_FAILS_CHILD = textwrap.dedent(
    """
    import asyncio, json, os, resource, signal, sys
    from pathlib import Path
    from gateway.audit import AuditLog, AuditUnavailable
    from gateway.audit.seal import SPILL

    async def main(d, keys):
        log = await AuditLog.open(Path(d), origin="gw.test/audit", signing_key=Path(keys) /
            "signing.key", sealing_key=Path(keys) / "sealing.key")
        stream = log.sealed_stream()
        stream.add(os.urandom(2 * SPILL))  # spilled to its own file
        stream.finish()
        spilled = (Path(d) / stream.file).is_file()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = (Path(d) / "entries").stat().st_size
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 8, hard))
        try:
            await log.append({"type": "inference"}, {"response": stream})
            refused = False
        except AuditUnavailable:
            refused = True
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        await log.close()
        blobs = [p.name for p in (Path(d) / "sealed").glob("*.blob")]
        print(json.dumps({"spilled": spilled, "refused": refused, "blobs": blobs,
                          "fd": stream.fd}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_a_streamed_body_whose_entry_fails_leaves_no_file(tmp_path: Path, keys: Path) -> None:
    out = run_child(STREAM_FAILS_CHILD, tmp_path / "log", keys)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res == {"spilled": True, "refused": True, "blobs": [], "fd": -1}
    assert verify_log(tmp_path / "log").ok
