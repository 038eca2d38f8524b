"""Offline verification of an audit directory, naming the first thing that does not match.

Checks, in order: every entry frames and hashes; entries past the latest signed checkpoint
(and those naming sealed blobs) parse, are canonical and carry their own seq; every
checkpoint in `checkpoints` and `checkpoint` verifies with the key and its root equals the
RFC 9162 root recomputed from `entries` at its size (so consecutive checkpoints are
consistent: they are prefixes of one tree); every sealed blob's SHA-256 matches its entry;
the derived `tree/` and `index` caches match `entries`.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.entry_scan import Found, scan_entries
from gateway.audit.merkle import HASH_SIZE, CompactRange, build_levels, levels_getter
from gateway.audit.merkle import root as tree_root
from gateway.audit.note import NoteError, Verifier
from gateway.audit.store import (
    CHECKPOINT,
    CHECKPOINTS,
    ENTRIES,
    INDEX,
    LEN,
    OFFSET,
    TREE,
    VERIFIER,
    Scan,
    TreeFiles,
    iter_records,
    read_file,
    scan_frames,
)


@dataclass(frozen=True)
class Problem:
    """The first thing that failed: kind is entry, checkpoint, sealed, verifier, tree or index."""

    kind: str
    index: int | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class VerifyReport:
    """Outcome of verify_log; `problem` is None when everything matched."""

    directory: Path
    size: int = 0
    checkpoint_size: int = 0
    checkpoints: int = 0
    sealed_blobs: int = 0
    root: bytes = b""
    seconds: float = 0.0
    problem: Problem | None = None
    torn: bool = False
    warnings: list[str] = field(default_factory=list)
    from_size: int = 0  # entries before this were verified earlier (`--from`) and not read
    kept_origin: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem:
            return f"FAIL {self.directory}: {self.problem}"
        since = f" (checked from the kept checkpoint at {self.from_size})" if self.from_size else ""
        return (
            f"OK {self.directory}: {self.size} entries{since}, {self.checkpoints} checkpoints "
            f"(latest size {self.checkpoint_size}, root {self.root.hex()}), "
            f"{self.sealed_blobs} sealed blobs, {self.seconds:.2f}s"
        )


class _Failed(Exception):
    def __init__(self, kind: str, index: int | None, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(kind, index, message)


def load_verifier(
    directory: Path, verifier: str | Verifier | None, report: VerifyReport
) -> Verifier:
    """A verifier key given as a key, a file holding one, or {dir}/verifier."""
    if isinstance(verifier, Verifier):
        return verifier
    if verifier is None:
        report.warnings.append(
            "trusting the verifier key stored in the log directory; pass --verifier to pin it"
        )
        text = read_file(directory / VERIFIER).decode(errors="replace")
    elif "+" not in verifier or Path(verifier).is_file():
        text = Path(verifier).read_text()
    else:
        text = verifier
    try:
        return Verifier.parse(text)
    except NoteError as exc:
        raise _Failed("verifier", None, f"verifier key: {exc}") from None


def kept_by_origin(paths: list[str] | None) -> dict[str, bytes]:
    """Checkpoints an auditor kept (`--from FILE`), by the origin each names (its first line;
    the signature is checked when it is used)."""
    kept = {}
    for path in paths or []:
        note = Path(path).read_bytes()
        kept[note.split(b"\n", 1)[0].decode(errors="replace")] = note
    return kept


def verify_log(
    directory: Path, verifier: str | Verifier | None = None, since: bytes | None = None
) -> VerifyReport:
    """Verify everything in an audit directory. Never raises for bad content: see .problem.

    `since` is a signed checkpoint note the auditor kept from an earlier verification: the log
    must be consistent with it, and only the entries after it are read and checked.
    """
    directory = Path(directory)
    report = VerifyReport(directory)
    start = time.perf_counter()
    try:
        if not (directory / ENTRIES).is_file():
            raise _Failed("io", None, f"{directory} is not an audit directory (no {ENTRIES})")
        key = load_verifier(directory, verifier, report)
        notes = _Notes.read(directory)  # before `entries`: every note then names entries on disk
        kept = _kept_checkpoint(since, key) if since is not None else None
        resume = _resume_point(directory, kept) if kept is not None else None
        first, offset = resume[:2] if resume else (0, 0)
        ranges = _check_entries(directory, key, report, first, offset, notes.latest)
        leaves, offsets = _joined(ranges)
        if resume:
            tree = _Tree.extending(resume[2], leaves, first, notes.sizes(first))
        else:
            tree = _Tree.whole(leaves)
        if kept is not None:
            _check_kept(kept, tree, report)
        _check_checkpoints(directory, notes, key, tree, report)
        _check_sealed(ranges, report)
        _check_caches(directory, tree, offsets, report)
        report.from_size = first
    except _Failed as exc:
        report.problem = exc.problem
    except OSError as exc:
        report.problem = Problem("io", None, f"cannot read {exc.filename}: {exc.strerror}")
    report.seconds = time.perf_counter() - start
    return report


def _kept_checkpoint(note: bytes, key: Verifier) -> Checkpoint:
    try:
        return Checkpoint.open(note, key)
    except CheckpointError as exc:
        raise _Failed("checkpoint", None, f"--from checkpoint: {exc}") from None


def _resume_point(directory: Path, kept: Checkpoint) -> tuple[int, int, CompactRange] | None:
    """(seq, byte offset, tree edge) to start from after `kept`, when the stored tree and index
    reach it and the stored edge reproduces its root; None: check from the first entry."""
    m = kept.size
    if m == 0:
        return None
    stored = TreeFiles(directory)
    try:
        if not stored.covers(m):
            return None
        edge = CompactRange.from_nodes(stored.getter(m), m)
        if edge.root() != kept.root:
            return None  # the full check says whether the log or only the cache differs
        with open(directory / INDEX, "rb") as index, open(directory / ENTRIES, "rb") as entries:
            (last,) = OFFSET.unpack(os.pread(index.fileno(), OFFSET.size, (m - 1) * OFFSET.size))
            head = os.pread(entries.fileno(), LEN.size, last)
    except (OSError, LookupError, struct.error):
        return None
    finally:
        stored.close()
    if len(head) != LEN.size:
        return None
    return m, last + LEN.size + LEN.unpack(head)[0], edge


def _check_kept(kept: Checkpoint, tree: _Tree, report: VerifyReport) -> None:
    """The log must extend the checkpoint the auditor kept: same origin, a prefix of it."""
    if kept.size > tree.size:
        raise _Failed(
            "checkpoint",
            None,
            f"--from checkpoint (size {kept.size}): the log has only {tree.size} entries "
            "(truncated or rewritten)",
        )
    if tree.root(kept.size) != kept.root:
        raise _Failed(
            "checkpoint",
            None,
            f"--from checkpoint (size {kept.size}): the log's first {kept.size} entries do not "
            "hash to its root: the log was rewritten or forked since you kept it",
        )
    report.kept_origin = kept.origin


class _Tree:
    """Roots of the log's tree at the sizes verification asks for, and its leaf hashes from
    `first` on: either the whole tree rebuilt from every entry, or a kept checkpoint's tree
    (its edge, from stored hashes it authenticates) extended by the entries after it."""

    def __init__(self, first: int, leaves: bytes, roots, rows: dict[int, tuple[int, bytes]]):
        self.first = first
        self.leaves = leaves
        self.size = first + len(leaves) // HASH_SIZE
        self._roots = roots
        self.rows = rows  # level -> (index of the first node, their hashes), to check tree/

    @classmethod
    def whole(cls, leaves: bytes) -> _Tree:
        levels = build_levels([leaves])
        node = levels_getter(levels)
        rows = {level: (0, row) for level, row in enumerate(levels)}
        return cls(0, leaves, lambda size: tree_root(node, size), rows)

    @classmethod
    def extending(cls, edge: CompactRange, leaves: bytes, first: int, sizes: list[int]) -> _Tree:
        """Append the new leaves to the kept tree's edge, noting the root at each size."""
        rows: dict[int, tuple[int, list[bytes]]] = {}

        def on_node(level: int, index: int, digest: bytes) -> None:
            rows.setdefault(level, (index, []))[1].append(digest)

        rng = CompactRange(first, edge.edge, on_node=on_node)
        roots: dict[int, bytes] = {}
        wanted, j = sorted(set(sizes)), 0
        for i in range(0, len(leaves), HASH_SIZE):
            while j < len(wanted) and wanted[j] <= rng.size:
                roots[wanted[j]], j = rng.root(), j + 1
            rng.append(leaves[i : i + HASH_SIZE])
        roots.update(dict.fromkeys(wanted[j:], b""))  # beyond the log: refused by size first
        roots[rng.size] = rng.root()
        joined = {lvl: (start, b"".join(h)) for lvl, (start, h) in rows.items()}
        return cls(first, leaves, roots.__getitem__, joined)

    def root(self, size: int) -> bytes:
        return self._roots(size)

    def leaf(self, seq: int) -> bytes:
        i = (seq - self.first) * HASH_SIZE
        return self.leaves[i : i + HASH_SIZE]


