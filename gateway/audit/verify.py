"""Offline verification of an audit directory, naming the first thing that does not match.

Checks, in order: every entry frames, parses, is canonical and carries its own seq; every
checkpoint in `checkpoints` and `checkpoint` verifies with the key and its root equals the
RFC 9162 root recomputed from `entries` at its size (so consecutive checkpoints are
consistent: they are prefixes of one tree); every sealed blob's SHA-256 matches its entry;
the derived `tree/` and `index` caches match `entries`.
"""

from __future__ import annotations

import hashlib
import mmap
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.merkle import HASH_SIZE, LEAF_PREFIX, build_levels, levels_getter
from gateway.audit.merkle import root as tree_root
from gateway.audit.note import NoteError, Verifier
from gateway.audit.store import (
    CHECKPOINT,
    CHECKPOINTS,
    ENTRIES,
    INDEX,
    LEN,
    OFFSET,
    SEALED,
    TREE,
    VERIFIER,
    iter_records,
    read_file,
    scan_frames,
)

SORT = orjson.OPT_SORT_KEYS


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

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem:
            return f"FAIL {self.directory}: {self.problem}"
        return (
            f"OK {self.directory}: {self.size} entries, {self.checkpoints} checkpoints "
            f"(latest size {self.checkpoint_size}, root {self.root.hex()}), "
            f"{self.sealed_blobs} sealed blobs, {self.seconds:.2f}s"
        )


