"""C2SP signed-note (v1.0.0) with Ed25519 keys: signing, verification and key encodings.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
`— <name> <base64(key id || signature)>`. The key id binds the name and algorithm:
first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # em dash and a space start every signature line


class NoteError(ValueError):
    """A malformed note or key, or a signature that does not verify."""


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"key name {name!r} must be non-empty without spaces or '+'")


def key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> bytes:
    """The 4-byte key id of a key named `name` (alg: signed-note signature type)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key)
    return digest.digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key, as written in the verifier-key form."""

    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, _raw_public(self.public_key))

    def encode(self) -> str:
        """`<name>+<hex key id>+<base64(0x01 || public key)>`."""
        blob = bytes([ALG_ED25519]) + _raw_public(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(blob).decode()}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Parse a verifier key, checking its algorithm and that the id matches the key."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("verifier key must be <name>+<hex id>+<base64 key>")
        name, hex_id, b64 = parts
        _check_name(name)
        try:
            blob = base64.b64decode(b64, validate=True)
            want_id = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError):
            raise NoteError("verifier key has bad hex or base64") from None
        if len(blob) != 33 or blob[0] != ALG_ED25519:
            raise NoteError("verifier key is not an Ed25519 key")
        if len(hex_id) != 8 or key_id(name, blob[1:]) != want_id:
            raise NoteError("verifier key id does not match its name and key")
        return cls(name, Ed25519PublicKey.from_public_bytes(blob[1:]))


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.private_key.public_key())

    def signature_line(self, text: bytes) -> bytes:
        """The signature line for note text (text must end in a newline)."""
        sig = self.private_key.sign(text)
        b64 = base64.b64encode(self.verifier.key_id + sig).decode()
        return f"{SIG_PREFIX}{self.name} {b64}\n".encode()


def sign(text: bytes, signer: Signer) -> bytes:
    """A signed note: text, blank line, one signature line."""
    _check_text(text)
    return text + b"\n" + signer.signature_line(text)


def _check_text(text: bytes) -> None:
    if not text.endswith(b"\n"):
        raise NoteError("note text must end with a newline")
    try:
        text.decode()
    except UnicodeDecodeError:
        raise NoteError("note text is not UTF-8") from None


def open_note(note: bytes, verifier: Verifier) -> bytes:
    """Verify a signed note against one key and return its text.

    Signature lines from other keys are ignored, as the spec allows; at least one line
    from `verifier` must be present and valid.

    Raises:
        NoteError: malformed note, no signature by this key, or a bad signature.
    """
    split = note.rfind(b"\n\n")
    if split < 0 or not note.endswith(b"\n"):
        raise NoteError("not a signed note (no blank line before signatures)")
    text, sigs = note[: split + 1], note[split + 2 :]
    _check_text(text)
    found = False
    for raw in sigs.decode(errors="strict").splitlines():
        if not raw.startswith(SIG_PREFIX):
            raise NoteError(f"malformed signature line {raw[:40]!r}")
        name, _, b64 = raw[len(SIG_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise NoteError("signature is not base64") from None
        if len(blob) < 5:
            raise NoteError("signature too short")
        if name != verifier.name or blob[:4] != verifier.key_id:
            continue
        try:
            verifier.public_key.verify(blob[4:], text)
        except InvalidSignature:
            raise NoteError(f"signature by {name} does not verify") from None
        found = True
    if not found:
        raise NoteError(f"no signature by {verifier.name}+{verifier.key_id.hex()}")
    return text