SNAPSHOT_TRIES = 5  # reads of the checkpoint pair while a writer keeps signing


@dataclass
class _Notes:
    """`checkpoint` and `checkpoints` as one moment of the writer left them.

    The writer appends a note to `checkpoints`, then overwrites `checkpoint` with it. Read in
    the other order, `checkpoint` first, no note read names entries or notes not yet written;
    read twice around `checkpoints` and found unchanged, no signing finished in between, so
    `checkpoint` is the last note or (a signing under way, or cut short by a crash) the one
    before. A gateway signing throughout is read again; after SNAPSHOT_TRIES the last
    reading stands, with the weaker rule that its `checkpoint` is a recorded note.
    """

    latest: bytes
    scan: Scan  # of `checkpoints`
    notes: list[bytes]  # its whole records
    settled: bool

    @classmethod
    def read(cls, directory: Path) -> _Notes:
        for _ in range(SNAPSHOT_TRIES):
            latest = read_file(directory / CHECKPOINT)
            data = read_file(directory / CHECKPOINTS)
            settled = read_file(directory / CHECKPOINT) == latest
            if settled:
                break
        scan = scan_frames(data)
        return cls(latest, scan, [bytes(r) for r in iter_records(data, scan)], settled)

    def sizes(self, first: int) -> list[int]:
        """Tree sizes named by the checkpoints at or after `first` (bodies read, not verified:
        each is verified when it is checked)."""
        return [n for n in map(_note_size, [*self.notes, self.latest]) if n >= first]


