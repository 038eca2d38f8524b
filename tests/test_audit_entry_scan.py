"""The verify pass over `entries`, split across worker processes: same answer as one pass."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from gateway.audit import AuditLog, LogReader, entry_scan, init_keys, verify_log

ORIGIN = "gw.test/audit"


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("scan")
    init_keys(base / "keys", ORIGIN)

    async def build() -> None:
        log = await AuditLog.open(
            base / "log",
            origin=ORIGIN,
            signing_key=base / "keys" / "signing.key",
            sealing_key=base / "keys" / "sealing.key",
        )
        await asyncio.gather(
            *(
                log.append(
                    {"type": "inference", "i": i}, {"response": b"r%d" % i} if i % 3 else None
                )
                for i in range(400)
            )
        )
        await log.close()

    asyncio.run(build())
    return base / "log"


def _scan(d: Path) -> list[entry_scan.Found]:
    total = (d / "entries").stat().st_size
    return entry_scan.scan_entries(d / "entries", d / "index", 0, 0, 400, total)


def test_workers_find_what_one_pass_finds(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = _scan(log_dir)
    monkeypatch.setattr(entry_scan, "PARALLEL_FROM", 0)
    split = _scan(log_dir)
    assert len(one) == 1 and len(split) >= 2
    assert b"".join(f.leaves for f in split) == one[0].leaves
    assert [o for f in split for o in f.offsets] == list(one[0].offsets)
    assert sum(f.sealed_blobs for f in split) == one[0].sealed_blobs
    assert one[0].sealed_blobs == 266  # every entry that names a sealed blob was checked
    assert verify_log(log_dir).ok


def test_a_bad_entry_in_a_later_range_is_named(
    log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entry_scan, "PARALLEL_FROM", 0)
    d = tmp_path / "log"
    shutil.copytree(log_dir, d)
    data = (d / "entries").read_bytes()
    at = data.index(b'"i":350,')
    (d / "entries").write_bytes(data[:at] + b'"i":351,' + data[at + 8 :])
    report = verify_log(d)
    assert (report.problem.kind, report.problem.index) == ("entry", 350), report.summary()


def test_an_index_that_does_not_line_up_costs_time_not_truth(
    log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entry_scan, "PARALLEL_FROM", 0)
    d = tmp_path / "log"
    shutil.copytree(log_dir, d)
    index = bytearray((d / "index").read_bytes())
    index[8 * 200 + 7] ^= 0x01  # the offset of entry 200 is off by one
    (d / "index").write_bytes(bytes(index))
    ranges = _scan(d)
    assert len(ranges) == 1 and ranges[0].count == 400  # redone in one pass
    report = verify_log(d)
    assert (report.problem.kind, report.problem.index) == ("index", None), report.summary()


def test_windows_smaller_than_an_entry_miss_no_sealed_blob(
    log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages are dropped and '"sealed":' looked for one window at a time: with windows
    # smaller than an entry every marker straddles a window's edge, and each must be found.
    monkeypatch.setattr(entry_scan, "WINDOW", 16)
    one = _scan(log_dir)
    assert (one[0].count, one[0].sealed_blobs, one[0].sealed_problem) == (400, 266, None)
    d = tmp_path / "log"
    shutil.copytree(log_dir, d)
    (segment,) = (d / "sealed").iterdir()
    size = segment.stat().st_size
    reader = LogReader(d)
    last = next(
        seq
        for seq in range(400)
        for ref in (reader.read_entry(seq).get("sealed") or {}).values()
        if ref["offset"] + ref["length"] == size
    )
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0x01  # the last blob sealed
    segment.write_bytes(bytes(data))
    report = verify_log(d)
    assert (report.problem.kind, report.problem.index) == ("sealed", last), report.summary()
    assert "SHA-256 does not match" in report.problem.message
