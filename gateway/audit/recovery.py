"""Opening a log for writing: take the lock, recover a torn tail, refuse forks, rebuild caches.

Rules (also in docs/audit-format.md):
- a cut-off record at the end of `entries` or `checkpoints` is a torn write and is truncated;
- whole entries beyond the last signed checkpoint are kept if they are valid canonical entries
  with the right seq whose sealed blobs are all on disk (they were fsynced but not yet signed),
  else truncated from the first bad one;
- entries covered by the last signed checkpoint are never changed: if there are fewer of them,
  or their root differs from the checkpoint's, the log is refused (a fork or tampering);
- `tree/` and `index` are recomputed from `entries` and rewritten where they differ.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from array import array
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.audit import resume, wal
from gateway.audit.canonical import is_canonical
from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.merkle import LEAF_PREFIX, CompactRange, build_levels, levels_getter
from gateway.audit.merkle import root as tree_root
from gateway.audit.note import Signer
from gateway.audit.store import (
    CHECKPOINT,
    CHECKPOINTS,
    ENTRIES,
    INDEX,
    LOCK,
    OFFSET,
    SEALED,
    TREE,
    VERIFIER,
    Offsets,
    TreeFiles,
    file_size,
    iter_records,
    read_file,
    scan_frames,
)
from gateway.audit.writer import Files, Writer, fsync_dir, open_segment, write_atomic


class AuditOpenError(Exception):
    """The log cannot be opened for writing; the message says why and what to check."""


@dataclass(frozen=True)
class Recovered:
    """What recovery had to cut away or write back; `repaired` is false for a clean open."""

    entries_bytes: int
    entries_offset: int
    checkpoints_bytes: int
    size: int
    checkpoint_size: int
    restored_entry_bytes: int = 0  # written back from the write-ahead log (a power cut)
    restored_sealed_bytes: int = 0

    @property
    def repaired(self) -> bool:
        return bool(
            self.entries_bytes
            or self.checkpoints_bytes
            or self.restored_entry_bytes
            or self.restored_sealed_bytes
        )


def leaf_hashes(records: list[bytes | memoryview]) -> list[bytes]:
    """Leaf hashes of many records without copying each record."""
    base = hashlib.sha256(LEAF_PREFIX)
    out = []
    for rec in records:
        h = base.copy()
        h.update(rec)
        out.append(h.digest())
    return out


def _lock(directory: Path) -> int:
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AuditOpenError(f"{directory} is open by another writer") from None
    return fd


def _check_verifier(directory: Path, signer: Signer) -> None:
    path, mine = directory / VERIFIER, signer.verifier.encode()
    existing = read_file(path).decode(errors="replace").strip()
    if existing and existing != mine:
        raise AuditOpenError(
            f"{path} names key {'+'.join(existing.split('+')[:2])} but the "
            f"signing key is {signer.name}+{signer.verifier.key_id.hex()}; wrong signing_key?"
        )
    if not existing:
        write_atomic(path, (mine + "\n").encode())


def _last_checkpoint(
    directory: Path, signer: Signer, origin: str
) -> tuple[Checkpoint | None, int, bool]:
    """The newest signed checkpoint, the length of whole records in `checkpoints`, and whether
    that checkpoint is the last of them (`checkpoint` is written after it, neither fsynced)."""
    data = read_file(directory / CHECKPOINTS)
    scan = scan_frames(data)
    verifier, best = signer.verifier, None
    records = list(iter_records(data, scan))
    try:
        if records:
            best = Checkpoint.open(bytes(records[-1]), verifier, origin)
        best, recorded = resume.newest_checkpoint(best, directory, verifier, origin)
    except resume.CheckpointFork as exc:
        raise AuditOpenError(f"{exc}: a fork; refusing to open") from None
    except CheckpointError as exc:
        raise AuditOpenError(f"{directory}: signed checkpoint does not verify: {exc}") from None
    return best, scan.end, recorded


def _valid_tail(directory: Path, records: list, start: int, first_seq: int = 0) -> int:
    """Index of the first record from `start` on that is not a valid entry with its seq
    (`first_seq` + its index), or names a sealed blob that is not (wholly) on disk."""
    for i in range(start, len(records)):
        body = bytes(records[i])
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return i
        if not is_canonical(body, parsed) or parsed.get("seq") != first_seq + i:
            return i
        if not all(_blob_on_disk(directory, ref) for ref in (parsed.get("sealed") or {}).values()):
            return i
    return len(records)


def _blob_on_disk(directory: Path, ref: object) -> bool:
    try:
        path = directory / ref["file"]  # type: ignore[index]
        return path.stat().st_size >= ref["offset"] + ref["length"]  # type: ignore[index]
    except (OSError, KeyError, TypeError):
        return False


def _sync_derived(path: Path, expected: bytes) -> None:
    """Rewrite a derived file when it differs from what `entries` implies."""
    if read_file(path) != expected:
        write_atomic(path, expected)


def recover(
    directory: Path, origin: str, signer: Signer, sealing_key: bytes
) -> tuple[Writer, Recovered, int]:
    """Open `directory` for writing. Returns the writer, what was cut, and the lock fd.

    Raises:
        AuditOpenError: another writer, a different key or origin, a fork, or a file that
            cannot be created, read or written (the message names it and why).
    """
    directory = Path(directory)
    try:
        return _recover(directory, origin, signer, sealing_key)
    except OSError as exc:  # the file it is about, and why: never a traceback
        raise AuditOpenError(
            f"{exc.filename or directory}: {exc.strerror or type(exc).__name__}"
        ) from None


def _recover(
    directory: Path, origin: str, signer: Signer, sealing_key: bytes
) -> tuple[Writer, Recovered, int]:
    for sub in (directory, directory / SEALED, directory / TREE):
        sub.mkdir(parents=True, exist_ok=True)
    lock = _lock(directory)
    try:
        writer, recovered = _recover_locked(directory, origin, signer, sealing_key)
    except BaseException:
        os.close(lock)
        raise
    return writer, recovered, lock


@dataclass
class _Found:
    """What one of the two ways of opening found: the signed state and the unsigned tail."""

    checkpoint: Checkpoint | None
    checkpoints_end: int
    checkpoints_total: int
    recorded: bool
    size: int  # entries kept
    entries_end: int
    entries_total: int
    base: int  # entries whose offsets stay in `index` (read on demand)
    offsets: array  # offsets of the entries after `base`
    range: CompactRange
    unsigned: list[bytes]  # kept entries after the checkpoint, for the writer to sign


def _recover_locked(
    directory: Path, origin: str, signer: Signer, sealing_key: bytes
) -> tuple[Writer, Recovered]:
    _check_verifier(directory, signer)
    try:
        restored = wal.replay(directory)
    except wal.WalMismatch as exc:
        raise AuditOpenError(f"{directory}: {exc}; refusing to open") from None
    tree = TreeFiles(directory, writable=True)
    try:
        found = _resume(directory, origin, signer, tree) or _rebuild(directory, origin, signer)
    except BaseException:
        tree.close()
        raise
    cp_size = found.checkpoint.size if found.checkpoint else 0
    recovered = Recovered(
        found.entries_total - found.entries_end,
        found.entries_end,
        found.checkpoints_total - found.checkpoints_end,
        found.size,
        cp_size,
        *restored,
    )
    entries_fd = os.open(directory / ENTRIES, os.O_RDWR | os.O_CREAT, 0o644)
    cps_fd = os.open(directory / CHECKPOINTS, os.O_RDWR | os.O_CREAT, 0o644)
    if recovered.entries_bytes:
        os.ftruncate(entries_fd, found.entries_end)
        os.fsync(entries_fd)
    if recovered.checkpoints_bytes:
        os.ftruncate(cps_fd, found.checkpoints_end)
        os.fsync(cps_fd)
    segments = sorted((directory / SEALED).glob("*.seal"))
    seg_no = int(segments[-1].stem) if segments else 0
    seg_fd = open_segment(directory, seg_no)
    index_fd = os.open(directory / INDEX, os.O_RDWR | os.O_CREAT, 0o644)
    wal_fd = os.open(directory / wal.WAL, os.O_RDWR | os.O_CREAT, 0o600)
    wal_seed, wal_end = wal.begin(wal_fd)  # what it held is written back above
    files = Files(
        entries=entries_fd,
        entries_end=found.entries_end,
        index=index_fd,
        checkpoints=cps_fd,
        checkpoints_end=found.checkpoints_end,
        checkpoint=os.open(directory / CHECKPOINT, os.O_RDWR | os.O_CREAT, 0o644),
        segment_no=seg_no,
        segment=seg_fd,
        segment_end=os.fstat(seg_fd).st_size,
        wal=wal_fd,
        wal_seed=wal_seed,
        wal_end=wal_end,
    )
    writer = Writer(
        directory=directory,
        origin=origin,
        signer=signer,
        aead=AESGCM(sealing_key),
        files=files,
        tree=tree,
        range=found.range,
        offsets=Offsets(index_fd, found.base, found.offsets),
        note=read_file(directory / CHECKPOINT),
        unsigned=found.unsigned,
    )
    cp = found.checkpoint
    if cp is None or cp.size != found.size or not found.recorded or writer.note != cp.sign(signer):
        writer.write_batch([])  # sign the recovered size so `checkpoint` matches `entries`
        os.fsync(cps_fd)
        os.fsync(files.checkpoint)
    fsync_dir(directory)
    return writer, recovered


def _resume(directory: Path, origin: str, signer: Signer, tree: TreeFiles) -> _Found | None:
    """Open from the newest checkpoint and the stored tree, reading only what follows it."""
    last = resume.last_checkpoint_from_tail(directory, signer.verifier, origin)
    if last is None:
        cp, cps_end, recorded = _last_checkpoint(directory, signer, origin)
        last = resume.LastCheckpoint(cp, cps_end, recorded, file_size(directory / CHECKPOINTS))
    tail = resume.covered_tail(directory, last.checkpoint, tree)
    if tail is None:
        return None
    cp_size = last.checkpoint.size if last.checkpoint else 0
    keep = _valid_tail(directory, tail.records, 0, first_seq=cp_size)
    if keep < len(tail.offsets):
        end = tail.offsets[keep]
    elif tail.records:
        end = tail.offsets[-1] + 4 + len(tail.records[-1])
    else:
        end = tail.covered_end
    # Nodes and offsets past the checkpoint are rewritten by the writer from the kept tail.
    tree.truncate({lvl: cp_size >> lvl for lvl in range(cp_size.bit_length() + 1)})
    os.truncate(directory / INDEX, cp_size * OFFSET.size)
    return _Found(
        checkpoint=last.checkpoint,
        checkpoints_end=last.records_end,
        checkpoints_total=last.total,
        recorded=last.recorded,
        size=cp_size + keep,
        entries_end=end,
        entries_total=tail.entries_total,
        base=cp_size,
        offsets=array("Q", tail.offsets[:keep]),
        range=CompactRange.from_nodes(tree.getter(cp_size), cp_size),
        unsigned=tail.records[:keep],
    )


def _rebuild(directory: Path, origin: str, signer: Signer) -> _Found:
    """Re-read and re-hash every entry; rewrite the derived files; refuse a fork."""
    cp, cps_end, recorded = _last_checkpoint(directory, signer, origin)
    cp_size = cp.size if cp else 0
    data = read_file(directory / ENTRIES)
    scan = scan_frames(data)
    records = list(iter_records(memoryview(data), scan))
    if len(records) < cp_size:
        raise AuditOpenError(
            f"{directory / ENTRIES} holds {len(records)} whole entries but the signed checkpoint "
            f"covers {cp_size}: entries were removed; refusing to open"
        )
    keep = _valid_tail(directory, records, cp_size)
    records = records[:keep]
    end = scan.offsets[keep] if keep < len(scan.offsets) else scan.end
    rows = build_levels(leaf_hashes(records))
    node = levels_getter(rows)
    if cp and tree_root(node, cp.size) != cp.root:
        raise AuditOpenError(
            f"{directory / ENTRIES}: the first {cp.size} entries do not match the signed "
            "checkpoint (a fork or tampering); refusing to open; run `gateway audit verify`"
        )
    for level, row in enumerate(rows if records else []):
        _sync_derived(directory / TREE / f"{level:02d}", row)
    for stale in (directory / TREE).glob("*"):
        if not records or int(stale.name) >= len(rows):
            stale.unlink()
    offsets = array("Q", scan.offsets[:keep])
    _sync_derived(directory / INDEX, b"".join([OFFSET.pack(o) for o in offsets]))
    return _Found(
        checkpoint=cp,
        checkpoints_end=cps_end,
        checkpoints_total=file_size(directory / CHECKPOINTS),
        recorded=recorded,
        size=keep,
        entries_end=end,
        entries_total=len(data),
        base=0,
        offsets=offsets,
        range=CompactRange.from_nodes(node, keep),
        unsigned=[],
    )
