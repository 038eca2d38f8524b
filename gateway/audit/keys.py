"""Key files: the Ed25519 signing key, the AES-256-GCM sealing key and the masking HMAC key.

signing.key holds one line in the signed-note signer form
`PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || 32-byte Ed25519 seed)>`;
sealing.key and masking.key hold one line of base64 of 32 random bytes. All are mode 0600
and written atomically, so a crash never leaves half a key behind.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from gateway.audit.note import ALG_ED25519, NoteError, Signer

SECRET_SIZE = 32
KEY_FILES = ("signing.key", "sealing.key", "masking.key")


class KeyFileError(ValueError):
    """A key file is missing, malformed, or unsafe; the message never includes key bytes."""


def write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file via a temporary name, fsync, rename and fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read_line(path: Path) -> str:
    try:
        st = path.stat()
        text = path.read_text().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is readable by others; chmod 600 it")
    return text


def encode_signing_key(signer: Signer) -> str:
    seed = signer.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    blob = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
    return f"PRIVATE+KEY+{signer.name}+{signer.verifier.key_id.hex()}+{blob}"


def read_signing_key(path: Path) -> Signer:
    """Load a signer from a signing.key file."""
    parts = _read_line(path).split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise KeyFileError(f"{path} is not a PRIVATE+KEY+<name>+<id>+<key> signing key")
    name, hex_id, b64 = parts[2:]
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise KeyFileError(f"{path}: key is not base64") from None
    if len(blob) != 33 or blob[0] != ALG_ED25519:
        raise KeyFileError(f"{path}: not an Ed25519 key")
    try:
        signer = Signer(name, Ed25519PrivateKey.from_private_bytes(blob[1:]))
    except NoteError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    if signer.verifier.key_id.hex() != hex_id:
        raise KeyFileError(f"{path}: key id does not match the key")
    return signer


def read_secret_key(path: Path) -> bytes:
    """Load a 32-byte symmetric key (sealing or masking) from its base64 file."""
    try:
        key = base64.b64decode(_read_line(path), validate=True)
    except binascii.Error:
        raise KeyFileError(f"{path}: key is not base64") from None
    if len(key) != SECRET_SIZE:
        raise KeyFileError(f"{path}: key must be {SECRET_SIZE} bytes")
    return key


def init_keys(directory: Path, name: str, *, force: bool = False) -> Signer:
    """Create signing.key, sealing.key and masking.key in `directory`.

    Raises:
        FileExistsError: a key file exists and `force` is false.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = [f for f in KEY_FILES if (directory / f).exists()]
    if existing and not force:
        raise FileExistsError(f"{directory / existing[0]} exists; use --force to replace keys")
    signer = Signer(name, Ed25519PrivateKey.generate())
    write_private(directory / "signing.key", (encode_signing_key(signer) + "\n").encode())
    for fname in KEY_FILES[1:]:
        secret = base64.b64encode(os.urandom(SECRET_SIZE)) + b"\n"
        write_private(directory / fname, secret)
    return signer
