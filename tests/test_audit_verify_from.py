"""`gateway audit verify --from CHECKPOINT_FILE`: only what follows a kept checkpoint is read."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.audit import AuditLog, init_keys

ORIGIN = "gw.test/audit"


async def _append(d: Path, keys: Path, start: int, n: int, tag: str = "a") -> None:
    log = await AuditLog.open(
        d, origin=ORIGIN, signing_key=keys / "signing.key", sealing_key=keys / "sealing.key"
    )
    for i in range(start, start + n):
        await log.append({"type": "inference", "i": i, "tag": tag}, {"response": b"r%d" % i})
    await log.close()


@pytest.fixture
def kept_log(tmp_path: Path) -> tuple[Path, Path, str]:
    """A log of 30 entries whose checkpoint was kept, then 20 more entries."""
    verifier = init_keys(tmp_path / "keys", ORIGIN).verifier.encode()
    d = tmp_path / "log"
    asyncio.run(_append(d, tmp_path / "keys", 0, 30))
    shutil.copy(d / "checkpoint", tmp_path / "kept.checkpoint")
    asyncio.run(_append(d, tmp_path / "keys", 30, 20))
    return d, tmp_path / "kept.checkpoint", verifier


def verify(d: Path, verifier: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["gateway", "audit", "verify", "--dir", str(d), "--verifier", verifier, *extra],
        capture_output=True,
        text=True,
    )


def test_only_the_entries_after_the_kept_checkpoint_are_read(kept_log) -> None:
    d, kept, verifier = kept_log
    out = verify(d, verifier, "--from", str(kept))
    assert out.returncode == 0, out.stderr
    assert "50 entries (checked from the kept checkpoint at 30)" in out.stdout
    # An entry before the kept checkpoint altered in place is not read again (it was checked
    # when the checkpoint was kept); the whole check still finds it.
    data = (d / "entries").read_bytes()
    at = data.index(b'"i":7,')
    (d / "entries").write_bytes(data[:at] + b'"i":8,' + data[at + 6 :])
    assert verify(d, verifier, "--from", str(kept)).returncode == 0
    whole = verify(d, verifier)
    assert whole.returncode == 1 and "entry 7" in whole.stderr


def test_an_entry_after_the_kept_checkpoint_altered_is_named(kept_log) -> None:
    d, kept, verifier = kept_log
    data = (d / "entries").read_bytes()
    at = data.index(b'"i":41,')
    (d / "entries").write_bytes(data[:at] + b'"i":42,' + data[at + 7 :])
    out = verify(d, verifier, "--from", str(kept))
    assert out.returncode == 1 and "entry 41" in out.stderr, out.stderr


def test_a_rewritten_log_is_refused(kept_log, tmp_path: Path) -> None:
    d, kept, verifier = kept_log
    shutil.rmtree(d)  # same key, same origin, different history
    asyncio.run(_append(d, tmp_path / "keys", 0, 40, tag="rewritten"))
    out = verify(d, verifier, "--from", str(kept))
    assert out.returncode == 1 and "rewritten or forked" in out.stderr, out.stderr
    assert verify(d, verifier).returncode == 0  # on its own the new log is consistent


def test_a_truncated_log_is_refused(kept_log, tmp_path: Path) -> None:
    d, kept, verifier = kept_log
    shutil.rmtree(d)
    asyncio.run(_append(d, tmp_path / "keys", 0, 12))
    out = verify(d, verifier, "--from", str(kept))
    assert out.returncode == 1 and "has only 12 entries" in out.stderr, out.stderr


def test_a_kept_checkpoint_signed_by_another_key_is_refused(kept_log, tmp_path: Path) -> None:
    d, _, verifier = kept_log
    init_keys(tmp_path / "other", ORIGIN)
    other = tmp_path / "other-log"
    asyncio.run(_append(other, tmp_path / "other", 0, 3))
    out = verify(d, verifier, "--from", str(other / "checkpoint"))
    assert out.returncode == 1 and "--from checkpoint" in out.stderr, out.stderr
