"""C2SP tlog-checkpoint bodies: origin, decimal tree size, base64 root hash, one per line."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from gateway.audit.merkle import HASH_SIZE
from gateway.audit.note import NoteError, Signer, Verifier, open_note, sign


class CheckpointError(ValueError):
    """A checkpoint that cannot be parsed or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        """The note text; no extension lines are written."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()

    def sign(self, signer: Signer) -> bytes:
        return sign(self.body(), signer)

    @classmethod
    def parse_body(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint body; extension lines after the root are allowed and ignored."""
        lines = text.decode().split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise CheckpointError("checkpoint body needs origin, size and root lines")
        origin, size, root = lines[0], lines[1], lines[2]
        if not origin:
            raise CheckpointError("checkpoint origin is empty")
        if not size.isdigit() or (size != "0" and size.startswith("0")) or not size.isascii():
            raise CheckpointError(f"checkpoint size {size[:30]!r} is not a decimal number")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise CheckpointError("checkpoint root is not base64") from None
        if len(digest) != HASH_SIZE:
            raise CheckpointError("checkpoint root is not a SHA-256 hash")
        return cls(origin, int(size), digest)

    @classmethod
    def open(cls, note: bytes, verifier: Verifier, origin: str | None = None) -> Checkpoint:
        """Verify a signed checkpoint note and parse it.

        Raises:
            CheckpointError: bad signature, bad body, or a different origin than expected.
        """
        try:
            cp = cls.parse_body(open_note(note, verifier))
        except (NoteError, UnicodeDecodeError) as exc:
            raise CheckpointError(str(exc)) from None
        if origin is not None and cp.origin != origin:
            raise CheckpointError(f"checkpoint origin {cp.origin!r} is not {origin!r}")
        return cp
