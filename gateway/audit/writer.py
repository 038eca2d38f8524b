"""The single writer: commits batches of entries (pwrite, one fdatasync of the write-ahead log),
then extends the tree and signs a checkpoint covering every batch committed since the last one.

Synchronous and single-threaded by design (the async facade in log.py runs it on one worker
thread). A batch either commits completely or every file is truncated back to where it was,
so a failed write (disk full, EIO, EACCES) never leaves half an entry behind.
"""

from __future__ import annotations

import errno
import logging
import os
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.audit import seal as sealing
from gateway.audit import wal
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.merkle import CompactRange, leaf_hash
from gateway.audit.note import Signer
from gateway.audit.seal import SealedStream
from gateway.audit.store import (
    OFFSET,
    SEALED,
    Offsets,
    TreeFiles,
    frame,
    write_all,
)

log = logging.getLogger(__name__)
SYNC_THREADS = 4  # fdatasyncs beside the write-ahead log's: streamed bodies' files, at signing
# The write-ahead log holds every batch since the last signing (about 0.5 s of them, or less).
# Past this, signing has been failing: a commit tries it first and is refused if it fails
# again, so neither the file nor the unsigned entries held in memory grow without bound.
WAL_LIMIT = 256 * 1024 * 1024


@dataclass
class Pending:
    """One entry waiting for the writer: canonical bytes with seq and ts, plus bodies to seal."""

    seq: int
    body: bytes
    sealed: dict[str, bytes | SealedStream] | None = None


