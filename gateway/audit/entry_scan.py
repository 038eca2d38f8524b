"""One pass over `entries`: framing, leaf hashes, and the checks that need an entry's JSON.

The signed checkpoint covers the exact bytes of every entry below its size, so those entries
are checked by their hashes alone and parsed only when they name sealed blobs (whose hashes
must then be checked). Entries past the checkpoint are vouched for by nothing yet: each is
parsed and must be canonical JSON carrying its own seq.

The sealed blobs an entry names are hashed as the entry is read, so no list of references is
kept; the first that does not match is reported after the checkpoints are checked (the order
verification names problems in).

Big logs are split at offsets from `index` into one range per core, scanned by worker
processes; the ranges must tile `entries` exactly (each range's frames end where the next
begins), otherwise the scan is redone in one process, so a wrong `index` costs time only.

Memory stays bounded by the log's leaf hashes and offsets (40 bytes an entry): files are
mapped, and the pages read are dropped from the process every WINDOW bytes (they stay in the
page cache), so resident memory does not grow with the files' size.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from array import array
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from multiprocessing import get_context
from pathlib import Path

import orjson

from gateway.audit.merkle import LEAF_PREFIX
from gateway.audit.store import LEN, MAX_ENTRY, OFFSET, SEALED

PARALLEL_FROM = 64 * 1024 * 1024  # below this many bytes, starting workers costs more
WINDOW = 16 * 1024 * 1024  # bytes read from a mapping before its pages are dropped
SEALED_KEY = b'"sealed":'


@dataclass
class Found:
    """What one range held: leaf hashes (concatenated), offsets, how many sealed blobs
    matched, the first problem as (seq, message) or where framing stopped short of the
    range's end, and the first sealed blob that did not match as (kind, seq, message)."""

    first_seq: int
    leaves: bytes = b""
    offsets: array = field(default_factory=lambda: array("Q"))
    sealed_blobs: int = 0
    sealed_problem: tuple[str, int, str] | None = None
    problem: tuple[int, str] | None = None
    end: int = 0
    bad_length: bool = False

    @property
    def count(self) -> int:
        return len(self.offsets)


class _Mapped:
    """A read-only map of a file whose pages are dropped from this process (not from the page
    cache) as reading moves on, so resident memory stays bounded."""

    def __init__(self, f) -> None:
        self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._read = 0

    def drop_before(self, pos: int) -> None:
        """Drop the pages wholly before `pos` (read in order: not needed again)."""
        self.data.madvise(mmap.MADV_DONTNEED, 0, pos - pos % mmap.PAGESIZE)

    def advance(self, n: int) -> None:
        """Note `n` more bytes read anywhere in the file; past WINDOW, drop every page."""
        self._read += n
        if self._read >= WINDOW:
            self.data.madvise(mmap.MADV_DONTNEED)
            self._read = 0

    def close(self) -> None:
        self.data.close()


class _SealedBlobs:
    """Checks each sealed reference as its entry is read: the blob lies in a segment under
    sealed/ and its SHA-256 matches; the first that does not is kept, later ones not read."""

    def __init__(self, directory: Path, found: Found) -> None:
        self.directory = directory
        self.sealed_dir = (directory / SEALED).resolve()
        self.found = found
        self.files: dict[str, _Mapped | None] = {}  # None: an empty segment

    def check(self, sealed: object, seq: int) -> None:
        if not isinstance(sealed, dict) or self.found.sealed_problem:
            return
        for name, ref in sealed.items():
            problem = self._one(name, ref, seq)
            if problem:
                self.found.sealed_problem = (problem[0], seq, problem[1])
                return
            self.found.sealed_blobs += 1

    def _one(self, name: str, ref: object, seq: int) -> tuple[str, str] | None:
        try:
            rel, off, length = ref["file"], ref["offset"], ref["length"]  # type: ignore[index]
            want = ref["sha256_ciphertext"]  # type: ignore[index]
        except (KeyError, TypeError):
            return "entry", f"entry {seq}: malformed sealed reference"
        what = f"sealed blob {name!r} of entry {seq}"
        if rel not in self.files:
            path = (self.directory / rel).resolve()
            if path.parent != self.sealed_dir:
                return "sealed", f"{what}: {rel!r} is outside sealed/"
            try:
                with open(path, "rb") as f:
                    self.files[rel] = _Mapped(f) if f.seek(0, 2) else None
            except FileNotFoundError:
                return "sealed", f"{what}: {rel} is missing"
        mapped = self.files[rel]
        blob = mapped.data[off : off + length] if mapped else b""
        if len(blob) != length:
            return "sealed", f"{what}: {rel} is truncated"
        if mapped:
            mapped.advance(length)
        if hashlib.sha256(blob).hexdigest() != want:
            return "sealed", f"{what} ({rel} at {off}): SHA-256 does not match"
        return None

    def close(self) -> None:
        for mapped in self.files.values():
            if mapped:
                mapped.close()


def scan_range(path: str, start: int, stop: int, first_seq: int, parse_from: int) -> Found:
    """Frame and hash the entries in bytes [start, stop) of `path`; entries with seq >=
    `parse_from` are parsed and checked too. Runs in a worker process for big logs."""
    found = Found(first_seq, end=start)
    if stop <= start:
        return found
    blobs = _SealedBlobs(Path(path).parent, found)
    with open(path, "rb") as f:
        mapped = _Mapped(f)
    view = memoryview(mapped.data)
    try:
        _scan(mapped, view, start, min(stop, len(mapped.data)), parse_from, found, blobs)
    finally:
        view.release()
        mapped.close()
        blobs.close()
    return found


