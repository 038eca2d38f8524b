"""On-disk layout of an audit directory, entry framing, and the read side.

    entries       4-byte big-endian length || canonical JSON, repeated (the log itself)
    checkpoint    the latest signed checkpoint note
    checkpoints   every checkpoint issued, framed like entries
    verifier      the note verifier key of the signing key
    sealed/       AES-256-GCM blobs in segments (see seal.py)
    tree/NN       derived: full-subtree hashes of level NN, 32 bytes each, in index order
    index         derived: 8-byte big-endian offset of each entry in `entries`

Derived files are checked against `entries` and rebuilt when the log is opened for writing;
readers use them only up to the size they cover.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from gateway.audit.merkle import (
    HASH_SIZE,
    NodeGetter,
    build_levels,
    consistency_path,
    inclusion_path,
    leaf_hash,
    levels_getter,
)
from gateway.audit.merkle import root as tree_root
from gateway.audit.periods import Epoch

ENTRIES = "entries"
CHECKPOINT = "checkpoint"
CHECKPOINTS = "checkpoints"
VERIFIER = "verifier"
SEALED = "sealed"
TREE = "tree"
INDEX = "index"
LOCK = "lock"
LEN = struct.Struct(">I")
OFFSET = struct.Struct(">Q")
MAX_ENTRY = 16 * 1024 * 1024  # an entry is metadata; bodies go to sealed/


def frame(data: bytes) -> bytes:
    """Length-prefix one record."""
    return LEN.pack(len(data)) + data


@dataclass
class Scan:
    """Whole records found in a framed file and where the whole part ends."""

    offsets: array  # array('Q') of record start offsets
    end: int  # byte offset just past the last whole record
    total: int  # file length; total - end bytes are a torn tail
    bad_length: bool = False  # the tail starts with a length no record can have: not a torn write


def scan_frames(buf: bytes | memoryview, limit: int = MAX_ENTRY) -> Scan:
    """Walk length prefixes; stop at the first record that is cut off or implausibly long."""
    offsets, pos, total = array("Q"), 0, len(buf)
    unpack = LEN.unpack_from
    while pos + 4 <= total:
        (n,) = unpack(buf, pos)
        if n > limit:
            return Scan(offsets, pos, total, bad_length=True)
        if pos + 4 + n > total:
            break
        offsets.append(pos)
        pos += 4 + n
    return Scan(offsets, pos, total)


def iter_records(buf: bytes | memoryview, scan: Scan) -> Iterator[bytes | memoryview]:
    """The bodies of the whole records of a scan."""
    for off in scan.offsets:
        (n,) = LEN.unpack_from(buf, off)
        yield buf[off + 4 : off + 4 + n]


def file_size(path: Path) -> int:
    """The file's length, or 0 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_file(path: Path) -> bytes:
    """The whole file, or b"" when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def log_chains(directory: Path) -> list[list[Path]]:
    """The audit logs an `[audit] dir` holds, one list per writer, each in writing order.

    Writers: the directory itself (a single-worker run) and each worker N in `{dir}/{N}/`.
    A writer's logs: the one in its own directory (written before `[audit] epoch` was set),
    then one per epoch subdirectory (`YYYY-MM-DD`, `YYYY-Www`, `YYYY-MM`) by the epoch's start.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    workers = sorted(
        (d for d in directory.iterdir() if d.name.isdigit() and d.is_dir()),
        key=lambda d: int(d.name),
    )
    return [chain for writer in [directory, *workers] if (chain := writer_chain(writer))]


def writer_chain(writer: Path) -> list[Path]:
    """One writer's logs in order: its own directory's, then its epochs by start."""
    if not writer.is_dir():
        return []
    own = [writer] if (writer / ENTRIES).is_file() else []
    found = [
        (e, d) for d in writer.iterdir() if (e := Epoch.parse(d.name)) and (d / ENTRIES).is_file()
    ]
    return own + [d for _, d in sorted(found, key=lambda pair: (pair[0].start, pair[0].end))]


def log_dirs(directory: Path) -> list[Path]:
    """Every audit log under an `[audit] dir`: each writer's, in the order of `log_chains`."""
    return [log for chain in log_chains(directory) for log in chain]


