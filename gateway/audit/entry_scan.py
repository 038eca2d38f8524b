"""One pass over `entries`: framing, leaf hashes, and the checks that need an entry's JSON.

The signed checkpoint covers the exact bytes of every entry below its size, so those entries
are checked by their hashes alone and parsed only when they name sealed blobs (whose hashes
must then be checked). Entries past the checkpoint are vouched for by nothing yet: each is
parsed and must be canonical JSON carrying its own seq.

Big logs are split at offsets from `index` into one range per core, scanned by worker
processes; the ranges must tile `entries` exactly (each range's frames end where the next
begins), otherwise the scan is redone in one process, so a wrong `index` costs time only.
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
from gateway.audit.store import LEN, MAX_ENTRY, OFFSET

PARALLEL_FROM = 64 * 1024 * 1024  # below this many bytes, starting workers costs more
SEALED_KEY = b'"sealed":'


@dataclass
class Found:
    """What one range held: leaf hashes (concatenated), offsets, sealed references, and the
    first problem as (seq, message), or where framing stopped short of the range's end."""

    first_seq: int
    leaves: bytes = b""
    offsets: array = field(default_factory=lambda: array("Q"))
    refs: list[tuple[int, str, dict]] = field(default_factory=list)
    problem: tuple[int, str] | None = None
    end: int = 0
    bad_length: bool = False

    @property
    def count(self) -> int:
        return len(self.offsets)


def scan_range(path: str, start: int, stop: int, first_seq: int, parse_from: int) -> Found:
    """Frame and hash the entries in bytes [start, stop) of `path`; entries with seq >=
    `parse_from` are parsed and checked too. Runs in a worker process for big logs."""
    found = Found(first_seq, end=start)
    if stop <= start:
        return found
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            _scan(data, view, start, min(stop, len(data)), parse_from, found)
        finally:
            view.release()
    return found


def _scan(data, view: memoryview, pos: int, stop: int, parse_from: int, found: Found) -> None:
    unpack, find = LEN.unpack_from, data.find
    base = hashlib.sha256(LEAF_PREFIX)
    leaves, offsets, seq = [], found.offsets, found.first_seq
    marker = find(SEALED_KEY, pos, stop)  # searched once per hit, not once per entry
    while pos + 4 <= stop:
        (n,) = unpack(data, pos)
        if n > MAX_ENTRY:
            found.bad_length = True
            break
        body_end = pos + 4 + n
        if body_end > stop:
            break
        rec = view[pos + 4 : body_end]
        sealed = marker != -1 and marker < body_end
        if seq >= parse_from:
            problem = _check_entry(rec, seq, found)
        elif sealed:
            problem = _read_sealed(data, view, marker, body_end, rec, seq, found)
        else:
            problem = None
        if problem:
            found.problem = (seq, problem)
            break
        if sealed:
            marker = find(SEALED_KEY, body_end, stop)
        h = base.copy()
        h.update(rec)
        leaves.append(h.digest())
        offsets.append(pos)
        pos, seq = body_end, seq + 1
    found.leaves = b"".join(leaves)
    found.end = pos


def _check_entry(rec: memoryview, seq: int, found: Found) -> str | None:
    """An entry no signature vouches for yet: canonical JSON with its own seq."""
    try:
        entry = orjson.loads(rec)
    except orjson.JSONDecodeError:
        return f"entry {seq}: not valid JSON"
    if not isinstance(entry, dict) or orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) != rec:
        return f"entry {seq}: not canonical JSON"
    if entry.get("seq") != seq:
        return f"entry {seq}: its seq is {entry.get('seq')!r}"
    _add_refs(entry.get("sealed"), seq, found)
    return None


def _read_sealed(data, view, at: int, end: int, rec, seq: int, found: Found) -> str | None:
    """The sealed references of a signed entry: the `sealed` object alone is parsed (it holds
    objects of strings and numbers, so it ends at the first `}}`); else the whole entry."""
    close = data.find(b"}}", at, end)
    if close != -1:
        try:
            sealed = orjson.loads(view[at + len(SEALED_KEY) : close + 2])
        except orjson.JSONDecodeError:
            sealed = None
        if isinstance(sealed, dict) and all(isinstance(r, dict) for r in sealed.values()):
            _add_refs(sealed, seq, found)
            return None
    try:
        entry = orjson.loads(rec)
    except orjson.JSONDecodeError:
        return f"entry {seq}: not valid JSON"
    _add_refs(entry.get("sealed") if isinstance(entry, dict) else None, seq, found)
    return None


def _add_refs(sealed: object, seq: int, found: Found) -> None:
    if isinstance(sealed, dict):
        found.refs.extend((seq, name, ref) for name, ref in sealed.items())


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