class _Failed(Exception):
    def __init__(self, kind: str, index: int | None, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(kind, index, message)


@contextmanager
def _mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes without reading them all into memory (b"" if missing or empty)."""
    if not path.exists() or path.stat().st_size == 0:
        yield b""
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        yield m


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


def verify_log(directory: Path, verifier: str | Verifier | None = None) -> VerifyReport:
    """Verify everything in an audit directory. Never raises for bad content: see .problem."""
    directory = Path(directory)
    report = VerifyReport(directory)
    start = time.perf_counter()
    try:
        if not (directory / ENTRIES).is_file():
            raise _Failed("io", None, f"{directory} is not an audit directory (no {ENTRIES})")
        key = load_verifier(directory, verifier, report)
        with _mapped(directory / ENTRIES) as data:
            leaves, refs, offsets = _check_entries(data, report)
        rows = build_levels(leaves)
        node = levels_getter(rows)
        _check_checkpoints(directory, key, rows, node, report)
        _check_sealed(directory, refs, report)
        _check_caches(directory, rows, b"".join([OFFSET.pack(o) for o in offsets]), report)
    except _Failed as exc:
        report.problem = exc.problem
    except OSError as exc:
        report.problem = Problem("io", None, f"cannot read {exc.filename}: {exc.strerror}")
    report.seconds = time.perf_counter() - start
    return report


def _check_entries(
    data: bytes | mmap.mmap, report: VerifyReport
) -> tuple[list[bytes], list, array]:
    """One pass over `entries`: parse, canonical and seq checks, leaf hashes."""
    scan = scan_frames(data)
    view = memoryview(data)
    rec: memoryview | bytes = b""
    refs: list[tuple[int, str, dict]] = []
    leaves: list[bytes] = []
    loads, dumps, unpack = orjson.loads, orjson.dumps, LEN.unpack_from
    base = hashlib.sha256(LEAF_PREFIX)
    try:
        for i, off in enumerate(scan.offsets):
            rec = view[off + 4 : off + 4 + unpack(view, off)[0]]
            try:
                entry = loads(rec)
            except orjson.JSONDecodeError:
                raise _Failed("entry", i, f"entry {i}: not valid JSON") from None
            if not isinstance(entry, dict) or dumps(entry, option=SORT) != rec:
                raise _Failed("entry", i, f"entry {i}: not canonical JSON")
            if entry.get("seq") != i:
                raise _Failed("entry", i, f"entry {i}: its seq is {entry.get('seq')!r}")
            sealed = entry.get("sealed")
            if sealed:
                refs.extend((i, name, ref) for name, ref in sealed.items())
            h = base.copy()
            h.update(rec)
            leaves.append(h.digest())
    finally:  # drop the last slice so the caller can unmap `entries`, even on failure
        rec = b""
        view.release()
    n = len(leaves)
    if scan.bad_length:
        raise _Failed("entry", n, f"entry {n}: length prefix is corrupt (larger than any entry)")
    if scan.end != scan.total:
        report.torn = True
        report.warnings.append(
            f"{scan.total - scan.end} bytes after entry {n - 1} are not a whole entry "
            "(a torn write; the writer truncates it when it next opens the log)"
        )
    report.size = n
    return leaves, refs, scan.offsets


def _locate(directory: Path, leaves: list[bytes], lo: int, hi: int) -> int | None:
    """The first entry in [lo, hi) whose leaf hash differs from the one recorded at write time."""
    stored = read_file(directory / TREE / "00")
    for i in range(lo, min(hi, len(stored) // HASH_SIZE)):
        if stored[i * HASH_SIZE : (i + 1) * HASH_SIZE] != leaves[i]:
            return i
    return None


def _check_checkpoints(
    directory: Path, key: Verifier, rows: list[bytes], node, report: VerifyReport
) -> None:
    data = read_file(directory / CHECKPOINTS)
    scan = scan_frames(data)
    notes = [bytes(r) for r in iter_records(data, scan)]
    if scan.bad_length:
        k = len(notes)
        raise _Failed("checkpoint", k, f"checkpoints[{k}]: length prefix is corrupt")
    if scan.end != scan.total:
        report.warnings.append(f"{scan.total - scan.end} bytes after the last whole checkpoint")
    latest = read_file(directory / CHECKPOINT)
    if not latest:
        raise _Failed("checkpoint", None, "checkpoint: file is missing or empty")
    if latest not in notes[-2:]:  # the rename may lag the append by one batch after a crash
        raise _Failed(
            "checkpoint", None, "checkpoint: not the last checkpoint recorded in checkpoints"
        )
    leaves = None
    origin, prev = None, 0
    for k, note in enumerate([*notes, latest]):
        label = f"checkpoints[{k}]" if k < len(notes) else "checkpoint"
        try:
            cp = Checkpoint.open(note, key, origin)
        except CheckpointError as exc:
            raise _Failed("checkpoint", k, f"{label}: {exc}") from None
        origin = cp.origin
        if cp.size > report.size and report.torn:
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
        if tree_root(node, cp.size) != cp.root:
            if leaves is None:
                leaves = [rows[0][i : i + HASH_SIZE] for i in range(0, len(rows[0]), HASH_SIZE)]
            bad = _locate(directory, leaves, prev if k < len(notes) else 0, cp.size)
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
    report.checkpoints = len(notes)
    if report.size > report.checkpoint_size:
        report.warnings.append(
            f"entries {report.checkpoint_size}..{report.size - 1} are not covered by a signed "
            "checkpoint yet"
        )


def _check_sealed(directory: Path, refs: list, report: VerifyReport) -> None:
    sealed_dir = (directory / SEALED).resolve()
    files: dict[str, object] = {}
    try:
        for seq, name, ref in refs:
            try:
                rel, off, length = ref["file"], ref["offset"], ref["length"]
                want = ref["sha256_ciphertext"]
            except (KeyError, TypeError):
                raise _Failed("entry", seq, f"entry {seq}: malformed sealed reference") from None
            if rel not in files:
                path = (directory / rel).resolve()
                if path.parent != sealed_dir:
                    raise _Failed(
                        "sealed",
                        seq,
                        f"sealed blob {name!r} of entry {seq}: {rel!r} is outside sealed/",
                    )
                try:
                    files[rel] = _open_map(path)
                except FileNotFoundError:
                    raise _Failed(
                        "sealed", seq, f"sealed blob {name!r} of entry {seq}: {rel} is missing"
                    ) from None
            blob = files[rel][off : off + length]
            if len(blob) != length:
                raise _Failed(
                    "sealed", seq, f"sealed blob {name!r} of entry {seq}: {rel} is truncated"
                )
            if hashlib.sha256(blob).hexdigest() != want:
                raise _Failed(
                    "sealed",
                    seq,
                    f"sealed blob {name!r} of entry {seq} ({rel} at {off}): SHA-256 does not match",
                )
            report.sealed_blobs += 1
    finally:
        for m in files.values():
            m.close()


def _blob(seq: int, name: str, what: str) -> _Failed:
    return _Failed("sealed", seq, f"sealed blob {name!r} of entry {seq}: {what}")


def _open_map(path: Path):
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return _Empty()
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class _Empty(bytes):
    def close(self) -> None:
        """Nothing to release for an empty segment."""


def _check_caches(directory: Path, rows: list[bytes], index: bytes, report: VerifyReport) -> None:
    """The derived caches must agree with entries, or proofs served from them are wrong."""
    for level, row in enumerate(rows if report.size else []):
        stored = read_file(directory / TREE / f"{level:02d}")[: len(row)]
        if stored != row and len(stored) == len(row):
            raise _Failed("tree", level, f"tree/{level:02d}: cached hashes differ from entries")
    stored = read_file(directory / INDEX)[: len(index)]
    if stored != index and len(stored) == len(index):
        raise _Failed("index", None, "index: cached offsets differ from entries")
