"""Verifying a log while its writer keeps signing: every read may be followed by a signing.

`gateway audit verify` (and the tests that verify a running gateway's log) read several files
one after another while the writer appends entries, appends a note to `checkpoints` and then
overwrites `checkpoint`. A signing between two of the verifier's reads must not be reported as
tampering. To put a real signing at a chosen point, a CPython audit hook sees each file the
verifying thread opens and, before the open goes ahead, has the real writer append an entry
and sign a checkpoint (nothing of the verifier or writer is replaced).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit import AuditLog, VerifyReport, init_keys, verify_log
from gateway.audit.store import CHECKPOINT, CHECKPOINTS, ENTRIES

ORIGIN = "gw.test/live"

# The hook is process-wide and cannot be removed: it calls whatever `_on_open` holds, if set.
_on_open: Callable[[str], None] | None = None


def _audit_hook(event: str, args: tuple) -> None:
    if event == "open" and _on_open is not None and isinstance(args[0], str | Path):
        _on_open(str(args[0]))


sys.addaudithook(_audit_hook)


async def open_log(d: Path, keys: Path) -> AuditLog:
    return await AuditLog.open(
        d, origin=ORIGIN, signing_key=keys / "signing.key", sealing_key=keys / "sealing.key"
    )


async def verify_while_signing(
    log: AuditLog, d: Path, at: str | None, once: bool, since: bytes | None = None
) -> tuple[VerifyReport, int]:
    """verify_log on a thread; a signing before each open of file `at` (None: of any file in
    `d`), or before the first only. Returns the report and how many signings ran."""
    global _on_open
    loop = asyncio.get_running_loop()
    signings = 0

    async def sign() -> None:
        await log.append({"type": "inference", "request_id": f"live{log.size}"})
        await log.signed()

    def before_open(path: str) -> None:
        """On the verifying thread only: the signing's own opens run on the loop's threads."""
        nonlocal signings
        if threading.current_thread() is not verifier:
            return
        p = Path(path)
        if (p.parent != d if at is None else p != d / at) or (once and signings):
            return
        asyncio.run_coroutine_threadsafe(sign(), loop).result(60)  # a bound, not a speed
        signings += 1

    result: list = []
    verifier = threading.Thread(target=lambda: result.append(verify_log(d, since=since)))
    _on_open = before_open
    try:
        verifier.start()
        await asyncio.to_thread(verifier.join)
    finally:
        _on_open = None
    return result[0], signings


@pytest.mark.parametrize(
    ("at", "once"),
    [
        (CHECKPOINTS, True),
        (CHECKPOINTS, False),
        (CHECKPOINT, False),
        (ENTRIES, False),
        (None, False),
    ],
)
async def test_a_signing_between_any_two_reads_is_not_reported_as_tampering(
    tmp_path: Path, at: str | None, once: bool
) -> None:
    init_keys(tmp_path / "keys", ORIGIN)
    d = tmp_path / "log"
    log = await open_log(d, tmp_path / "keys")
    for i in range(5):
        await log.append({"type": "inference", "request_id": f"r{i}"})
    await log.signed()
    # A signing at every reading of `checkpoint` (or around `checkpoints`) never lets the pair
    # settle: checked as of the last reading, and said so. One signing: read again, settled.
    unsettled = not once and at != ENTRIES
    for since in (None, log.checkpoint()):
        report, signings = await verify_while_signing(log, d, at, once, since)
        assert signings >= 1  # the interleaving happened
        assert report.problem is None, report.summary()
        assert any("a writer signing" in w for w in report.warnings) == unsettled
    await log.close()
    report = verify_log(d)  # and the log at rest, with all the entries the signings added
    assert report.ok, report.summary()
    assert report.size == log.size > 5
