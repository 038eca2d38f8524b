"""Epochs: a writer starts a new log per day, ISO week or month, chained to the one before.

With `[audit] epoch`, a writer's directory D holds one log per period in `D/{name}/` (names in
periods.py) with origin `{origin}/{name}`. A new epoch starts at open and at the first append
at or after the current one's end: the previous log is closed first (its final checkpoint
signed), then the new log's first entry, `epoch.started`, names that checkpoint (origin, size,
root, the note and its SHA-256), so the chain of epochs verifies link by link (chain.py) and
every proof of an old epoch stays checkable against its own final checkpoint.

Each epoch seals its originals under a key of its own (epoch_keys.py). With `retention_days`,
keys of epochs that ended longer ago than that are shredded at open and once a day while
running; every shred (also `gateway audit shred`) is recorded as an `epoch.shredded` entry in
the current epoch.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit import epoch_keys
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.keys import read_secret_key, read_signing_key
from gateway.audit.log import AuditLog, Clock, Durability
from gateway.audit.periods import Epoch
from gateway.audit.seal import SealedStream
from gateway.audit.store import ENTRIES, LogReader, writer_chain

STARTED = "epoch.started"
SHREDDED = "epoch.shredded"
DAY_S = 86400.0


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
        retention_days: int | None = None,
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
        self.retention_days = retention_days
        self._next_check = 0.0  # when retention is applied and shreds recorded again

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
        retention_days: int | None = None,
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
        keys = (Path(signing_key), Path(sealing_key))
        self = cls(Path(base), origin, kind, keys, durability, clock, retention_days)
        await self._start(previous=None)
        await self.maintain()
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def origin_of(self, log_dir: Path) -> str:
        """The origin of one of this writer's logs: the base origin, or `{origin}/{epoch}`."""
        return self.origin if log_dir == self.base else f"{self.origin}/{log_dir.name}"

    async def _open_log(self, directory: Path, sealing: Path | bytes) -> AuditLog:
        return await AuditLog.open(
            directory,
            origin=self.origin_of(directory),
            signing_key=self._keys[0],
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
        log = await self._open_log(directory, self._sealing_for(directory, fresh))
        if log.committed == 0:
            entry: dict[str, Any] = {
                "type": STARTED,
                "epoch": epoch.name,
                "epoch_start": _rfc3339(epoch.start),
                "epoch_end": _rfc3339(epoch.end),
                "epoch_key": epoch_keys.key_file(self._keys[1], self.origin_of(directory)).name,
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
        log = await self._open_log(earlier[-1], self._keys[1])  # seals nothing: recovery only
        await log.close()
        return log.checkpoint()

    def _sealing_for(self, directory: Path, fresh: bool) -> bytes | Path:
        """The key this epoch seals with: its own (made now for a new epoch); the sealing key
        itself for a log begun before epoch keys existed (its first entry names none)."""
        origin = self.origin_of(directory)
        if fresh:
            return epoch_keys.epoch_key(self._keys[1], origin, create=True)
        if "epoch_key" in LogReader(directory).read_entry(0):
            return epoch_keys.epoch_key(self._keys[1], origin)
        return self._keys[1]

    async def maintain(self) -> None:
        """Shred the keys of epochs past retention; record every shred not on the log yet."""
        async with self._rolling:
            await self._maintain()

    async def _maintain(self) -> None:
        assert self._log is not None
        now, sealing = self._clock(), self._keys[1]
        self._next_check = now + DAY_S
        if self.retention_days is not None:
            cutoff = now - self.retention_days * DAY_S
            by = f"[audit] retention_days = {self.retention_days}"
            for directory in writer_chain(self.base):
                epoch = Epoch.parse(directory.name) if directory != self.base else None
                if epoch and epoch.end.timestamp() <= cutoff and directory != self._log.directory:
                    epoch_keys.shred(sealing, self.origin_of(directory), by)
        for path, record in epoch_keys.unrecorded(sealing, self.origin):
            seq = await self._log.append(
                {
                    "type": SHREDDED,
                    "epoch": record["origin"].rsplit("/", 1)[1],
                    "epoch_origin": record["origin"],
                    "shredded_at": record["shredded_at"],
                    "by": record["by"],
                }
            )
            epoch_keys.mark_recorded(path, record, self.origin_of(self._log.directory), seq)

    async def append(
        self, entry: dict[str, Any], sealed: dict[str, bytes | SealedStream] | None = None
    ) -> int:
        """As AuditLog.append, in the epoch of now (rolling over first if it has ended)."""
        now = self._clock()
        if now >= self._end or now >= self._next_check:
            await self._roll()
        assert self._log is not None
        return await self._log.append(entry, sealed)

    async def _roll(self) -> None:
        async with self._rolling:
            assert self._log is not None
            now = self._clock()
            rolled = now >= self._end
            if rolled:
                await self._log.close()  # its last batch's checkpoint is the final one
                await self._start(previous=self._log.checkpoint())
            if rolled or now >= self._next_check:  # unless a waiting append did it
                await self._maintain()

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
