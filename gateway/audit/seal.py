"""Sealed originals: AES-256-GCM blobs appended to segment files under `sealed/`.

One blob is nonce (12 random bytes) || ciphertext || tag (16 bytes). The associated data is
the entry's seq in ASCII decimal, so a blob cannot be moved to another entry. Blobs are
appended to `sealed/NNNNNN.seal` segments; the entry records file, offset and length, so one
fdatasync per batch covers all blobs of the batch instead of one file (and fsync) per blob.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.audit.keys import read_secret_key

NONCE_SIZE = 12
SEGMENT_LIMIT = 256 * 1024 * 1024  # start a new segment past this; keeps files easy to copy


class SealError(ValueError):
    """A blob that is missing, altered, or sealed under another key or entry."""


def associated_data(seq: int) -> bytes:
    return str(seq).encode()


def seal(aead: AESGCM, seq: int, plaintext: bytes) -> bytes:
    """Encrypt one original body for entry `seq`."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, plaintext, associated_data(seq))


def open_blob(aead: AESGCM, seq: int, blob: bytes) -> bytes:
    """Decrypt and authenticate a blob sealed for entry `seq`."""
    try:
        return aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], associated_data(seq))
    except InvalidTag:
        raise SealError(f"sealed blob of entry {seq} does not decrypt with this key") from None


def segment_name(number: int) -> str:
    return f"sealed/{number:06d}.seal"


def read_blob(directory: Path, ref: dict) -> bytes:
    """Read the bytes an entry's sealed reference points at."""
    path = directory / ref["file"]
    if ".." in Path(ref["file"]).parts or not ref["file"].startswith("sealed/"):
        raise SealError(f"sealed file {ref['file']!r} is outside sealed/")
    with open(path, "rb") as f:
        f.seek(ref["offset"])
        data = f.read(ref["length"])
    if len(data) != ref["length"]:
        raise SealError(f"{ref['file']} ends before offset {ref['offset']} + {ref['length']}")
    return data


def unseal(directory: Path, entry: dict, name: str, sealing_key: Path) -> bytes:
    """The original body `name` of an entry, checked against the hashes in the entry.

    Raises:
        KeyError: the entry has no sealed blob of that name.
        SealError: the blob is altered, or sealed under another key or entry.
    """
    ref = entry["sealed"][name]
    blob = read_blob(Path(directory), ref)
    if hashlib.sha256(blob).hexdigest() != ref["sha256_ciphertext"]:
        raise SealError(f"sealed blob {name!r} of entry {entry['seq']} was altered")
    plain = open_blob(AESGCM(read_secret_key(sealing_key)), entry["seq"], blob)
    if hashlib.sha256(plain).hexdigest() != ref["sha256_plaintext"]:
        raise SealError(f"sealed blob {name!r} of entry {entry['seq']} has the wrong plaintext")
    return plain
