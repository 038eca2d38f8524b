"""The witness: a process apart from the gateways, with its own database role and Ed25519 key,
that cosigns (C2SP tlog-cosignature/v1) each checkpoint in the central store that is consistent
with the last one it cosigned for that origin.

For each new checkpoint it checks the log's signature (with the origin's verifier key as first
shipped, or a pinned one), that the entries the store holds hash to its root, and the RFC 9162
consistency proof from the last checkpoint it cosigned. A checkpoint that fails gets no
cosignature: the refusal is logged and recorded in `audit_refusals`, where the replica that
shipped it finds it (its `gateway_audit_ship_refused_total` and a health warning).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import struct
import time
from dataclasses import dataclass, field

import asyncpg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit.central_keys import one_line
from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.merkle import (
    ProofError,
    build_levels,
    consistency_path,
    leaf_hash,
    levels_getter,
    verify_consistency,
)
from gateway.audit.merkle import root as tree_root
from gateway.audit.note import SIG_PREFIX, NoteError, Signer, Verifier, key_id

log = logging.getLogger("gateway.audit.witness")

ALG_COSIGNATURE_V1 = 0x04
TIMESTAMP = struct.Struct(">Q")


def _raw(verifier: Verifier) -> bytes:
    return verifier.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def cosigner_vkey(signer: Signer) -> str:
    """The witness's verifier key (signed-note vkey form with signature type 0x04)."""
    public = _raw(signer.verifier)
    blob = bytes([ALG_COSIGNATURE_V1]) + public
    hex_id = key_id(signer.name, public, ALG_COSIGNATURE_V1).hex()
    return f"{signer.name}+{hex_id}+{base64.b64encode(blob).decode()}"