@dataclass
class Files:
    """Open descriptors and committed lengths of the files a batch appends to."""

    entries: int
    entries_end: int
    index: int
    checkpoints: int
    checkpoints_end: int
    checkpoint: int
    segment_no: int
    segment: int
    segment_end: int
    wal: int
    wal_seed: int  # CRC seed of its generation (wal.begin)
    wal_end: int


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file, fsync, rename. The caller fsyncs the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class Writer:
    """Committed state of the log and the batch append. Not thread-safe: one caller at a time.

    A batch is committed when its record in the write-ahead log (its entries and the sealed
    blobs they name, wal.py) is fdatasynced, and waiters are released then; `entries` and the
    segment are written alongside and fdatasynced when a checkpoint is signed (`sign`, once for
    any number of batches), which then empties the log. The tree, index and checkpoint need no
    fsync of their own: recovery replays the log, re-derives and re-signs them.
    """

    directory: Path
    origin: str
    signer: Signer
    aead: AESGCM
    files: Files
    tree: TreeFiles
    range: CompactRange
    offsets: Offsets
    note: bytes
    dirty: bool = field(default=False)
    unsynced: bool = field(default=True)  # `entries` or the segment written since their sync
    resync: bool = field(default=False)  # their last fdatasync failed: write them again first
    cut: bool = field(default=False)  # a failed commit wrote to them: sync their cut-back
    unsigned: list[bytes] = field(default_factory=list)  # committed, not yet in the tree
    syncer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="audit-sync")
    )

    @property
    def size(self) -> int:
        """Entries covered by the latest signed checkpoint."""
        return self.range.size

    @property
    def committed(self) -> int:
        """Entries committed: durable (in the write-ahead log until the next signing makes
        them so in `entries`), readable, signed or about to be."""
        return len(self.offsets)

    def write_batch(self, batch: list[Pending]) -> None:
        """Commit the batch and sign a checkpoint covering it, even an empty one (opening a log
        re-signs the recovered size this way)."""
        self.commit(batch)
        self.sign(always=True)

    def commit(self, batch: list[Pending]) -> None:
        """Make the batch durable (one fdatasync, of the write-ahead log). Nothing is signed
        here: `sign` follows when no other batch is waiting (log.py), so a signature never
        stands between a batch and the next one's fdatasync.

        Raises:
            OSError: the batch was not committed (files were truncated back).
        """
        self._commit(batch)

    def sign(self, *, always: bool = False) -> None:
        """Extend the tree and index by what was committed since the last checkpoint and sign
        one covering it. A failure is logged and leaves the entries durable; the next `sign`
        (after the next commit) writes it all again."""
        if not (self.unsigned or self.dirty or always):
            return
        try:
            if self.dirty:
                self._rollback()
            self._sign()
        except OSError as exc:
            log.error("audit: checkpoint not signed yet (the next batch retries): %s", exc)
            self.dirty = True

    def _commit(self, batch: list[Pending]) -> None:
        if self.dirty:
            self._rollback()
        if not batch:
            return
        f = self.files
        if f.wal_end > WAL_LIMIT:
            self.sign()  # empties the write-ahead log, unless it fails again
            if f.wal_end > WAL_LIMIT:
                raise OSError(errno.ENOSPC, "write-ahead log full: no checkpoint could be signed")
        try:
            bodies, blobs, spilled = self._seal(batch)
            records = [frame(b) for b in bodies]
            new_offsets = array("Q")
            pos = f.entries_end
            for r in records:
                new_offsets.append(pos)
                pos += len(r)
            frames = b"".join(records)
            write_all(f.entries, frames, f.entries_end)
            if blobs:
                write_all(f.segment, blobs, f.segment_end)
            logged = wal.record(
                f.wal_seed, f.entries_end, frames, f.segment_no, f.segment_end, blobs
            )
            write_all(f.wal, logged, f.wal_end)
            # Streamed bodies too big for a segment are in files of their own, synced beside.
            syncs = [self.syncer.submit(os.fdatasync, b.fd) for b in spilled]
            if spilled:  # and their directory entries
                syncs.append(self.syncer.submit(fsync_dir, self.directory / SEALED))
            os.fdatasync(f.wal)
            for sync in syncs:
                sync.result()
        except BaseException:
            self.dirty = self.cut = True
            try:
                self._rollback()
            except OSError as exc:
                log.warning("audit rollback failed, will retry before next write: %s", exc)
            raise
        f.entries_end = pos
        f.segment_end += len(blobs)
        f.wal_end += len(logged)
        self.unsynced = True
        for body in spilled:
            body.close()
        self.offsets.extend(new_offsets)
        self.unsigned.extend(bodies)

    def _sign(self) -> None:
        """Make `entries` and the segment durable, extend the tree and index by the unsigned
        entries, sign their checkpoint, and empty the write-ahead log."""
        f, size = self.files, self.size
        if self.unsynced:
            try:
                if self.resync:  # from the write-ahead log, which holds all since the last one
                    # (it fsyncs what it wrote; the pair below also covers an empty log)
                    wal.rewrite(self.directory, os.pread(f.wal, f.wal_end, 0), check=False)
                segment = self.syncer.submit(os.fdatasync, f.segment)
                os.fdatasync(f.entries)
                segment.result()
            except OSError:
                self.resync = True
                raise
            self.unsynced = self.resync = False
        rows = _Rows()
        rng = CompactRange(size, self.range.edge, on_node=rows.add)
        for b in self.unsigned:
            rng.append(leaf_hash(b))
        for level, (first, hashes) in rows.items():
            self.tree.write_at(level, first, b"".join(hashes))
        packed = self.offsets.packed_from(size)
        write_all(f.index, packed, size * OFFSET.size)
        note = Checkpoint(self.origin, rng.size, rng.root()).sign(self.signer)
        record = frame(note)
        write_all(f.checkpoints, record, f.checkpoints_end)
        f.checkpoints_end += len(record)
        # In place, no temp file and rename: a note is never shorter than the one before (the
        # size only gains digits), and `checkpoints` holds it too should this write be torn.
        write_all(f.checkpoint, note, 0)
        if len(self.note) > len(note):  # only if the key's name got shorter
            os.ftruncate(f.checkpoint, len(note))
        self.range = CompactRange(rng.size, rng.edge)
        self.unsigned = []
        self.note = note
        if f.wal_end > wal.HEADER.size:  # all it holds is in `entries` and the segment now
            f.wal_seed, f.wal_end = wal.begin(f.wal)
        self._maybe_rotate()

    def _seal(self, batch: list[Pending]) -> tuple[list[bytes], bytes, list[SealedStream]]:
        """Encrypt bodies for the current segment; entry bytes with references, the blobs to
        append to the segment, and the streamed bodies that went to files of their own (to be
        fdatasynced too)."""
        f, bodies, blobs, spilled = self.files, [], [], []
        end = f.segment_end
        file = sealing.segment_name(f.segment_no)
        for p in batch:
            if not p.sealed:
                bodies.append(p.body)
                continue
            refs = {}
            for name, body in p.sealed.items():
                if isinstance(body, SealedStream):
                    began = body.directory
                    body.move_to(self.directory)
                    ref = body.sealer.reference()
                    if began != self.directory:  # sealed under the previous epoch's key
                        ref["sealed_in"] = began.name
                    if body.file is not None:
                        refs[name] = {"file": body.file, "offset": 0, **ref}
                        spilled.append(body)
                        continue
                    blob = bytes(body.memory)
                else:
                    blob, ref = sealing.seal_whole(self.aead, body)
                refs[name] = {"file": file, "offset": end, **ref}
                blobs.append(blob)
                end += len(blob)
            entry = orjson.loads(p.body)
            entry["sealed"] = refs
            bodies.append(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS))
        return bodies, b"".join(blobs), spilled

    def _maybe_rotate(self) -> None:
        """Start the next segment once this one passed the limit: at signing, when this one is
        durable and no record of the write-ahead log names it."""
        f = self.files
        if f.segment_end < sealing.SEGMENT_LIMIT:
            return
        fd = open_segment(self.directory, f.segment_no + 1)
        fsync_dir(self.directory / SEALED)
        os.close(f.segment)
        f.segment_no, f.segment, f.segment_end = f.segment_no + 1, fd, 0

    def _rollback(self) -> None:
        """Truncate appended files to what is committed, derived ones to what is signed; void
        the failed batch's write-ahead record last (its fdatasync may fail too: the rest is
        cut by then).

        After a failed commit (`cut`), the cuts of `entries` and the segment are made durable
        before the caller is refused: writeback may have put the batch's bytes on the disk
        already, and after a power cut recovery keeps whole entries past the checkpoint (rule
        2), which would bring back what the caller was told was not written."""
        f, size = self.files, self.size
        os.ftruncate(f.segment, f.segment_end)
        os.ftruncate(f.entries, f.entries_end)
        if self.cut:
            os.fdatasync(f.segment)
            os.fdatasync(f.entries)
            self.cut = False
        os.ftruncate(f.index, size * OFFSET.size)
        os.ftruncate(f.checkpoints, f.checkpoints_end)
        write_all(f.checkpoint, self.note, 0)
        os.ftruncate(f.checkpoint, len(self.note))
        self.tree.truncate({lvl: size >> lvl for lvl in range(size.bit_length() + 1)})
        wal.void(f.wal, f.wal_end)
        self.dirty = False

    def close(self) -> None:
        """Make the signed state durable too (once, not per batch) and release the files; the
        write-ahead log, if all it held is signed, gives its space back (a closed epoch's log
        is never written again)."""
        f = self.files
        for fd in (f.checkpoints, f.checkpoint):
            os.fsync(fd)
        if f.wal_end == wal.HEADER.size and not self.unsigned:
            os.ftruncate(f.wal, 0)
        for fd in (f.entries, f.index, f.checkpoints, f.checkpoint, f.segment, f.wal):
            os.close(fd)
        self.tree.close()
        self.syncer.shutdown()


class _Rows(dict[int, tuple[int, list[bytes]]]):
    """New tree nodes of one batch per level: (index of the first, their hashes)."""

    def add(self, level: int, index: int, digest: bytes) -> None:
        row = self.get(level)
        if row is None:
            self[level] = (index, [digest])
        else:
            row[1].append(digest)


def open_segment(directory: Path, number: int) -> int:
    return os.open(directory / sealing.segment_name(number), os.O_RDWR | os.O_CREAT, 0o600)
