"""What one committed batch costs in system calls, counted by strace on a real writer process.

A sync append with sealed bodies is one batch: one fdatasync, of the write-ahead log that holds
its entries and blobs (`entries` and the sealed segment are fdatasynced when a checkpoint is
signed, off the appends' path), nothing is fsynced, and no file is opened (the checkpoint is
rewritten in place through a descriptor kept open).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.audit import init_keys, verify_log

APPENDS = 20
CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from gateway.audit import AuditLog

    async def main(d, keys):
        log = await AuditLog.open(Path(d), origin="gw.test/audit", signing_key=Path(keys) /
            "signing.key", sealing_key=Path(keys) / "sealing.key")
        for i in range(3):  # warm up: tree levels and lazily opened files exist
            await log.append({"type": "warm", "i": i}, {"request": b"q", "response": b"a"})
        os.path.exists("/i11-marker-begin")
        for i in range(int(sys.argv[3])):
            await log.append({"type": "inference", "i": i}, {"request": b"q", "response": b"a"})
        os.path.exists("/i11-marker-end")
        await log.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)
CALL = re.compile(r"^\d+\s+(\w+)\((?:\d+<([^>]*)>)?")  # a call's start, and its file (-y)


def test_one_batch_is_one_fdatasync_and_no_open_or_fsync(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace, "strace is needed (apt-get install strace)"
    init_keys(tmp_path / "keys", "gw.test/audit")
    trace = tmp_path / "trace"
    subprocess.run(
        [
            strace,
            "-f",
            "-y",
            "-o",
            str(trace),
            "-e",
            "trace=fdatasync,fsync,openat,open,rename,renameat,renameat2,newfstatat,stat",
            sys.executable,
            "-c",
            CHILD,
            str(tmp_path / "log"),
            str(tmp_path / "keys"),
            str(APPENDS),
        ],
        check=True,
        timeout=120,
    )
    lines = trace.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if "/i11-marker-begin" in line)
    end = next(i for i, line in enumerate(lines) if "/i11-marker-end" in line)
    window = [m for line in lines[begin:end] if (m := CALL.match(line))]
    window = [m for m in window if not m.group(1).endswith(("stat", "statat"))]
    synced = [Path(m.group(2)).name for m in window if m.group(1) == "fdatasync"]
    assert synced.count("wal") == APPENDS, synced  # once per batch
    # Anything else fdatasynced is a signing's pair (under 0.5 s of appends: usually none).
    signings = synced.count("entries")
    assert sorted(synced) == sorted(["wal"] * APPENDS + ["entries", "000000.seal"] * signings)
    # No fsync, open or rename per batch; the tree opens its file of a new level, once.
    others = [m.string for m in window if m.group(1) != "fdatasync"]
    assert all("openat(" in line and "/log/tree/" in line for line in others), others
    assert len(others) <= APPENDS.bit_length()
    report = verify_log(tmp_path / "log")
    assert report.ok and report.size == 3 + APPENDS, report.summary()