def signed_message(body: bytes, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body


def cosign(signer: Signer, body: bytes, timestamp: int) -> str:
    """The note signature line cosigning a checkpoint body at `timestamp` (POSIX seconds)."""
    signature = signer.private_key.sign(signed_message(body, timestamp))
    kid = key_id(signer.name, _raw(signer.verifier), ALG_COSIGNATURE_V1)
    blob = kid + TIMESTAMP.pack(timestamp) + signature
    return f"{SIG_PREFIX}{signer.name} {base64.b64encode(blob).decode()}\n"


def open_cosignature(line: str, body: bytes, vkey: str) -> int:
    """Verify one cosignature line on a checkpoint body with a witness vkey; its timestamp.

    Raises:
        NoteError: malformed, another key, or a signature that does not verify.
    """
    parts = vkey.strip().split("+", 2)
    try:
        name, hex_id, blob = parts[0], bytes.fromhex(parts[1]), base64.b64decode(parts[2])
    except (IndexError, ValueError, binascii.Error):
        raise NoteError("witness key must be <name>+<hex id>+<base64 key>") from None
    if len(blob) != 33 or blob[0] != ALG_COSIGNATURE_V1:
        raise NoteError("witness key is not an Ed25519 cosignature/v1 key")
    if key_id(name, blob[1:], ALG_COSIGNATURE_V1) != hex_id:
        raise NoteError("witness key id does not match its name and key")
    if not line.startswith(SIG_PREFIX):
        raise NoteError("not a signature line")
    got_name, _, b64 = line[len(SIG_PREFIX) :].strip().partition(" ")
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise NoteError("cosignature is not base64") from None
    if got_name != name or raw[:4] != hex_id or len(raw) != 4 + 8 + 64:
        raise NoteError(f"not a cosignature by {name}")
    (timestamp,) = TIMESTAMP.unpack(raw[4:12])
    try:
        Ed25519PublicKey.from_public_bytes(blob[1:]).verify(
            raw[12:], signed_message(body, timestamp)
        )
    except InvalidSignature:
        raise NoteError(f"cosignature by {name} does not verify") from None
    return timestamp


@dataclass
class _Origin:
    """What the witness remembers of one origin between rounds."""

    leaves: list[bytes] = field(default_factory=list)


class Witness:
    def __init__(
        self,
        url: str,
        signer: Signer,
        pins: dict[str, Verifier],
        default: Verifier | None = None,
    ) -> None:
        self.url = url
        self.signer = signer
        self.pins = pins  # origin -> the log's verifier key the operator pinned
        self.default = default  # pinned for every origin not in pins
        self.origins: dict[str, _Origin] = {}

    async def round(self, db: asyncpg.Connection) -> tuple[int, int]:
        """Check every origin once; returns (cosigned, refused)."""
        cosigned = refused = 0
        for origin, stored_key in await db.fetch("SELECT origin, verifier FROM audit_origins"):
            c, r = await self._origin(db, origin, stored_key)
            cosigned, refused = cosigned + c, refused + r
        return cosigned, refused

    async def _origin(
        self, db: asyncpg.Connection, origin: str, stored_key: str
    ) -> tuple[int, int]:
        name = self.signer.name
        last = await db.fetchrow(
            "SELECT c.size, c.root FROM audit_cosignatures s JOIN audit_checkpoints c "
            "USING (origin, size) WHERE s.origin = $1 AND s.witness = $2 "
            "ORDER BY c.size DESC LIMIT 1",
            origin,
            name,
        )
        last_size, last_root = (last["size"], bytes(last["root"])) if last else (0, b"")
        new = await db.fetch(
            "SELECT size, root, note FROM audit_checkpoints WHERE origin = $1 AND size > $2 "
            "AND NOT EXISTS (SELECT 1 FROM audit_refusals r WHERE r.origin = $1 "
            "AND r.size = audit_checkpoints.size AND r.refused_by = $3) ORDER BY size",
            origin,
            last_size,
            name,
        )
        if not new:
            return 0, 0
        state = self.origins.setdefault(origin, _Origin())
        await self._load_leaves(db, origin, state, new[-1]["size"])
        levels = build_levels(state.leaves)
        node = levels_getter(levels)
        cosigned = refused = 0
        for row in new:
            size, note = row["size"], bytes(row["note"])
            try:
                verifier = self.pins.get(origin) or self.default or Verifier.parse(stored_key)
                checkpoint = Checkpoint.open(note, verifier, origin)
                if checkpoint.size != size or checkpoint.root != bytes(row["root"]):
                    raise CheckpointError("the signed note does not say the stored size and root")
                if size > len(state.leaves) or tree_root(node, size) != checkpoint.root:
                    raise ProofError("the entries held do not hash to this checkpoint's root")
                if last_size:
                    proof = consistency_path(node, last_size, size)
                    verify_consistency(last_size, size, proof, last_root, checkpoint.root)
            except (CheckpointError, ProofError, NoteError) as exc:
                log.error("witness %s refuses %s size %d: %s", name, origin, size, exc)
                await db.execute(
                    "INSERT INTO audit_refusals (origin, size, refused_by, reason) "
                    "VALUES ($1, $2, $3, $4)",
                    origin,
                    size,
                    name,
                    str(exc)[:500],
                )
                refused += 1
                continue
            line = cosign(self.signer, checkpoint.body(), int(time.time()))
            await db.execute(
                "INSERT INTO audit_cosignatures (origin, size, witness, signature) "
                "VALUES ($1, $2, $3, $4)",
                origin,
                size,
                name,
                line,
            )
            cosigned += 1
            last_size, last_root = size, checkpoint.root
        return cosigned, refused

    async def _load_leaves(
        self, db: asyncpg.Connection, origin: str, state: _Origin, size: int
    ) -> None:
        rows = await db.fetch(
            "SELECT entry FROM audit_entries WHERE origin = $1 AND seq >= $2 AND seq < $3 "
            "ORDER BY seq",
            origin,
            len(state.leaves),
            size,
        )
        state.leaves.extend(leaf_hash(bytes(r["entry"])) for r in rows)

    async def run(self, interval_s: float, once: bool) -> int:
        """Rounds until stopped; with `once`, one round. Returns the exit code."""
        while True:
            try:
                db = await asyncpg.connect(self.url, timeout=5)
                try:
                    cosigned, refused = await self.round(db)
                finally:
                    await db.close()
                if cosigned or refused:
                    log.info("witness round", extra={"cosigned": cosigned, "refused": refused})
                if once:
                    print(f"cosigned {cosigned}, refused {refused}", flush=True)
                    return 1 if refused else 0
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.error("witness: central store: %s", one_line(exc))
                if once:
                    return 1
            await asyncio.sleep(interval_s)
