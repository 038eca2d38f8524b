"""AuditLog: the asyncio face of the writer, with group commit and fail-closed errors.

Appends assign seq and ts on the event loop (so seq order is call order) and queue the entry.
One committer task hands everything queued to the writer thread as one batch: one write and
one fdatasync of `entries` (the sealed segment's in parallel) releases every caller waiting
on the batch; the tree, index and signed checkpoint are written after that, off their path,
once no batch is waiting (one signature for any number of batches).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from gateway.audit.canonical import canonical
from gateway.audit.keys import read_secret_key, read_signing_key
from gateway.audit.merkle import leaf_hash
from gateway.audit.recovery import recover
from gateway.audit.seal import SealedStream
from gateway.audit.store import ENTRIES, LEN, consistency_proof, inclusion_proof
from gateway.audit.writer import Pending, Writer
from gateway.audit.writer_thread import WriterThread
from gateway.timestamps import ZULU

log = logging.getLogger(__name__)

Durability = Literal["sync", "batch"]
Clock = Callable[[], float]
RETRY_S = 0.25  # batch mode: how soon a failed batch is tried again
RESERVED = ("seq", "sealed")
MAX_QUEUED = 50_000  # batch mode: past this many unwritten entries, append waits (backpressure)
SIGN_IDLE_S = 0.005  # sign once no batch came for this long (see _commit_loop)
SIGN_EVERY_S = 0.5  # under constant load (batches always queued) a checkpoint still follows


class AuditUnavailable(Exception):
    """The log cannot be written now; callers must refuse the request (fail closed)."""


@dataclass
class _Item:
    pending: Pending
    future: asyncio.Future[int] | None


class AuditLog:
    """An open, writable audit log. Create with `await AuditLog.open(...)`."""

    def __init__(
        self,
        writer: Writer,
        lock_fd: int,
        durability: Durability,
        thread: WriterThread,
        clock: Clock = time.time,
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._lock_fd = lock_fd
        self._durability = durability
        self._thread = thread
        self._queue: list[_Item] = []
        self._committing: list[_Item] = []  # the batch on the writer thread now
        self._next_seq = writer.committed
        self._available = True
        self._closing = False
        self._wake = asyncio.Event()
        self._settled: list[tuple[int, asyncio.Future[None]]] = []  # `signed` callers
        self._task = asyncio.get_running_loop().create_task(self._commit_loop())
        self._task.add_done_callback(self._committer_ended)

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        origin: str,
        signing_key: Path,
        sealing_key: Path | bytes,
        durability: Durability = "sync",
        clock: Clock = time.time,
    ) -> AuditLog:
        """Open (creating on first use) and recover the log in `directory`.

        `sealing_key` is the key file, or the key itself (an epoch's own key, see epochs.py);
        `clock` gives the POSIX time entries are stamped with (tests write past epochs).

        Raises:
            AuditOpenError: another writer holds it, the key or origin differ, or a fork.
            KeyFileError: a key file is missing or malformed.
        """
        if durability not in ("sync", "batch"):
            raise ValueError(f"durability must be 'sync' or 'batch', not {durability!r}")
        signer = read_signing_key(Path(signing_key))
        secret = (
            sealing_key if isinstance(sealing_key, bytes) else read_secret_key(Path(sealing_key))
        )
        thread = WriterThread("audit-writer")
        try:
            writer, recovered, lock = await thread.run(
                recover, Path(directory), origin, signer, secret
            )
        except BaseException:
            thread.shutdown()
            raise
        self = cls(writer, lock, durability, thread, clock)
        if recovered.repaired:
            log.warning("audit: repaired the log in %s after a crash: %s", directory, recovered)
            await self._append_now(
                {
                    "type": "gateway.recovered",
                    "truncated_entry_bytes": recovered.entries_bytes,
                    "truncated_at_offset": recovered.entries_offset,
                    "truncated_checkpoint_bytes": recovered.checkpoints_bytes,
                    "restored_entry_bytes": recovered.restored_entry_bytes,
                    "restored_sealed_bytes": recovered.restored_sealed_bytes,
                    "entries_kept": recovered.size,
                    "checkpoint_size": recovered.checkpoint_size,
                }
            )
        return self

    @property
    def available(self) -> bool:
        """False after a failed write, until a write succeeds again."""
        return self._available

    @property
    def size(self) -> int:
        """Entries covered by the latest signed checkpoint (see `signed`)."""
        return self._writer.size

    def sealed_stream(self) -> SealedStream:
        """A body to seal as it streams; append it (finished) as a sealed body of an entry."""
        return SealedStream.start(self._writer.aead, self._writer.directory)

    @property
    def committed(self) -> int:
        """Entries committed (durable, readable), perhaps not covered by a checkpoint yet."""
        return self._writer.committed

    async def signed(self) -> None:
        """Wait until what was appended before this call is covered by a signed checkpoint
        (the writer signs once no batch is waiting), or its commit or signing failed.

        Call before reading `size`, `checkpoint` or proofs when an entry just appended must be
        covered by them.
        """
        if self._task.done():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._settled.append((self._next_seq, waiter))
        self._wake.set()
        await waiter

    @property
    def directory(self) -> Path:
        return self._writer.directory

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint note (the bytes of {dir}/checkpoint)."""
        return self._writer.note

    async def append(
        self, entry: dict[str, Any], sealed: dict[str, bytes | SealedStream] | None = None
    ) -> int:
        """Record one entry; returns its seq.

        With durability "sync" this returns once the entry is durable (its signed checkpoint
        follows at once; `signed` waits for it); with "batch" at once (durable within about a
        second).

        Raises:
            AuditUnavailable: the log cannot be written; nothing of this entry is kept.
            ValueError: the entry is not a JSON object, or sets seq or sealed itself.
        """
        self._check_open()
        if self._durability == "batch" and not self._available:
            raise AuditUnavailable("audit log cannot be written")
        wait = self._durability == "sync" or len(self._queue) >= MAX_QUEUED
        fut = asyncio.get_running_loop().create_future() if wait else None
        seq = self._enqueue(entry, sealed, fut)
        return seq if fut is None else await fut

    def _check_open(self) -> None:
        if self._closing:
            raise AuditUnavailable("audit log is closed")
        if self._task.done():  # see _committer_ended
            raise AuditUnavailable("audit log cannot be written: its committer stopped")

    async def _append_now(self, entry: dict[str, Any]) -> int:
        self._check_open()
        fut = asyncio.get_running_loop().create_future()
        self._enqueue(entry, None, fut)
        return await fut

    def _enqueue(
        self,
        entry: dict[str, Any],
        sealed: dict[str, bytes] | None,
        fut: asyncio.Future[int] | None,
    ) -> int:
        for key in RESERVED:
            if key in entry:
                raise ValueError(f"audit entries may not set {key!r}; the log assigns it")
        if sealed is not None and not all(
            isinstance(v, bytes | bytearray | SealedStream) for v in sealed.values()
        ):
            raise ValueError("sealed bodies must be bytes or a finished SealedStream")
        seq = self._next_seq
        record = {"ts": ZULU.at(self._clock()), **entry, "seq": seq}
        body = canonical(record)
        self._next_seq += 1
        blobs = (
            {k: v if isinstance(v, SealedStream) else bytes(v) for k, v in sealed.items()}
            if sealed
            else None
        )
        self._queue.append(_Item(Pending(seq, body, blobs), fut))
        self._wake.set()
        return seq

    async def _commit_loop(self) -> None:
        """Commit whatever is queued, batch after batch; sign when nothing is waiting.

        Signing (tree, index, checkpoint) runs on the writer thread too, so it is done once
        no batch has come for SIGN_IDLE_S (a request's next entry, its `inference` after its
        `decision`, usually follows within that), at once for a `signed` caller or on close,
        and at least every SIGN_EVERY_S under constant load: a request does not wait behind a
        signature, and one checkpoint covers every batch since the last.
        """
        writer = self._writer
        signed_at = time.monotonic()
        attempted = False  # a signature was tried since the last commit (failed: wait for more)
        while True:
            urgent = bool(self._settled) or self._closing
            overdue = urgent or time.monotonic() - signed_at >= SIGN_EVERY_S
            if self._queue and not (overdue and writer.unsigned and not attempted):
                if await self._commit_next():
                    attempted = False
                continue
            if writer.unsigned and not attempted:
                if not urgent and await self._woken_within(SIGN_IDLE_S):
                    continue  # more came meanwhile: commit it first
                attempted = True
                await self._thread.run(writer.sign)
                signed_at = time.monotonic()
                self._settle(writer.size)
                continue
            self._settle(None)
            if self._closing and not self._queue:
                return
            await self._wake.wait()
            self._wake.clear()

    async def _woken_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for an append (or a `signed` caller, or close).

        A timer that sets the event, not `asyncio.wait_for` (a task and a timer per wait, on
        the path of the append that ends it)."""
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            self._wake.set()

        timer = asyncio.get_running_loop().call_later(seconds, expire)
        await self._wake.wait()
        timer.cancel()
        self._wake.clear()
        return not timed_out

    async def _commit_next(self) -> bool:
        """Commit everything queued as one batch; False if it failed (see `_failed`)."""
        batch, self._queue = self._queue, []
        self._committing = batch
        pending = [i.pending for i in batch]
        try:
            # Its callers go on a loop iteration sooner than if this task released them.
            await self._thread.run(self._writer.commit, pending, then=lambda: self._release(batch))
        except Exception as exc:
            self._committing = []
            self._failed(batch, exc)
            if self._durability == "batch" and not self._closing:
                await asyncio.sleep(RETRY_S)
            return False
        self._committing = []
        return True

    def _settle(self, size: int | None) -> None:
        """Wake the `signed` callers a checkpoint of `size` covers; all of them when None (the
        writer is idle: nothing queued, and nothing to sign or its signing failed)."""
        waiting = []
        for target, waiter in self._settled:
            if size is None or size >= target:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._settled = waiting

    def _release(self, batch: list[_Item]) -> None:
        """The batch is durable: its callers go on while the writer signs."""
        self._available = True
        for item in batch:
            if item.future is not None and not item.future.done():
                item.future.set_result(item.pending.seq)

    def _failed(self, batch: list[_Item], exc: Exception) -> None:
        """Sync: fail the batch and everything queued behind it. Batch: keep all for a retry."""
        if self._available:
            log.error("audit log unavailable: %s", _describe(exc))
        self._available = False
        if self._durability == "batch" and not self._closing:
            self._queue = batch + self._queue
            return
        self._abandon(batch, exc)

    def _abandon(self, batch: list[_Item], exc: BaseException) -> None:
        """Fail the batch and everything queued behind it: none of it will be written."""
        err = AuditUnavailable(f"audit log cannot be written: {_describe(exc)}")
        for item in batch + self._queue:
            for body in (item.pending.sealed or {}).values():
                if isinstance(body, SealedStream):
                    body.discard()  # its entry will never name it: no open file, no orphan
            if item.future is not None and not item.future.done():
                item.future.set_exception(err)
        self._queue = []
        self._next_seq = self._writer.committed  # queued seqs were never written

    def _committer_ended(self, task: asyncio.Task[None]) -> None:
        """The committer stops only on close, unless a defect killed it: then nothing queued
        would ever be written, so its callers fail now and later appends are refused (fail
        closed) rather than wait forever."""
        exc: BaseException | None
        if task.cancelled():  # the event loop torn down without a close: nobody to tell
            exc = asyncio.CancelledError()
        else:
            exc = task.exception()
            if exc is None:
                return
            # The class only: a defect's message could quote what it was handling.
            log.error("audit log unavailable: its committer stopped (%s)", _describe(exc))
        self._available = False
        self._abandon(self._committing, exc)
        self._committing = []
        self._settle(None)

    def inclusion_proof(self, index: int, size: int | None = None) -> dict[str, Any]:
        """RFC 9162 inclusion proof of entry `index` in the tree of `size` (default: current).

        Raises:
            ValueError: size beyond the log, or index not below size (ProofError).
        """
        size = self.size if size is None else size
        if size > self.size:
            raise ValueError(f"size {size} is beyond the log's {self.size} entries")
        return inclusion_proof(self._writer.tree.getter(size), index, size)

    def consistency_proof(self, old: int, new: int) -> dict[str, Any]:
        """RFC 9162 consistency proof that the tree of size `new` extends that of size `old`."""
        if new > self.size:
            raise ValueError(f"size {new} is beyond the log's {self.size} entries")
        return consistency_proof(self._writer.tree.getter(new), old, new)

    def read_raw(self, seq: int) -> bytes:
        """The canonical bytes of a committed entry."""
        if not 0 <= seq < self.committed:
            raise IndexError(f"no entry {seq}; the log has {self.committed} entries")
        fd = os.open(self._writer.directory / ENTRIES, os.O_RDONLY)
        try:
            off = self._writer.offsets[seq]
            (n,) = LEN.unpack(os.pread(fd, 4, off))
            return os.pread(fd, n, off + 4)
        finally:
            os.close(fd)

    def read_entry(self, seq: int) -> dict[str, Any]:
        return orjson.loads(self.read_raw(seq))

    def leaf_hash(self, seq: int) -> bytes:
        return leaf_hash(self.read_raw(seq))

    async def close(self) -> None:
        """Flush what is queued (its checkpoint is the final one) and release the log."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        await asyncio.wait([self._task])  # a committer that died was reported when it did
        await self._thread.run(self._writer.close)
        self._thread.shutdown()
        os.close(self._lock_fd)


def _describe(exc: BaseException) -> str:
    """An error for logs and 503 bodies: errno text and file, never entry contents."""
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc.__class__.__name__}" + (
            f" ({exc.filename})" if exc.filename else ""
        )
    return exc.__class__.__name__