def _check_entries(
    directory: Path, key: Verifier, report: VerifyReport, first: int, offset: int, latest: bytes
) -> list[Found]:
    """One pass over `entries` from entry `first` (at `offset`): framing, leaf hashes, JSON
    where needed and the sealed blobs named (entry_scan.py)."""
    path = directory / ENTRIES
    total = path.stat().st_size
    signed = _signed_size(latest, key)
    ranges = scan_entries(path, directory / INDEX, offset, first, signed, total)
    leaves, n = [], first
    for found in ranges:
        leaves.append(found.leaves)
        n += found.count
        if found.problem:
            seq, message = found.problem
            raise _Failed("entry", seq, message)
        if found.bad_length:
            n = found.first_seq + found.count
            changed = _first_changed(directory, b"".join(leaves), first)
            if changed is not None:  # an earlier length grew over the next entry's prefix
                raise _Failed("entry", changed, f"entry {changed}: its length or bytes changed")
            raise _Failed("entry", n, f"entry {n}: length prefix is corrupt (too large)")
    end = ranges[-1].end
    if end != total:
        report.torn = True
        report.warnings.append(
            f"{total - end} bytes after entry {n - 1} are not a whole entry "
            "(a torn write; the writer truncates it when it next opens the log)"
        )
    report.size = n
    return ranges


def _joined(ranges: list[Found]) -> tuple[bytes, bytes]:
    """The ranges' leaf hashes, and their offsets as `index` stores them (8-byte big-endian),
    each in one buffer with no object per entry; the ranges let go of their own copies so a
    big log's are not held twice."""
    leaves, offsets = [], array("Q")
    for found in ranges:
        leaves.append(found.leaves)
        offsets.extend(found.offsets)
        found.leaves, found.offsets = b"", array("Q")
    if sys.byteorder == "little":
        offsets.byteswap()
    return b"".join(leaves), offsets.tobytes()


def _first_changed(directory: Path, leaves: bytes, first: int) -> int | None:
    """The first entry from `first` whose leaf hash differs from the one stored at write time."""
    at = first * HASH_SIZE
    stored = read_file(directory / TREE / "00")[at : at + len(leaves)]
    for i in range(0, len(stored) - HASH_SIZE + 1, HASH_SIZE):
        if stored[i : i + HASH_SIZE] != leaves[i : i + HASH_SIZE]:
            return first + i // HASH_SIZE
    return None


def _signed_size(latest: bytes, key: Verifier) -> int:
    """Entries the latest checkpoint signs (their bytes are vouched for); 0 if it does not
    verify (then every entry is parsed, and the checkpoint check fails later anyway)."""
    try:
        return Checkpoint.open(latest, key).size
    except CheckpointError:
        return 0


def _locate(directory: Path, tree: _Tree, lo: int, hi: int) -> int | None:
    """The first entry in [lo, hi) whose leaf hash differs from the one recorded at write time."""
    start = max(lo, tree.first)
    changed = _first_changed(directory, tree.leaves[(start - tree.first) * HASH_SIZE :], start)
    return changed if changed is not None and changed < hi else None


