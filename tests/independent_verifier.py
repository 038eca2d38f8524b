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
