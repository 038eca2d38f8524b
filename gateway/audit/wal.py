"""The write-ahead log: what makes a batch durable with one fdatasync.

A batch writes its entries to `entries` and its sealed blobs to the current segment, then one
record holding both to `wal`, and fdatasyncs only `wal` (two files' fdatasyncs, even in
parallel, cost about twice one on a journaling filesystem: `benches/bench_floor.py`). Signing
a checkpoint fdatasyncs `entries` and the segment first, then empties `wal`, so `wal` holds
only what was committed since their last fdatasync. At start, `replay` writes it all back
where it belongs (what `entries` or a segment lacks, a power cut lost), before recovery reads
them; bytes that are there but differ refuse the start, since a crash cannot cause that.

Bytes that look present are written again too, here and when a signing's fdatasync failed
(`rewrite`): after a failed fdatasync Linux may mark pages clean that never reached the disk,
so a later fdatasync would report success without writing them.

The file keeps its size: emptying it writes a new header (a fresh random generation) and the
next records overwrite the old ones from the start, so a commit's fdatasync writes data blocks
the file already has and no metadata (an fdatasync that grows a file also commits the
journal: about 0.05 ms more here, `benches/bench_floor.py`). Records of an older generation
left behind the newest are not replayed; a random generation cannot be forged by text an
entry quotes.

The file: a header of 8 magic bytes and an 8-byte generation, then records. A record:
4-byte big-endian payload length, CRC-32 of the generation and the payload, then the payload:
where the batch starts in `entries` (8 bytes), the segment number (4) and offset (8) of its
blobs, the length of its entry frames (4), the frames, and the blobs (the rest). A record cut
short, failing its CRC or of another generation ends the replay: it was never acknowledged.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from gateway.audit import seal as sealing
from gateway.audit.store import ENTRIES, write_all

WAL = "wal"
MAGIC = b"gw-wal1\n"
HEADER = struct.Struct(">8sQ")  # magic, generation
HEAD = struct.Struct(">II")  # payload length, CRC-32 of generation and payload
BATCH = struct.Struct(">QIQI")  # entries offset, segment number, segment offset, frames length
GENERATION = struct.Struct(">Q")
VOID = bytes(HEAD.size)  # written over a record that was not committed: the replay ends there


class WalMismatch(Exception):
    """`entries` or a segment holds other bytes where the write-ahead log says what it wrote,
    or the log is not one this version writes."""


def begin(fd: int) -> tuple[int, int]:
    """Empty the log: a fresh generation in its header, in place (its size is kept). Returns
    the generation's CRC seed (for `record`) and where the first record goes. Not synced:
    until a record of the new generation is (which syncs the header with it), the old records
    replay as before, and they only write again what `entries` and the segments hold."""
    generation = int.from_bytes(os.urandom(GENERATION.size))
    write_all(fd, HEADER.pack(MAGIC, generation), 0)
    return _seed(generation), HEADER.size


def _seed(generation: int) -> int:
    """The CRC-32 of the generation, which every record's CRC continues."""
    return zlib.crc32(GENERATION.pack(generation))


def record(seed: int, entries_offset: int, frames: bytes, segment_no: int,
           segment_offset: int, blobs: bytes) -> bytes:  # fmt: skip
    """The record of one batch: its entry frames and its blobs, where each was written."""
    payload = BATCH.pack(entries_offset, segment_no, segment_offset, len(frames)) + frames + blobs
    return HEAD.pack(len(payload), zlib.crc32(payload, seed)) + payload


def void(fd: int, end: int) -> None:
    """End the log at `end`, where a failed batch's record may have been written (perhaps
    durably: its fdatasync may have worked and a streamed body's failed): its header is zeroed
    where the file goes on (its blocks exist, so this needs no space), the file cut where it
    does not, and that is made durable, since the batch's callers were refused."""
    if os.fstat(fd).st_size >= end + len(VOID):
        write_all(fd, VOID, end)
    else:
        os.ftruncate(fd, end)
    os.fdatasync(fd)


def replay(directory: Path) -> tuple[int, int]:
    """Write back what `entries` and the segments lack of the log's committed batches and
    make it durable; returns the bytes written back to `entries` and to segments. The log
    itself is left as it is: the writer `begin`s it anew.

    Raises:
        WalMismatch: a file holds other bytes than the log recorded there.
    """
    try:
        data = (directory / WAL).read_bytes()
    except FileNotFoundError:
        return 0, 0
    return rewrite(directory, data, check=True)


def rewrite(directory: Path, data: bytes, *, check: bool) -> tuple[int, int]:
    """Write every whole record of `data` (a write-ahead log's bytes) where it belongs and
    fsync the files; returns the bytes that were missing from `entries` and from segments.

    Raises:
        WalMismatch: a file ends before a record's place, or (`check`) holds other bytes there.
    """
    fds: dict[str, int] = {}

    def fd_of(name: str) -> int:
        if name not in fds:
            fds[name] = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
        return fds[name]

    entries = sealed = 0
    try:
        for payload in records(data):
            at, segment_no, segment_at, length = BATCH.unpack_from(payload)
            frames = payload[BATCH.size : BATCH.size + length]
            blobs = payload[BATCH.size + length :]
            segment = sealing.segment_name(segment_no)
            entries += _put(fd_of(ENTRIES), ENTRIES, at, frames, check)
            if blobs:
                sealed += _put(fd_of(segment), segment, segment_at, blobs, check)
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)
    return entries, sealed


def records(data: bytes) -> list[bytes]:
    """The payloads of the whole, intact records of the current generation, in order.

    Raises:
        WalMismatch: `data` is neither empty, nor never begun (zeros), nor a log this version
            writes.
    """
    if len(data) < HEADER.size or not any(data[: HEADER.size]):
        return []  # created, never begun: nothing was committed into it
    magic, generation = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WalMismatch(f"{WAL} does not start as a write-ahead log of this version does")
    seed = _seed(generation)
    out, pos = [], HEADER.size
    while pos + HEAD.size <= len(data):
        length, crc = HEAD.unpack_from(data, pos)
        payload = data[pos + HEAD.size : pos + HEAD.size + length]
        if len(payload) < max(length, BATCH.size) or zlib.crc32(payload, seed) != crc:
            break
        out.append(payload)
        pos += HEAD.size + length
    return out


def _put(fd: int, name: str, offset: int, data: bytes, check: bool) -> int:
    """Write `data` at `offset` of the file; returns how many of its bytes the file lacked."""
    size = os.fstat(fd).st_size
    if size < offset:
        raise WalMismatch(f"{name} ends at {size} but the write-ahead log continues it at {offset}")
    whole = size >= offset + len(data)
    if check and whole and os.pread(fd, len(data), offset) != data:
        raise WalMismatch(
            f"{name} holds other bytes at offset {offset} than the write-ahead log recorded "
            "there (not what a crash leaves)"
        )
    write_all(fd, data, offset)
    return 0 if whole else offset + len(data) - size
