"""Sealed originals: bodies encrypted in 64 KiB chunks, so none is ever held whole to seal it.

A sealed blob is a sequence of chunk records, each nonce (12 random bytes) || AES-256-GCM
ciphertext || tag (16 bytes). Every chunk but the last carries exactly CHUNK plaintext bytes;
the last carries 1..CHUNK (0 only for an empty body). The associated data of chunk i is

    b"gateway-seal/1" || blob id (16 random bytes) || i (8 bytes, big-endian) || final (1 byte)

so a chunk cannot be moved to another blob or position, and a blob cut at a chunk boundary
fails (its new last chunk was sealed with final = 0). The entry, written when the body ends,
names the blob id and the SHA-256 of the ciphertext and of the plaintext, which ties the blob
to its entry. Small blobs are appended to segment files `sealed/NNNNNN.seal` (one fdatasync
per batch for all); a body that outgrows SPILL while streaming goes to `sealed/{blob id}.blob`.

Logs written before this format have single-record blobs (associated data = the entry's seq in
ASCII decimal) and no `blob` in their reference; they are still opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_SIZE = 12
TAG_SIZE = 16
CHUNK = 64 * 1024
RECORD = NONCE_SIZE + CHUNK + TAG_SIZE  # a full chunk's record
BLOB_ID_SIZE = 16
DOMAIN = b"gateway-seal/1"
SEGMENT_LIMIT = 256 * 1024 * 1024  # start a new segment past this; keeps files easy to copy
SPILL = 1024 * 1024  # a streamed body's ciphertext past this goes to a file of its own
INDEX = struct.Struct(">Q")


class SealError(ValueError):
    """A blob that is missing, altered, or sealed under another key or entry."""


def chunk_ad(blob_id: bytes, index: int, final: bool) -> bytes:
    return DOMAIN + blob_id + INDEX.pack(index) + (b"\x01" if final else b"\x00")


class ChunkSealer:
    """Encrypts one body as it arrives: `push` returns whole chunk records, `finish` the last.

    Holds at most one chunk of plaintext; hashes both sides as it goes.
    """

    def __init__(self, aead: AESGCM) -> None:
        self.aead = aead
        self.blob_id = os.urandom(BLOB_ID_SIZE)
        self.plain_sha = hashlib.sha256()
        self.cipher_sha = hashlib.sha256()
        self.length = 0  # ciphertext bytes produced
        self.plain_length = 0
        self._buffer = bytearray()
        self._index = 0

    def push(self, data: bytes | memoryview) -> bytes:
        """Records for every chunk known not to be the last (more bytes follow it)."""
        self.plain_sha.update(data)
        self.plain_length += len(data)
        self._buffer += data
        out = []
        while len(self._buffer) > CHUNK:
            out.append(self._seal(bytes(self._buffer[:CHUNK]), final=False))
            del self._buffer[:CHUNK]
        return b"".join(out)

    def finish(self) -> bytes:
        """The final chunk's record."""
        record = self._seal(bytes(self._buffer), final=True)
        self._buffer = bytearray()
        return record

    def _seal(self, plain: bytes, *, final: bool) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        ad = chunk_ad(self.blob_id, self._index, final)
        record = nonce + self.aead.encrypt(nonce, plain, ad)
        self._index += 1
        self.cipher_sha.update(record)
        self.length += len(record)
        return record

    def reference(self) -> dict[str, object]:
        """The entry's fields for this blob, less where it is stored."""
        return {
            "blob": self.blob_id.hex(),
            "chunk": CHUNK,
            "length": self.length,
            "sha256_ciphertext": self.cipher_sha.hexdigest(),
            "sha256_plaintext": self.plain_sha.hexdigest(),
        }


def seal_whole(aead: AESGCM, plain: bytes) -> tuple[bytes, dict[str, object]]:
    """A body already in memory: its blob and reference fields."""
    sealer = ChunkSealer(aead)
    blob = sealer.push(plain) + sealer.finish()
    return blob, sealer.reference()


def open_chunks(aead: AESGCM, ref: dict, records: Iterator[bytes]) -> Iterator[bytes]:
    """Plaintext chunk by chunk from a blob's records (full-size, the last one shorter)."""
    blob_id = bytes.fromhex(ref["blob"])
    pending = next(records, None)
    index = 0
    while pending is not None:
        following = next(records, None)
        final = following is None
        try:
            ad = chunk_ad(blob_id, index, final)
            yield aead.decrypt(pending[:NONCE_SIZE], pending[NONCE_SIZE:], ad)
        except InvalidTag:
            raise SealError(
                f"sealed blob {ref['blob']}: chunk {index} does not decrypt with this key "
                "(altered, moved, cut short, or another key)"
            ) from None
        pending, index = following, index + 1


