"""Ship this gateway's audit log to the central store (`[audit.central]`), once durable locally.

The local log stays the durable first write; shipping runs beside it and never delays a
request. Local files are read as bytes: entries exactly as framed in `entries`, the signed
notes in `checkpoints`, and the bytes of `sealed/` files up to the end of the last blob a shipped
entry refers to (never a tail a failed batch may still roll back). Each shipment is one
transaction: the entries up to a checkpoint, their sealed bytes, then that checkpoint, so the
store either takes all of it or none. At start, and after every error, the shipper resumes from
what the store holds for each origin; before sending anything it checks that the store's latest
checkpoint is one this log issued (same size, same root), and the store's own triggers check the
root again. A refusal (by that check, by the store, or a witness's refusal recorded there) is
logged, counted in `gateway_audit_ship_refused_total`, shown as a health warning, and never
merged: shipping stops until the cause is fixed (it is retried every REFUSED_RETRY_S).

With `[audit] epoch` a writer keeps one log per epoch, origin `{origin}/{epoch}`: the shipper
follows the writer's chain of logs in order (store.writer_chain), so each epoch's log is shipped
up to its final checkpoint before its successor, whose first entry (`epoch.started`) the store
checks against that checkpoint. An earlier epoch, closed and wholly shipped, is not read again.
Sealing keys are never shipped with the log: epoch keys stay in the keys directory
(epoch_keys.py), copied only into the deletable key table with `keys_store` (central_keys.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson

from gateway.audit.central_keys import CONNECT_TIMEOUT_S, STORE_ERRORS, KeyCopies, one_line
from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.store import (
    CHECKPOINTS,
    VERIFIER,
    LogReader,
    iter_records,
    read_file,
    scan_frames,
    writer_chain,
)
from gateway.config import without_password

log = logging.getLogger("gateway.audit")

INTERVAL_S = 1.0
REFUSED_RETRY_S = 30.0
RETRY_MAX_S = 10.0
BATCH_ENTRIES = 2000  # entries per transaction while catching up
# A file an entry refers to: a relative path inside the audit directory, no "..", no dot files.
PLAIN_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
# What the store's constraints and triggers raise for a shipment they will not take.
STORE_REFUSES = (asyncpg.IntegrityConstraintViolationError, asyncpg.InsufficientPrivilegeError)


class Refused(Exception):
    """The store (or this shipper's own check) will not take this log's next shipment."""


@dataclass(frozen=True, slots=True)
class LocalCheckpoint:
    size: int
    root: bytes
    note: bytes


@dataclass
class Remote:
    """What the central store holds for this origin."""

    size: int = 0  # entries
    checkpoint: int = 0  # size of the latest checkpoint
    root: bytes = b""
    sealed: dict[str, int] = field(default_factory=dict)  # file -> bytes held


def local_checkpoints(directory: Path) -> list[LocalCheckpoint]:
    """Every checkpoint the local log issued, oldest first (parsed, not re-verified)."""
    data = read_file(directory / CHECKPOINTS)
    out = []
    for record in iter_records(data, scan_frames(data)):
        note = bytes(record)
        try:
            cp = Checkpoint.parse_body(note[: note.rfind(b"\n\n") + 1])
        except (CheckpointError, UnicodeDecodeError):
            continue  # verify reports it; shipping never invents a checkpoint
        if cp.size > 0:
            out.append(LocalCheckpoint(cp.size, cp.root, note))
    return out


def sealed_ends(entry: bytes) -> dict[str, int]:
    """For each sealed file an entry refers to, the end of its last blob there."""
    try:
        refs = orjson.loads(entry).get("sealed") or {}
        ends: dict[str, int] = {}
        for ref in refs.values():
            end = int(ref["offset"]) + int(ref["length"])
            ends[ref["file"]] = max(ends.get(ref["file"], 0), end)
        return ends
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return {}


class Shipper:
    def __init__(
        self,
        writer: Path,
        url: str,
        *,
        on_refused: Callable[[], None] = lambda: None,
        on_lag: Callable[[int], None] = lambda _n: None,
        interval_s: float = INTERVAL_S,
        keys: KeyCopies | None = None,
    ) -> None:
        self.writer = writer  # the writer's directory: its own log, or its epochs' logs below
        self.keys = keys  # `keys_store`: epoch keys copied to (and deleted from) the store
        self.url = url
        self.where = without_password(url)
        self.on_refused = on_refused
        self.on_lag = on_lag
        self.interval_s = interval_s
        self.directory = writer  # the log being shipped, and its origin
        self.origin = ""
        self.origins: dict[Path, str] = {}  # each log of the writer's chain seen so far
        self.remotes: dict[str, Remote] = {}  # by origin: what the store holds (None: re-read)
        self.shipped: set[Path] = set()  # earlier epochs' logs wholly shipped: not read again
        self.refusals_seen: int | None = None  # highest audit_refusals.id already raised
        self.db: asyncpg.Connection | None = None
        self.refusal: str | None = None  # the store will not take the next shipment
        self.witnessed_refusal: str | None = None  # a witness refused a shipped checkpoint
        self.problem: str | None = None
        self.task: asyncio.Task[None] | None = None

    def warnings(self) -> list[dict[str, str]]:
        """For /_gateway/health: shipping problems are warnings, never a 503."""
        problems = []
        if self.refusal:
            problems.append(f"the central store refused this log's shipment: {self.refusal}")
        if self.witnessed_refusal:
            problems.append(f"a witness refused a checkpoint of this log: {self.witnessed_refusal}")
        if self.problem:
            problems.append(f"central store {self.where}: {self.problem}")
        if self.keys is not None and self.keys.problem:
            problems.append(f"epoch keys store {self.keys.where}: {self.keys.problem}")
        return [{"check": "audit_shipping", "problem": p} for p in problems]

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """One last shipment (bounded), then stop. It starts from what the store holds: the
        pass just cancelled may have left the connection mid-statement, or a commit unrecorded."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            await self._disconnect()
        if self.refusal is None:
            await self._last_shipment()
        if self.keys is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await self.keys.sync()
            await self.keys.close()
        if self.db is not None:
            with contextlib.suppress(Exception):
                await self.db.close(timeout=1)

    async def _last_shipment(self) -> None:
        """Ship what is left, within CONNECT_TIMEOUT_S; say so if that fails (what was not
        shipped stays in the local log and ships at the next start)."""
        later = "the rest ships at the next start"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self.ship_once()
        except TimeoutError:
            log.warning(
                "audit: the last shipment to %s did not finish within %g s at stop; %s",
                self.where, CONNECT_TIMEOUT_S, later,
            )  # fmt: skip
        except Refused as exc:
            self._refused(str(exc))
        except STORE_ERRORS as exc:
            log.warning(
                "audit: the last shipment to %s failed at stop: %s; %s",
                self.where, one_line(exc), later,
            )  # fmt: skip
        except Exception:  # a bug: the same as in _run
            log.exception("audit: the last shipment to %s failed at stop", self.where)

    async def _run(self) -> None:
        delay = self.interval_s
        while True:
            if self.keys is not None:  # also while shipping is refused: shreds must reach it
                await self.keys.sync()
            try:
                await self.ship_once()
                self.problem = None
                delay = self.interval_s
            except Refused as exc:
                self._refused(str(exc))
                delay = REFUSED_RETRY_S
            except STORE_ERRORS as exc:
                text = one_line(exc)
                if self.problem != text:
                    log.warning("audit shipping to %s failed, will retry: %s", self.where, text)
                self.problem = text
                await self._disconnect()
                delay = min(max(delay * 2, 0.5), RETRY_MAX_S)
            except Exception:  # a bug must not end shipping silently
                log.exception("audit shipping to %s failed", self.where)
                self.problem = "shipping failed (see the log)"
                await self._disconnect()
                delay = RETRY_MAX_S
            await asyncio.sleep(delay)

    def _refused(self, reason: str) -> None:
        log.error("audit shipment to %s refused for %s: %s", self.where, self.origin, reason)
        self.refusal = reason
        self.on_refused()
        self.remotes.clear()  # re-read what the store holds before any further attempt

    async def _disconnect(self) -> None:
        """Forget what the store held: after a reconnect it is read again, every log of the
        chain included (a store restored from an older backup gets closed epochs again)."""
        db, self.db = self.db, None
        self.remotes.clear()
        self.shipped.clear()
        if db is not None:
            with contextlib.suppress(Exception):
                await db.close(timeout=1)

    async def _connect(self) -> asyncpg.Connection:
        if self.db is None or self.db.is_closed():
            self.db = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
            # Refusals from before this process are not news; ids lower than those seen mean
            # the store was restored from a backup, so count from there again.
            latest = await self.db.fetchval("SELECT coalesce(max(id), 0) FROM audit_refusals")
            if self.refusals_seen is None or latest < self.refusals_seen:
                self.refusals_seen = latest
        return self.db

    async def ship_once(self) -> int:
        """Ship what is durable locally and not yet central, the writer's logs in order (an
        epoch before its successor); returns entries shipped."""
        chain = await asyncio.to_thread(writer_chain, self.writer)
        shipped = 0
        for directory in chain:
            if directory in self.shipped:
                continue
            checkpoints = await asyncio.to_thread(local_checkpoints, directory)
            if not checkpoints:
                break  # nothing durable here yet, so nothing after it either
            origin = checkpoints[-1].note.split(b"\n", 1)[0].decode()
            self.directory, self.origin = directory, self.origins.setdefault(directory, origin)
            db = await self._connect()
            await self._check_refusals(db)
            shipped += await self._ship_log(db, checkpoints)
            if directory != chain[-1]:  # closed: its final checkpoint is all it will hold
                self.shipped.add(directory)
        self.refusal = None
        return shipped

    async def _ship_log(self, db: asyncpg.Connection, checkpoints: list[LocalCheckpoint]) -> int:
        """Ship one log (self.origin) up to its latest checkpoint."""
        remote = self.remotes.get(self.origin)
        if remote is None:
            remote = self.remotes[self.origin] = await self._read_remote(db)
        self._check_continues(remote, checkpoints)
        pending = [cp for cp in checkpoints if cp.size > remote.checkpoint]
        shipped = 0
        while pending:
            batch = [pending.pop(0)]
            while pending and pending[0].size - remote.size <= BATCH_ENTRIES:
                batch.append(pending.pop(0))
            shipped += await self._ship(db, remote, batch)
            self.on_lag(checkpoints[-1].size - remote.size)
        self.on_lag(checkpoints[-1].size - remote.size)
        return shipped

    def _check_continues(self, remote: Remote, checkpoints: list[LocalCheckpoint]) -> None:
        """The store's latest checkpoint must be one this log issued, or nothing is sent."""
        if remote.checkpoint == 0:
            return
        mine = next((cp for cp in checkpoints if cp.size == remote.checkpoint), None)
        if mine is None or mine.root != remote.root:
            held = checkpoints[-1].size
            raise Refused(
                f"the store holds a checkpoint of size {remote.checkpoint} for {self.origin} "
                f"that this log (now {held} entries) never issued: it was rewritten, truncated "
                "or replaced"
            )

    async def _read_remote(self, db: asyncpg.Connection) -> Remote:
        remote = Remote()
        remote.size = await db.fetchval(
            "SELECT coalesce(max(seq) + 1, 0) FROM audit_entries WHERE origin = $1", self.origin
        )
        row = await db.fetchrow(
            "SELECT size, root FROM audit_checkpoints WHERE origin = $1 ORDER BY size DESC LIMIT 1",
            self.origin,
        )
        if row is not None:
            remote.checkpoint, remote.root = row["size"], bytes(row["root"])
        for file, held in await db.fetch(
            'SELECT file, max("offset" + length(data)) FROM audit_sealed WHERE origin = $1 '
            "GROUP BY file",
            self.origin,
        ):
            remote.sealed[file] = held
        if remote.size != remote.checkpoint:
            raise Refused(
                f"the store holds {remote.size} entries but a checkpoint of "
                f"{remote.checkpoint} for {self.origin}"
            )
        return remote

    async def _check_refusals(self, db: asyncpg.Connection) -> None:
        """A witness that refused a checkpoint of one of this writer's origins records it in
        the store."""
        row = await db.fetchrow(
            "SELECT id, origin, size, refused_by, reason FROM audit_refusals "
            "WHERE origin = ANY($1) AND id > $2 ORDER BY id DESC LIMIT 1",
            list(self.origins.values()),
            self.refusals_seen,
        )
        if row is not None:
            self.refusals_seen = row["id"]
            reason = f"{row['refused_by']} refused size {row['size']}: {row['reason']}"
            log.error("audit: a witness refused a checkpoint of %s: %s", row["origin"], reason)
            self.witnessed_refusal = reason
            self.on_refused()

    async def _ship(
        self, db: asyncpg.Connection, remote: Remote, batch: list[LocalCheckpoint]
    ) -> int:
        """One transaction: the sealed bytes, then for each checkpoint of `batch` the entries up
        to it and the checkpoint. The store's triggers refuse a gap or a root not its own."""
        reader = LogReader(self.directory)
        entries = await asyncio.to_thread(
            lambda: [reader.read_raw(seq) for seq in range(remote.size, batch[-1].size)]
        )
        chunks = await asyncio.to_thread(self._sealed_chunks, remote, entries)
        verifier = read_file(self.directory / VERIFIER).decode(errors="replace").strip()
        try:
            async with db.transaction():
                await db.execute(
                    "INSERT INTO audit_origins (origin, verifier) VALUES ($1, $2) "
                    "ON CONFLICT (origin) DO NOTHING",
                    self.origin,
                    verifier,
                )
                if chunks:
                    await db.executemany(
                        'INSERT INTO audit_sealed (origin, file, "offset", data) '
                        "VALUES ($1, $2, $3, $4)",
                        [(self.origin, f, off, data) for f, off, data in chunks],
                    )
                seq = remote.size
                for cp in batch:  # the store takes a checkpoint only at its exact size
                    end = cp.size
                    records = [(self.origin, n, entries[n - remote.size]) for n in range(seq, end)]
                    await db.copy_records_to_table(
                        "audit_entries", records=records, columns=["origin", "seq", "entry"]
                    )
                    await db.execute(
                        "INSERT INTO audit_checkpoints (origin, size, root, note) "
                        "VALUES ($1, $2, $3, $4)",
                        self.origin,
                        cp.size,
                        cp.root,
                        cp.note,
                    )
                    seq = end
        except STORE_REFUSES as exc:
            raise Refused(one_line(exc)) from None
        remote.size = remote.checkpoint = batch[-1].size
        remote.root = batch[-1].root
        for file, _, data in chunks:
            remote.sealed[file] = remote.sealed.get(file, 0) + len(data)
        return len(entries)

    def _sealed_chunks(self, remote: Remote, entries: list[bytes]) -> list[tuple[str, int, bytes]]:
        """The bytes of each sealed file from what the store holds to the end of the last
        blob these entries refer to."""
        wanted: dict[str, int] = {}
        for entry in entries:
            for file, end in sealed_ends(entry).items():
                wanted[file] = max(wanted.get(file, 0), end)
        chunks = []
        for file, end in sorted(wanted.items()):
            start = remote.sealed.get(file, 0)
            if end <= start or not PLAIN_PATH.match(file):
                continue
            with open(self.directory / file, "rb") as f:
                f.seek(start)
                data = f.read(end - start)
            chunks.append((file, start, data))
        return chunks