def _check_checkpoints(
    directory: Path, read: _Notes, key: Verifier, tree: _Tree, report: VerifyReport
) -> None:
    scan, notes = read.scan, read.notes
    if scan.bad_length:
        k = len(notes)
        raise _Failed("checkpoint", k, f"checkpoints[{k}]: length prefix is corrupt")
    if scan.end != scan.total:
        report.warnings.append(f"{scan.total - scan.end} bytes after the last whole checkpoint")
    latest = read.latest
    if not latest:
        raise _Failed("checkpoint", None, "checkpoint: file is missing or empty")
    if latest not in (notes[-2:] if read.settled else notes):  # may lag the append by one
        raise _Failed(
            "checkpoint", None, "checkpoint: not the last checkpoint recorded in checkpoints"
        )
    if not read.settled:
        report.warnings.append(
            f"checkpoint changed in each of {SNAPSHOT_TRIES} readings (a writer signing): "
            "checked as of the last"
        )
    origin, prev = report.kept_origin, tree.first
    for k, note in enumerate([*notes, latest]):
        label = f"checkpoints[{k}]" if k < len(notes) else "checkpoint"
        if tree.first and _note_size(note) < tree.first:
            continue  # before the checkpoint the auditor kept: verified back then
        try:
            cp = Checkpoint.open(note, key, origin)
        except CheckpointError as exc:
            raise _Failed("checkpoint", k, f"{label}: {exc}") from None
        origin = cp.origin
        if cp.size > report.size and report.torn:
            # A length prefix altered by a little cuts the entry after it: name the one altered.
            bad = _locate(directory, tree, 0, report.size)
            if bad is not None:
                raise _Failed(
                    "entry", bad, f"entry {bad}: content differs from what {label} signed"
                )
            raise _Failed(
                "entry",
                report.size,
                f"entry {report.size}: cut off (its length runs past the end of entries) "
                f"but {label} covers {cp.size} entries",
            )
        if cp.size > report.size:
            raise _Failed(
                "checkpoint", k, f"{label} (size {cp.size}): the log has only {report.size} entries"
            )
        if k < len(notes) and cp.size < prev:
            raise _Failed("checkpoint", k, f"{label}: size {cp.size} is smaller than {prev}")
        if tree.root(cp.size) != cp.root:
            bad = _locate(directory, tree, prev if k < len(notes) else 0, cp.size)
            if bad is not None:
                raise _Failed(
                    "entry",
                    bad,
                    f"entry {bad}: content differs from what {label} (size {cp.size}) signed",
                )
            raise _Failed(
                "checkpoint",
                k,
                f"{label} (size {cp.size}): root does not match the entries (an entry below "
                f"{cp.size} was altered, or the checkpoint was)",
            )
        prev = cp.size if k < len(notes) else prev
        report.checkpoint_size, report.root = cp.size, cp.root
        report.checkpoints += k < len(notes)
    if report.size > report.checkpoint_size:
        report.warnings.append(
            f"entries {report.checkpoint_size}..{report.size - 1} are not covered by a signed "
            "checkpoint yet"
        )


def _note_size(note: bytes) -> int:
    parts = note.split(b"\n", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else -1


def _check_sealed(ranges: list[Found], report: VerifyReport) -> None:
    """The sealed blobs were hashed during the pass; name the first that did not match."""
    for found in ranges:
        report.sealed_blobs += found.sealed_blobs
        if found.sealed_problem:
            raise _Failed(*found.sealed_problem)


def _check_caches(directory: Path, tree: _Tree, index: bytes, report: VerifyReport) -> None:
    """The derived caches must agree with entries, or proofs served from them are wrong."""
    for level, (first, row) in sorted(tree.rows.items()) if report.size else ():
        if _differs(directory / TREE / f"{level:02d}", first * HASH_SIZE, row):
            raise _Failed("tree", level, f"tree/{level:02d}: cached hashes differ from entries")
    if _differs(directory / INDEX, tree.first * OFFSET.size, index):
        raise _Failed("index", None, "index: cached offsets differ from entries")


CACHE_CHUNK = 1024 * 1024  # bytes of a cache file compared at a time


def _differs(path: Path, at: int, want: bytes) -> bool:
    """Whether the file holds other bytes than `want` at `at` (a cache shorter than `want`
    is one not written yet: not a difference), read in chunks."""
    if not path.is_file() or path.stat().st_size < at + len(want):
        return False
    view = memoryview(want)
    with open(path, "rb") as f:
        f.seek(at)
        return any(  # read no further than `want`: a writer may be adding to the cache
            f.read(len(chunk)) != chunk
            for chunk in (view[i : i + CACHE_CHUNK] for i in range(0, len(want), CACHE_CHUNK))
        )