class TreeFiles:
    """Full-subtree hashes, one append-only file per level: node(l, i) is 32 bytes at 32*i."""

    def __init__(self, directory: Path, *, writable: bool = False) -> None:
        self.dir = directory / TREE
        self.writable = writable
        self._fds: dict[int, int] = {}

    def _fd(self, level: int) -> int:
        fd = self._fds.get(level)
        if fd is None:
            path = self.dir / f"{level:02d}"
            flags = os.O_RDWR | os.O_CREAT if self.writable else os.O_RDONLY
            fd = os.open(path, flags, 0o644)
            self._fds[level] = fd
        return fd

    def count(self, level: int) -> int:
        """How many hashes level `level` holds."""
        try:
            return os.fstat(self._fd(level)).st_size // HASH_SIZE
        except FileNotFoundError:
            return 0

    def node(self, level: int, index: int) -> bytes:
        data = os.pread(self._fd(level), HASH_SIZE, index * HASH_SIZE)
        if len(data) != HASH_SIZE:
            raise LookupError(f"tree level {level} has no node {index}")
        return data

    def getter(self, size: int) -> NodeGetter:
        """A node getter, refusing nodes beyond a tree of `size` leaves."""

        def node(level: int, index: int) -> bytes:
            if (index + 1) << level > size:
                raise LookupError(f"node ({level}, {index}) is outside size {size}")
            return self.node(level, index)

        return node

    def covers(self, size: int) -> bool:
        """True when every full subtree of a tree of `size` leaves is stored."""
        return all(self.count(lvl) >= size >> lvl for lvl in range(size.bit_length()))

    def write_at(self, level: int, index: int, data: bytes) -> None:
        """Write hashes starting at node `index`, dropping whatever followed."""
        fd = self._fd(level)
        os.ftruncate(fd, index * HASH_SIZE)
        write_all(fd, data, index * HASH_SIZE)

    def truncate(self, counts: dict[int, int]) -> None:
        for level, n in counts.items():
            os.ftruncate(self._fd(level), n * HASH_SIZE)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class Offsets:
    """Entry offsets in `entries`: the first `base` read from `index` when asked for, the rest
    (appended since the log was opened) in memory, so opening does not read the whole index."""

    def __init__(self, index_fd: int, base: int, tail: array) -> None:
        self._fd = index_fd
        self._base = base
        self._tail = tail

    def __len__(self) -> int:
        return self._base + len(self._tail)

    def __getitem__(self, seq: int) -> int:
        if seq >= self._base:
            return self._tail[seq - self._base]
        (off,) = OFFSET.unpack(os.pread(self._fd, OFFSET.size, seq * OFFSET.size))
        return off

    def extend(self, offsets: array) -> None:
        self._tail.extend(offsets)

    def packed_from(self, seq: int) -> bytes:
        """Offsets from `seq` on (not before `base`) as `index` stores them."""
        return b"".join([OFFSET.pack(o) for o in self._tail[seq - self._base :]])


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class LogReader:
    """Read-only access to entries and proofs of an audit directory (CLI, HTTP, tests)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        if not (self.dir / ENTRIES).exists():
            raise FileNotFoundError(f"{self.dir} is not an audit directory (no {ENTRIES})")
        self.tree = TreeFiles(self.dir)
        self._offsets: array | None = None

    def offsets(self) -> array:
        """Entry offsets: from `index` when it lines up with `entries`, else by scanning."""
        if self._offsets is None:
            idx = array("Q")
            idx.frombytes(_whole(read_file(self.dir / INDEX), OFFSET.size))
            if sys.byteorder == "little":
                idx.byteswap()
            with open(self.dir / ENTRIES, "rb") as f:
                if not _index_plausible(f, idx):
                    f.seek(0)  # the check moved the position
                    idx = scan_frames(f.read()).offsets
            self._offsets = idx
        return self._offsets

    @property
    def size(self) -> int:
        return len(self.offsets())

    def read_raw(self, seq: int) -> bytes:
        """The canonical bytes of entry `seq`."""
        offsets = self.offsets()
        if not 0 <= seq < len(offsets):
            raise IndexError(f"no entry {seq}; the log has {len(offsets)} entries")
        with open(self.dir / ENTRIES, "rb") as f:
            f.seek(offsets[seq])
            (n,) = LEN.unpack(f.read(4))
            return f.read(n)

    def read_entry(self, seq: int) -> dict:
        return orjson.loads(self.read_raw(seq))

    def checkpoint(self) -> bytes:
        return read_file(self.dir / CHECKPOINT)

    def node_getter(self, size: int) -> NodeGetter:
        """Stored subtree hashes when they cover `size`, else hashes rebuilt from entries."""
        if size > self.size:
            raise ValueError(f"size {size} is beyond the log's {self.size} entries")
        if self.tree.covers(size):
            return self.tree.getter(size)
        leaves = [leaf_hash(self.read_raw(i)) for i in range(size)]
        return levels_getter(build_levels(leaves))


def inclusion_proof(node: NodeGetter, index: int, size: int) -> dict[str, Any]:
    """An inclusion proof as served: hex hashes, leaf side first."""
    path = inclusion_path(node, index, size)
    return {
        "index": index,
        "size": size,
        "leaf_hash": node(0, index).hex(),
        "path": [p.hex() for p in path],
        "root": tree_root(node, size).hex(),
    }


def consistency_proof(node: NodeGetter, old: int, new: int) -> dict[str, Any]:
    """A consistency proof as served: the tree of size `new` extends that of size `old`."""
    path = consistency_path(node, old, new)
    return {
        "old_size": old,
        "new_size": new,
        "old_root": tree_root(node, old).hex(),
        "new_root": tree_root(node, new).hex(),
        "path": [p.hex() for p in path],
    }


def _whole(data: bytes, width: int) -> bytes:
    return data[: len(data) - len(data) % width]


def _index_plausible(f: BinaryIO, idx: array) -> bool:
    """Cheap check that the derived index matches `entries`: its last frame ends the file."""
    end = os.fstat(f.fileno()).st_size
    if not idx:
        return end == 0
    f.seek(idx[-1])
    head = f.read(4)
    return idx[0] == 0 and len(head) == 4 and idx[-1] + 4 + LEN.unpack(head)[0] == end
