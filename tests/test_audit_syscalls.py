"""What one committed batch costs in system calls, counted by strace on a real writer process.

A sync append with sealed bodies is one batch: `entries` and the sealed segment are each
fdatasynced once (in parallel), nothing is fsynced, and no file is opened (the checkpoint is
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
CALL = re.compile(r"^\d+\s+(\w+)\(")  # a call's start ("<... resumed>" lines are not)


def test_one_batch_is_one_fdatasync_per_file_and_no_open_or_fsync(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace, "strace is needed (apt-get install strace)"
    init_keys(tmp_path / "keys", "gw.test/audit")
    trace = tmp_path / "trace"
    subprocess.run(
        [
            strace,
            "-f",
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
    calls = [m.group(1) for m in window]
    assert calls.count("fdatasync") == 2 * APPENDS  # entries and segment, once per batch each
    # No fsync, open or rename per batch; the tree opens its file of a new level, once.
    others = [m.string for m in window if m.group(1) != "fdatasync"]
    assert all("openat(" in line and "/log/tree/" in line for line in others), others
    assert len(others) <= APPENDS.bit_length()
    report = verify_log(tmp_path / "log")
    assert report.ok and report.size == 3 + APPENDS, report.summary()
