"""Epochs: a writer starts a new log per day, ISO week or month, chained to the one before.

With `[audit] epoch`, a writer's directory D holds one log per period in `D/{name}/` (names in
periods.py) with origin `{origin}/{name}`. A new epoch starts at open and at the first append
at or after the current one's end: the previous log is closed first (its final checkpoint
signed), then the new log's first entry, `epoch.started`, names that checkpoint (origin, size,
root, the note and its SHA-256), so the chain of epochs verifies link by link (chain.py) and
every proof of an old epoch stays checkable against its own final checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit.checkpoint import Checkpoint
from gateway.audit.keys import read_secret_key, read_signing_key
from gateway.audit.log import AuditLog, Clock, Durability
from gateway.audit.periods import Epoch
from gateway.audit.seal import SealedStream
from gateway.audit.store import ENTRIES, writer_chain

STARTED = "epoch.started"


def previous_fields(note: bytes) -> dict[str, Any]:
    """What an `epoch.started` entry records of the previous log's final checkpoint."""
    cp = Checkpoint.parse_body(note[: note.rfind(b"\n\n") + 1])
    return {
        "origin": cp.origin,
        "size": cp.size,
        "root": base64.b64encode(cp.root).decode(),
        "note": note.decode(),
        "note_sha256": hashlib.sha256(note).hexdigest(),
    }


class EpochLog:
    """An AuditLog that moves to a new epoch's log as time passes; otherwise the same calls
    (anything not defined here is the current epoch's AuditLog's)."""

    def __init__(
        self,
        base: Path,
        origin: str,
        kind: str,
        keys: tuple[Path, Path],
        durability: Durability,
        clock: Clock,
    ) -> None:
        self.base = base
        self.origin = origin
        self.kind = kind
        self._keys = keys
        self._durability = durability
        self._clock = clock
        self._log: AuditLog | None = None
        self.epoch: Epoch | None = None
        self._end = 0.0
        self._rolling = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        base: Path,
        *,
        origin: str,
        kind: str,
        signing_key: Path,
        sealing_key: Path,
        durability: Durability = "sync",
        clock: Clock = time.time,
    ) -> EpochLog:
        """Open the current epoch's log under `base`, starting it if needed.

        A previous log that was not closed (the gateway stopped during its epoch) is opened,
        recovered and closed first, so the new epoch chains to its final checkpoint.

        Raises:
            AuditOpenError, KeyFileError, ValueError: as AuditLog.open; ValueError for a bad kind.
        """
        Epoch.at(kind, datetime.now(UTC))  # a bad kind fails before anything is written
        read_signing_key(Path(signing_key))
        read_secret_key(Path(sealing_key))
        self = cls(
            Path(base), origin, kind, (Path(signing_key), Path(sealing_key)), durability, clock
        )
        await self._start(previous=None)
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def origin_of(self, log_dir: Path) -> str:
        """The origin of one of this writer's logs: the base origin, or `{origin}/{epoch}`."""
        return self.origin if log_dir == self.base else f"{self.origin}/{log_dir.name}"

    async def _open_log(self, directory: Path) -> AuditLog:
        signing, sealing = self._keys
        return await AuditLog.open(
            directory,
            origin=self.origin_of(directory),
            signing_key=signing,
            sealing_key=sealing,
            durability=self._durability,
            clock=self._clock,
        )

    async def _start(self, previous: bytes | None) -> None:
        """Open the epoch of now; a new (empty) one starts with `epoch.started`.

        `previous` is the final note of the log just closed; None: find the writer's last log.
        """
        epoch = Epoch.at(self.kind, datetime.fromtimestamp(self._clock(), UTC))
        directory = self.base / epoch.name
        fresh = not _has_entries(directory)
        if fresh and previous is None:
            previous = await self._close_last(exclude=directory)
        log = await self._open_log(directory)
        if log.committed == 0:
            entry: dict[str, Any] = {
                "type": STARTED,
                "epoch": epoch.name,
                "epoch_start": _rfc3339(epoch.start),
                "epoch_end": _rfc3339(epoch.end),
            }
            if previous is not None:
                entry["previous"] = previous_fields(previous)
            try:
                await log.append(entry)
            except BaseException:
                await log.close()
                raise
        self._log, self.epoch, self._end = log, epoch, epoch.end.timestamp()

    async def _close_last(self, exclude: Path) -> bytes | None:
        """Recover and close the writer's newest earlier log; its final checkpoint note."""
        earlier = [d for d in writer_chain(self.base) if d != exclude]
        if not earlier:
            return None
        log = await self._open_log(earlier[-1])
        await log.close()
        return log.checkpoint()

    async def append(
        self, entry: dict[str, Any], sealed: dict[str, bytes | SealedStream] | None = None
    ) -> int:
        """As AuditLog.append, in the epoch of now (rolling over first if it has ended)."""
        if self._clock() >= self._end:
            await self._roll()
        assert self._log is not None
        return await self._log.append(entry, sealed)

    async def _roll(self) -> None:
        async with self._rolling:
            if self._clock() < self._end:
                return  # another append rolled over while this one waited
            assert self._log is not None
            await self._log.close()  # its last batch's checkpoint is the final one
            await self._start(previous=self._log.checkpoint())

    async def close(self) -> None:
        async with self._rolling:
            if self._log is not None:
                await self._log.close()


def _has_entries(directory: Path) -> bool:
    try:
        return (directory / ENTRIES).stat().st_size > 0
    except FileNotFoundError:
        return False


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
