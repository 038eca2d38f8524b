"""RFC 9162 and C2SP signed-note checks written from the specs, independent of gateway.audit.

What a third party holding only the report files and the verifier key would run.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def fold(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2, written here independently of gateway.audit."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        assert sn != 0
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn & 1 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return r


def open_note(note: str, verifier: str) -> tuple[str, int, bytes]:
    """Check the note's Ed25519 signature with the verifier key; its origin, size and root."""
    name, key_id, key = verifier.split("+", 2)
    public = base64.b64decode(key)
    assert public[0] == 1
    text, signatures = note.split("\n\n", 1)
    text += "\n"
    line = next(s for s in signatures.splitlines() if s.startswith(f"\u2014 {name} "))
    blob = base64.b64decode(line.rsplit(" ", 1)[1])
    assert blob[:4].hex() == key_id
    Ed25519PublicKey.from_public_bytes(public[1:]).verify(blob[4:], text.encode())
    origin, size, root = text.splitlines()
    return origin, int(size), base64.b64decode(root)


def open_sealed(directory: str, ref: dict, sealing_key: bytes) -> bytes:
    """A chunked sealed blob, read as docs/audit-format.md describes it: hash, then decrypt."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with open(f"{directory}/{ref['file']}", "rb") as f:
        f.seek(ref["offset"])
        blob = f.read(ref["length"])
    assert len(blob) == ref["length"]
    assert hashlib.sha256(blob).hexdigest() == ref["sha256_ciphertext"]
    record = 12 + ref["chunk"] + 16
    records = [blob[i : i + record] for i in range(0, len(blob), record)]
    blob_id = bytes.fromhex(ref["blob"])
    plain = b""
    for i, rec in enumerate(records):
        final = b"\x01" if i == len(records) - 1 else b"\x00"
        ad = b"gateway-seal/1" + blob_id + i.to_bytes(8, "big") + final
        plain += AESGCM(sealing_key).decrypt(rec[:12], rec[12:], ad)
    assert hashlib.sha256(plain).hexdigest() == ref["sha256_plaintext"]
    return plain


def check_epoch_link(previous_note: bytes, first_entry: dict, verifier: str) -> None:
    """An epoch's first entry commits to the previous log's final checkpoint, as
    docs/audit-format.md (Epochs) describes it: the note verifies and its fields match."""
    origin, size, root = open_note(previous_note.decode(), verifier)
    link = first_entry["previous"]
    assert first_entry["type"] == "epoch.started" and first_entry["seq"] == 0
    assert link["note"].encode() == previous_note
    assert link["note_sha256"] == hashlib.sha256(previous_note).hexdigest()
    assert (link["origin"], link["size"], base64.b64decode(link["root"])) == (origin, size, root)