def _scan(
    mapped: _Mapped,
    view: memoryview,
    pos: int,
    stop: int,
    parse_from: int,
    found: Found,
    blobs: _SealedBlobs,
) -> None:
    data = mapped.data
    unpack, find = LEN.unpack_from, data.find
    base = hashlib.sha256(LEAF_PREFIX)
    leaves, offsets, seq = bytearray(), found.offsets, found.first_seq
    # The next '"sealed":' at or after pos, or -1 if there is none before `searched`: looked
    # for once per hit or per window, not once per entry, and never further than a window
    # ahead (a search to the end would map the whole file at once).
    marker, searched = -1, pos
    window_end = pos + WINDOW
    while pos + 4 <= stop:
        (n,) = unpack(data, pos)
        if n > MAX_ENTRY:
            found.bad_length = True
            break
        body_end = pos + 4 + n
        if body_end > stop:
            break
        rec = view[pos + 4 : body_end]
        if marker == -1 and searched < body_end:
            searched = min(stop, max(body_end, pos + WINDOW))
            marker = find(SEALED_KEY, pos, searched)
        sealed = marker != -1 and marker < body_end
        if seq >= parse_from:
            problem = _check_entry(rec, seq, blobs)
        elif sealed:
            problem = _read_sealed(data, view, marker, body_end, rec, seq, blobs)
        else:
            problem = None
        if problem:
            found.problem = (seq, problem)
            break
        if sealed:
            searched = min(stop, body_end + WINDOW)
            marker = find(SEALED_KEY, body_end, searched)
        h = base.copy()
        h.update(rec)
        leaves += h.digest()
        offsets.append(pos)
        pos, seq = body_end, seq + 1
        if pos >= window_end:
            mapped.drop_before(pos)
            window_end = pos + WINDOW
    found.leaves = bytes(leaves)
    found.end = pos


def _check_entry(rec: memoryview, seq: int, blobs: _SealedBlobs) -> str | None:
    """An entry no signature vouches for yet: canonical JSON with its own seq."""
    try:
        entry = orjson.loads(rec)
    except orjson.JSONDecodeError:
        return f"entry {seq}: not valid JSON"
    if not isinstance(entry, dict) or orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) != rec:
        return f"entry {seq}: not canonical JSON"
    if entry.get("seq") != seq:
        return f"entry {seq}: its seq is {entry.get('seq')!r}"
    blobs.check(entry.get("sealed"), seq)
    return None


def _read_sealed(data, view, at: int, end: int, rec, seq: int, blobs: _SealedBlobs) -> str | None:
    """The sealed references of a signed entry: the `sealed` object alone is parsed (it holds
    objects of strings and numbers, so it ends at the first `}}`); else the whole entry."""
    close = data.find(b"}}", at, end)
    if close != -1:
        try:
            sealed = orjson.loads(view[at + len(SEALED_KEY) : close + 2])
        except orjson.JSONDecodeError:
            sealed = None
        if isinstance(sealed, dict) and all(isinstance(r, dict) for r in sealed.values()):
            blobs.check(sealed, seq)
            return None
    try:
        entry = orjson.loads(rec)
    except orjson.JSONDecodeError:
        return f"entry {seq}: not valid JSON"
    blobs.check(entry.get("sealed") if isinstance(entry, dict) else None, seq)
    return None


def scan_entries(
    path: Path, index: Path, start: int, first_seq: int, parse_from: int, total: int
) -> list[Found]:
    """Scan `entries` from byte `start` (seq `first_seq`) to the end, in parallel when big.

    Returns the ranges in order; the caller reads the first problem or short end from them.
    """
    splits = _splits(index, start, first_seq, total)
    if splits is None:
        return [scan_range(str(path), start, total, first_seq, parse_from)]
    bounds = [*splits, (total, -1)]
    ctx = get_context("spawn")  # never fork a process that may run threads
    with ProcessPoolExecutor(len(splits), mp_context=ctx) as pool:
        futures = [
            pool.submit(scan_range, str(path), off, bounds[k + 1][0], seq, parse_from)
            for k, (off, seq) in enumerate(splits)
        ]
        ranges = [f.result() for f in futures]
    for k, found in enumerate(ranges[:-1]):
        if found.problem is None and found.end != bounds[k + 1][0]:
            # `index` does not line up with the frames: scan in one pass instead.
            return [scan_range(str(path), start, total, first_seq, parse_from)]
    return ranges


def _splits(index: Path, start: int, first_seq: int, total: int) -> list[tuple[int, int]] | None:
    """(offset, seq) where each worker starts, from `index`; None to scan in one process."""
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or total - start < PARALLEL_FROM:
        return None
    try:
        with open(index, "rb") as f:
            count = os.fstat(f.fileno()).st_size // OFFSET.size
            if count <= first_seq + workers:
                return None
            step = (count - first_seq) // workers
            seqs = [first_seq + k * step for k in range(workers)]
            offs = [_offset(f.fileno(), s) for s in seqs]
    except OSError:
        return None
    if offs[0] != start or any(b <= a for a, b in pairwise(offs)) or offs[-1] >= total:
        return None
    return list(zip(offs, seqs, strict=True))


def _offset(index_fd: int, seq: int) -> int:
    return OFFSET.unpack(os.pread(index_fd, OFFSET.size, seq * OFFSET.size))[0]
