"""The chunked sealing construction: round trips, and every way a blob can be tampered with."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from independent_verifier import open_sealed

from gateway.audit.seal import (
    CHUNK,
    RECORD,
    SPILL,
    ChunkSealer,
    SealedStream,
    SealError,
    plain_length,
    seal_whole,
    unseal_iter,
)

KEY = bytes(range(32))


def stored(tmp_path: Path, blob: bytes, ref: dict) -> dict:
    """Write a blob as a segment would hold it; the entry that names it."""
    (tmp_path / "sealed").mkdir(exist_ok=True)
    (tmp_path / "sealed" / "000000.seal").write_bytes(b"pad" + blob)
    return {"seq": 7, "sealed": {"response": {"file": "sealed/000000.seal", "offset": 3, **ref}}}


def opened(tmp_path: Path, entry: dict) -> bytes:
    return b"".join(unseal_iter(tmp_path, entry, "response", KEY))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5])
def test_round_trip_at_chunk_boundaries(tmp_path: Path, size: int) -> None:
    plain = os.urandom(size)
    blob, ref = seal_whole(AESGCM(KEY), plain)
    entry = stored(tmp_path, blob, ref)
    assert opened(tmp_path, entry) == plain
    assert open_sealed(str(tmp_path), entry["sealed"]["response"], KEY) == plain
    assert plain_length(entry["sealed"]["response"]) == size
    assert ref["sha256_plaintext"] == hashlib.sha256(plain).hexdigest()


def test_pushed_in_pieces_equals_sealed_whole_in_structure(tmp_path: Path) -> None:
    plain = os.urandom(2 * CHUNK + 100)
    sealer = ChunkSealer(AESGCM(KEY))
    blob = b"".join(sealer.push(plain[i : i + 999]) for i in range(0, len(plain), 999))
    blob += sealer.finish()
    assert len(blob) == 2 * RECORD + 12 + 100 + 16
    assert opened(tmp_path, stored(tmp_path, blob, sealer.reference())) == plain


def _resealed(blob: bytes, ref: dict) -> dict:
    """The reference with hashes matching a tampered blob (as an attacker would rewrite them
    if the entry were not signed), so only the AEAD stands in the way."""
    return {**ref, "length": len(blob), "sha256_ciphertext": hashlib.sha256(blob).hexdigest()}


def test_cut_at_a_chunk_boundary_is_refused(tmp_path: Path) -> None:
    blob, ref = seal_whole(AESGCM(KEY), os.urandom(3 * CHUNK))
    cut = blob[: 2 * RECORD]
    with pytest.raises(SealError, match="chunk 1"):
        opened(tmp_path, stored(tmp_path, cut, _resealed(cut, ref)))


def test_swapped_chunks_are_refused(tmp_path: Path) -> None:
    blob, ref = seal_whole(AESGCM(KEY), os.urandom(3 * CHUNK + 1))
    swapped = blob[RECORD : 2 * RECORD] + blob[:RECORD] + blob[2 * RECORD :]
    with pytest.raises(SealError, match="chunk 0"):
        opened(tmp_path, stored(tmp_path, swapped, _resealed(swapped, ref)))


def test_a_blob_under_another_blob_id_or_key_is_refused(tmp_path: Path) -> None:
    blob, ref = seal_whole(AESGCM(KEY), b"original body")
    other_id = {**ref, "blob": os.urandom(16).hex()}
    with pytest.raises(SealError):
        opened(tmp_path, stored(tmp_path, blob, other_id))
    other_key, ref2 = seal_whole(AESGCM(os.urandom(32)), b"original body")
    with pytest.raises(SealError):
        opened(tmp_path, stored(tmp_path, other_key, ref2))


def test_altered_ciphertext_is_named_before_any_plaintext(tmp_path: Path) -> None:
    blob, ref = seal_whole(AESGCM(KEY), os.urandom(CHUNK + 9))
    bad = bytearray(blob)
    bad[20] ^= 1
    chunks = unseal_iter(tmp_path, stored(tmp_path, bytes(bad), ref), "response", KEY)
    with pytest.raises(SealError, match="altered"):
        next(chunks)


def test_a_legacy_single_record_blob_still_opens(tmp_path: Path) -> None:
    """Logs written before chunked sealing: one AES-GCM record, the entry's seq as AD."""
    nonce = os.urandom(12)
    blob = nonce + AESGCM(KEY).encrypt(nonce, b"old body", b"7")
    ref = {
        "length": len(blob),
        "sha256_ciphertext": hashlib.sha256(blob).hexdigest(),
        "sha256_plaintext": hashlib.sha256(b"old body").hexdigest(),
    }
    entry = stored(tmp_path, blob, ref)
    assert opened(tmp_path, entry) == b"old body"
    assert plain_length(entry["sealed"]["response"]) == 8
    with pytest.raises(SealError):
        opened(tmp_path, {**entry, "seq": 8})


def test_a_stream_spills_to_its_own_file_past_the_limit_and_discard_removes_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "sealed").mkdir()
    stream = SealedStream.start(AESGCM(KEY), tmp_path)
    piece = os.urandom(CHUNK // 2)
    while stream.file is None:
        stream.add(piece)
        assert len(stream.memory) <= SPILL  # never more than SPILL of it in memory
    assert len(stream.memory) == 0 and (tmp_path / stream.file).is_file()
    stream.discard()
    assert list((tmp_path / "sealed").iterdir()) == []