def open_legacy(aead: AESGCM, seq: int, blob: bytes) -> bytes:
    """A single-record blob of the earlier format, sealed for entry `seq`."""
    try:
        return aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], str(seq).encode())
    except InvalidTag:
        raise SealError(f"sealed blob of entry {seq} does not decrypt with this key") from None


def plain_length(ref: dict) -> int:
    """The original body's size, from its blob's length (each record adds nonce and tag)."""
    records = -(-ref["length"] // RECORD) if "blob" in ref else 1
    return ref["length"] - records * (NONCE_SIZE + TAG_SIZE)


def segment_name(number: int) -> str:
    return f"sealed/{number:06d}.seal"


def spill_name(blob_id: bytes) -> str:
    return f"sealed/{blob_id.hex()}.blob"


def _open_ref(directory: Path, ref: dict) -> BinaryIO:
    if ".." in Path(ref["file"]).parts or not ref["file"].startswith("sealed/"):
        raise SealError(f"sealed file {ref['file']!r} is outside sealed/")
    f = open(directory / ref["file"], "rb")  # noqa: SIM115 (the caller closes it)
    f.seek(ref["offset"])
    return f


def _ranges(f: BinaryIO, ref: dict, step: int) -> Iterator[bytes]:
    """The blob's bytes in pieces of `step`; SealError if the file ends early."""
    left = ref["length"]
    while left:
        data = f.read(min(step, left))
        if not data:
            raise SealError(f"{ref['file']} ends before offset {ref['offset']} + {ref['length']}")
        left -= len(data)
        yield data


def unseal_iter(directory: Path, entry: dict, name: str, key: bytes) -> Iterator[bytes]:
    """The original body `name` of an entry, chunk by chunk, checked against the entry.

    The ciphertext's hash is checked before the first chunk is returned; the plaintext's
    after the last (a mismatch raises then, after the chunks were yielded).

    Raises:
        KeyError: the entry has no sealed blob of that name.
        SealError: the blob is altered, or sealed under another key or entry.
    """
    ref = entry["sealed"][name]
    directory = Path(directory)
    with _open_ref(directory, ref) as f:
        cipher_sha = hashlib.sha256()
        for data in _ranges(f, ref, 1 << 20):
            cipher_sha.update(data)
        if cipher_sha.hexdigest() != ref["sha256_ciphertext"]:
            raise SealError(f"sealed blob {name!r} of entry {entry['seq']} was altered")
        f.seek(ref["offset"])
        aead = AESGCM(key)
        if "blob" in ref:
            chunks = open_chunks(aead, ref, _ranges(f, ref, RECORD))
        else:
            chunks = iter([open_legacy(aead, entry["seq"], b"".join(_ranges(f, ref, 1 << 20)))])
        plain_sha = hashlib.sha256()
        for chunk in chunks:
            plain_sha.update(chunk)
            yield chunk
    if plain_sha.hexdigest() != ref["sha256_plaintext"]:
        raise SealError(f"sealed blob {name!r} of entry {entry['seq']} has the wrong plaintext")


@dataclass
class SealedStream:
    """A body being sealed as it streams: ciphertext in memory up to SPILL, then in its own
    file under sealed/. Hand it to `AuditLog.append` as a sealed body once `finish`ed."""

    sealer: ChunkSealer
    directory: Path
    memory: bytearray
    fd: int = -1  # -1: in memory; >= 0: spilled, open; -2: spilled, committed and closed

    @classmethod
    def start(cls, aead: AESGCM, directory: Path) -> SealedStream:
        return cls(ChunkSealer(aead), directory, bytearray())

    @property
    def file(self) -> str | None:
        """Its own file under the log directory, once spilled."""
        return spill_name(self.sealer.blob_id) if self.fd != -1 else None

    def add(self, data: bytes | memoryview) -> None:
        self._keep(self.sealer.push(data))

    def finish(self) -> None:
        self._keep(self.sealer.finish())

    def _keep(self, records: bytes) -> None:
        if not records:
            return
        if self.fd < 0 and len(self.memory) + len(records) <= SPILL:
            self.memory += records
            return
        if self.fd < 0:
            path = self.directory / spill_name(self.sealer.blob_id)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            records, self.memory = bytes(self.memory) + records, bytearray()
        view = memoryview(records)
        while view:
            view = view[os.write(self.fd, view) :]

    def move_to(self, directory: Path) -> None:
        """Recorded in another log than it began in (a new epoch started meanwhile): its
        spilled file moves to that log's sealed/ (same file system: a rename)."""
        if directory != self.directory and self.fd != -1:
            os.replace(self.directory / spill_name(self.sealer.blob_id), directory / self.file)
        self.directory = directory

    def close(self) -> None:
        """Committed (its file is durable): release the descriptor, keep `file`."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -2

    def discard(self) -> None:
        """Not recorded after all (the exchange broke off): drop its file."""
        if self.fd >= 0:
            os.close(self.fd)
        if self.fd != -1:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / spill_name(self.sealer.blob_id))
        self.fd = -1
