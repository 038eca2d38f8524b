"""Opening a log from its last checkpoint: what is read, what is repaired, what is refused."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gateway.audit import AuditLog, AuditOpenError, init_keys, verify_log
from gateway.audit.note import Verifier
from gateway.audit.resume import TAIL_WINDOW, last_checkpoint_from_tail

ORIGIN = "gw.test/audit"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys", ORIGIN)
    return tmp_path / "keys"


async def open_log(d: Path, keys: Path) -> AuditLog:
    return await AuditLog.open(
        d, origin=ORIGIN, signing_key=keys / "signing.key", sealing_key=keys / "sealing.key"
    )


async def one_batch_each(d: Path, keys: Path, n: int) -> None:
    """n entries, each its own batch and, signed before the next, its own checkpoint."""
    log = await open_log(d, keys)
    for i in range(n):
        await log.append({"type": "inference", "request_id": f"r{i}"})
        await log.signed()
    await log.close()


async def test_checkpoints_beyond_the_tail_window_are_found_from_the_end(
    tmp_path: Path, keys: Path
) -> None:
    d = tmp_path / "log"
    await one_batch_each(d, keys, 40)
    per_note = (d / "checkpoints").stat().st_size / 40
    await one_batch_each(d, keys, int(TAIL_WINDOW / per_note) + 20)
    assert (d / "checkpoints").stat().st_size > TAIL_WINDOW
    log = await open_log(d, keys)
    size = log.size
    await log.close()
    whole = (d / "checkpoints").stat().st_size
    with (d / "checkpoints").open("ab") as f:  # a torn append of the next note
        f.write(struct.pack(">I", 180) + ORIGIN.encode() + b"\n12")
    verifier = Verifier.parse((d / "verifier").read_text())
    found = last_checkpoint_from_tail(d, verifier, ORIGIN)  # what opening reads: the tail
    assert found is not None and found.checkpoint is not None
    assert (found.checkpoint.size, found.records_end, found.recorded) == (size, whole, True)
    log = await open_log(d, keys)
    assert log.committed == size + 1  # the gateway.recovered entry
    assert log.read_entry(size)["truncated_checkpoint_bytes"] == 4 + len(ORIGIN) + 3
    await log.close()
    assert verify_log(d).ok


async def test_a_torn_checkpoint_file_is_replaced_from_checkpoints(
    tmp_path: Path, keys: Path
) -> None:
    """`checkpoint` is rewritten in place; a power cut can tear it. Was: refused to open."""
    d = tmp_path / "log"
    await one_batch_each(d, keys, 5)
    note = bytearray((d / "checkpoint").read_bytes())
    note[-10] ^= 0x01  # its signature no longer verifies
    (d / "checkpoint").write_bytes(bytes(note))
    log = await open_log(d, keys)
    assert log.size == 5
    await log.append({"type": "inference", "request_id": "after"})
    await log.close()
    assert verify_log(d).ok


async def test_a_lagging_tree_cache_is_rebuilt_by_the_full_check(
    tmp_path: Path, keys: Path
) -> None:
    d = tmp_path / "log"
    await one_batch_each(d, keys, 9)
    whole = (d / "tree" / "00").read_bytes()
    (d / "tree" / "00").write_bytes(whole[: 32 * 4])  # lost unsynced writes
    log = await open_log(d, keys)
    assert log.size == 9
    await log.close()
    assert (d / "tree" / "00").read_bytes() == whole
    assert verify_log(d).ok


async def test_the_last_covered_entry_altered_is_a_fork(tmp_path: Path, keys: Path) -> None:
    d = tmp_path / "log"
    await one_batch_each(d, keys, 6)
    data = (d / "entries").read_bytes()
    at = data.rindex(b'"r5"')
    (d / "entries").write_bytes(data[:at] + b'"r6"' + data[at + 4 :])  # same length
    with pytest.raises(AuditOpenError, match="fork"):
        await open_log(d, keys)


async def test_unsigned_entries_after_the_checkpoint_are_kept_and_signed(
    tmp_path: Path, keys: Path
) -> None:
    """A crash after the entries were durable but before their checkpoint was written."""
    d = tmp_path / "log"
    await one_batch_each(d, keys, 3)
    signed = (d / "checkpoint").read_bytes()
    cps = (d / "checkpoints").read_bytes()
    await one_batch_each(d, keys, 2)  # entries 3 and 4 ...
    (d / "checkpoint").write_bytes(signed)  # ... whose checkpoints never reached the disk
    (d / "checkpoints").write_bytes(cps)
    log = await open_log(d, keys)
    assert log.size == 5
    assert log.read_entry(4)["request_id"] == "r1"
    await log.close()
    assert verify_log(d).ok
