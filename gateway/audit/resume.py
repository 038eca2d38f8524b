"""Resuming a log from its last signed checkpoint, in time independent of the log's size.

Opening a log used to re-read and re-hash every entry. Instead, when the derived files agree
with the newest signed checkpoint, only what follows that checkpoint is read and checked:

- the newest checkpoint is found in the last `TAIL_WINDOW` bytes of `checkpoints`;
- the stored subtree hashes (`tree/`) must reproduce the checkpoint's root at its size;
- the index must place the last covered entry where it hashes to the stored leaf, and a fixed
  sample of covered entries must hash to their stored leaves too;
- entries after the checkpoint are read, validated and hashed as the full recovery does.

Any disagreement returns None and the caller runs the full recovery, which rebuilds the
derived files or refuses a fork exactly as before. Tampering in the middle of the covered
prefix that leaves lengths and the stored tree alone is not looked for here: that is what
`gateway audit verify` is for (docs/audit-format.md, "Opening a log").
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.merkle import LEAF_PREFIX
from gateway.audit.merkle import root as tree_root
from gateway.audit.note import Verifier
from gateway.audit.store import (
    CHECKPOINT,
    CHECKPOINTS,
    ENTRIES,
    INDEX,
    LEN,
    OFFSET,
    TreeFiles,
    file_size,
    iter_records,
    read_file,
    scan_frames,
)

log = logging.getLogger(__name__)

TAIL_WINDOW = 64 * 1024  # a few hundred notes; the newest is always in it
SAMPLE = 64  # covered entries re-hashed against their stored leaves on every open


@dataclass(frozen=True)
class LastCheckpoint:
    """The newest signed checkpoint, where whole records of `checkpoints` end, and whether
    that checkpoint is the last record there (`checkpoint` may be one batch ahead or behind)."""

    checkpoint: Checkpoint | None
    records_end: int
    recorded: bool
    total: int


@dataclass(frozen=True)
class Tail:
    """Entries after the newest checkpoint, as found on disk."""

    covered_end: int  # byte offset in `entries` where the covered prefix ends
    records: list[bytes]  # whole records after it, not yet validated
    offsets: list[int]  # their offsets in `entries`
    entries_total: int


def last_checkpoint_from_tail(
    directory: Path, verifier: Verifier, origin: str
) -> LastCheckpoint | None:
    """The newest checkpoint read from the end of `checkpoints`; None when that is not enough."""
    path = directory / CHECKPOINTS
    total = file_size(path)
    if total <= TAIL_WINDOW:
        return None  # small: the full scan costs no more
    with open(path, "rb") as f:
        f.seek(total - TAIL_WINDOW)
        window = f.read(TAIL_WINDOW)
    base = total - TAIL_WINDOW
    start = _first_frame(window, origin.encode() + b"\n")
    if start is None:
        return None
    scan = scan_frames(memoryview(window)[start:])
    notes = [bytes(r) for r in iter_records(memoryview(window)[start:], scan)]
    if not notes or scan.bad_length:
        return None
    try:
        best, recorded = newest_checkpoint(
            Checkpoint.open(notes[-1], verifier, origin), directory, verifier, origin
        )
    except (CheckpointError, CheckpointFork):
        return None  # the full recovery says what is wrong
    return LastCheckpoint(best, base + start + scan.end, recorded, total)


class CheckpointFork(Exception):
    """`checkpoint` and the last record of `checkpoints` sign different roots at one size."""


def newest_checkpoint(
    last_record: Checkpoint | None, directory: Path, verifier: Verifier, origin: str
) -> tuple[Checkpoint | None, bool]:
    """The newer of the last record of `checkpoints` and `checkpoint`, and whether it is that
    record. `checkpoint` is rewritten in place, so a power cut can tear it: when a record can
    stand in for it, a `checkpoint` that does not verify is passed over.

    Raises:
        CheckpointFork: both sign the same size with different roots.
        CheckpointError: there is no record and `checkpoint` does not verify.
    """
    note = read_file(directory / CHECKPOINT)
    current = None
    if note:
        try:
            current = Checkpoint.open(note, verifier, origin)
        except CheckpointError:
            if last_record is None:
                raise
            log.warning("audit: %s does not verify (torn?); using %s", CHECKPOINT, CHECKPOINTS)
    if current is None:
        return last_record, last_record is not None
    if last_record is None or current.size > last_record.size:
        return current, False
    if current.size == last_record.size and current.root != last_record.root:
        raise CheckpointFork(
            f"{directory}: checkpoint and the last of checkpoints disagree at size {current.size}"
        )
    return last_record, True


def _first_frame(window: bytes, head: bytes) -> int | None:
    """Offset in `window` of a record whose frames run whole to the end (bar a torn tail)."""
    pos = window.find(head, 4)
    while pos != -1:
        start = pos - 4
        scan = scan_frames(memoryview(window)[start:])
        if scan.offsets and not scan.bad_length and _all_notes(window, start, scan, head):
            return start
        pos = window.find(head, pos + 1)
    return None


def _all_notes(window: bytes, start: int, scan, head: bytes) -> bool:
    return all(window.startswith(head, start + off + 4) for off in scan.offsets)


def covered_tail(directory: Path, cp: Checkpoint | None, tree: TreeFiles) -> Tail | None:
    """The entries after `cp`, when the stored tree and index agree with it; else None."""
    size = cp.size if cp else 0
    if not (directory / ENTRIES).is_file() or not (directory / INDEX).is_file():
        return None  # a new log, or lost derived files: the full recovery makes them
    with open(directory / ENTRIES, "rb") as entries, open(directory / INDEX, "rb") as index:
        entries_total = os.fstat(entries.fileno()).st_size
        if os.fstat(index.fileno()).st_size < size * OFFSET.size:
            return None
        covered_end = 0
        if size:
            if not tree.covers(size) or tree_root(tree.getter(size), size) != cp.root:
                return None
            picks = {0, size - 1, *random.sample(range(size), min(SAMPLE, size))}
            for seq in sorted(picks):
                end = _stored_leaf_matches(entries, index, tree, seq, entries_total)
                if end is None:
                    return None
                if seq == size - 1:
                    covered_end = end
        entries.seek(covered_end)
        rest = entries.read()
    scan = scan_frames(rest)
    records = [bytes(r) for r in iter_records(rest, scan)]
    return Tail(covered_end, records, [covered_end + o for o in scan.offsets], entries_total)


def _stored_leaf_matches(entries, index, tree: TreeFiles, seq: int, total: int) -> int | None:
    """End offset of entry `seq` when the index finds it and it hashes to the stored leaf."""
    (off,) = OFFSET.unpack(os.pread(index.fileno(), OFFSET.size, seq * OFFSET.size))
    head = os.pread(entries.fileno(), LEN.size, off)
    if len(head) != LEN.size:
        return None
    (n,) = LEN.unpack(head)
    if off + LEN.size + n > total:
        return None
    body = os.pread(entries.fileno(), n, off + LEN.size)
    if hashlib.sha256(LEAF_PREFIX + body).digest() != tree.node(0, seq):
        return None
    return off + LEN.size + n
