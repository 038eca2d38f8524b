"""Reading the central audit store back: each origin as an ordinary audit directory.

`gateway audit verify --store URL` and `gateway evidence --store URL` need nothing but the
store: every origin's entries, checkpoints, verifier key and sealed bytes are written out in the
local on-disk layout (the bytes exactly as shipped) and checked by the same code that checks a
local log, so a central copy can never pass where the original would fail. Origins that name an
epoch (`{writer}/{epoch}`) are laid out as their writer keeps them (one directory per writer,
an epoch's log in `{epoch}/` below it), so the chain of epochs is checked too (chain.py).
Cosignatures are reported beside each origin: which checkpoint sizes a witness cosigned, and
whether the cosignature verifies with a witness key the auditor gives.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import orjson

from gateway.audit.central_keys import one_line
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.note import NoteError
from gateway.audit.periods import Epoch
from gateway.audit.shipper import PLAIN_PATH
from gateway.audit.store import CHECKPOINT, CHECKPOINTS, ENTRIES, SEALED, VERIFIER, frame
from gateway.audit.witness import open_cosignature

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
COSIGNATURES = "cosignatures.json"  # written beside an exported origin's log, for evidence


class CentralError(Exception):
    """The store cannot be read, or holds something no local log could be made from."""


@dataclass
class Cosigned:
    size: int
    witness: str
    verified: bool | None  # None: no key given for this witness


@dataclass
class ExportedOrigin:
    origin: str
    directory: Path
    writer: Path  # the directory holding its writer's chain of logs (store.writer_chain)
    verifier: str  # as first shipped
    checkpoint_size: int
    cosigned: list[Cosigned] = field(default_factory=list)

    def witnessed(self) -> Cosigned | None:
        """The largest checkpoint a witness cosigned (a verified one if any key was given)."""
        good = [c for c in self.cosigned if c.verified is not False]
        return max(good, key=lambda c: c.size, default=None)


def writer_epoch(origin: str) -> tuple[str, str | None]:
    """The writer an origin belongs to and the epoch it names (None: a log of its own)."""
    writer, _, last = origin.rpartition("/")
    return (writer, last) if writer and Epoch.parse(last) else (origin, None)


def directory_name(origin: str) -> str:
    """A file name for an origin: readable, and distinct for distinct origins."""
    digest = hashlib.sha256(origin.encode()).hexdigest()[:8]
    return f"{UNSAFE.sub('_', origin).strip('_')[:80]}-{digest}"


def export(url: str, into: Path, witness_keys: list[str] | None = None) -> list[ExportedOrigin]:
    """Write every origin of the store under `into`; returns them with their cosignatures."""
    try:
        return asyncio.run(_export(url, into, witness_keys or []))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise CentralError(f"central store: {one_line(exc)}") from None


async def _export(url: str, into: Path, witness_keys: list[str]) -> list[ExportedOrigin]:
    db = await asyncpg.connect(url, timeout=10)
    try:
        out = []
        for origin, verifier in await db.fetch(
            "SELECT origin, verifier FROM audit_origins ORDER BY origin"
        ):
            writer, epoch = writer_epoch(origin)
            out.append(await _one(db, origin, verifier, into / directory_name(writer), epoch))
            await _cosignatures(db, out[-1], witness_keys)
            cosigned = [asdict(c) for c in out[-1].cosigned]
            (out[-1].directory / COSIGNATURES).write_bytes(orjson.dumps(cosigned))
        return out
    finally:
        await db.close()


async def _one(
    db: asyncpg.Connection, origin: str, verifier: str, writer: Path, epoch: str | None
) -> ExportedOrigin:
    d = writer / epoch if epoch else writer
    (d / SEALED).mkdir(parents=True, exist_ok=True)
    (d / VERIFIER).write_text(verifier + "\n")
    with open(d / ENTRIES, "wb") as f:  # noqa: ASYNC230 (a one-shot CLI loop)
        async with db.transaction():  # a cursor needs one; nothing is written
            async for row in db.cursor(
                "SELECT entry FROM audit_entries WHERE origin = $1 ORDER BY seq", origin
            ):
                f.write(frame(bytes(row["entry"])))
    notes = [
        bytes(r["note"])
        for r in await db.fetch(
            "SELECT note FROM audit_checkpoints WHERE origin = $1 ORDER BY size", origin
        )
    ]
    (d / CHECKPOINTS).write_bytes(b"".join(frame(n) for n in notes))
    (d / CHECKPOINT).write_bytes(notes[-1] if notes else b"")
    held: dict[str, int] = {}
    for file, offset, data in await db.fetch(
        'SELECT file, "offset", data FROM audit_sealed WHERE origin = $1 ORDER BY file, "offset"',
        origin,
    ):
        if not PLAIN_PATH.match(file):
            raise CentralError(f"{origin}: sealed file name {file!r} is not a plain path")
        if offset != held.get(file, 0):
            raise CentralError(f"{origin}: {file} has a gap at byte {held.get(file, 0)}")
        (d / file).parent.mkdir(parents=True, exist_ok=True)
        with open(d / file, "ab") as f:  # noqa: ASYNC230 (a one-shot CLI loop)
            f.write(bytes(data))
        held[file] = offset + len(data)
    size = Checkpoint.parse_body(notes[-1][: notes[-1].rfind(b"\n\n") + 1]).size if notes else 0
    return ExportedOrigin(origin, d, writer, verifier, size)


async def _cosignatures(db: asyncpg.Connection, exported: ExportedOrigin, keys: list[str]) -> None:
    by_name = {k.split("+", 1)[0]: k for k in keys}
    for size, witness, line, note in await db.fetch(
        "SELECT s.size, s.witness, s.signature, c.note FROM audit_cosignatures s "
        "JOIN audit_checkpoints c USING (origin, size) WHERE s.origin = $1 ORDER BY s.size",
        exported.origin,
    ):
        note = bytes(note)
        body = note[: note.rfind(b"\n\n") + 1]
        verified: bool | None = None
        if witness in by_name:
            try:
                open_cosignature(line, body, by_name[witness])
                verified = True
            except NoteError:
                verified = False
        exported.cosigned.append(Cosigned(size, witness, verified))


def witnessed(directory: Path) -> dict[str, object] | None:
    """For evidence: the witnessed checkpoints of a log exported from the central store
    (None for a log read from a replica's own disk, which no witness has seen)."""
    try:
        cosigned = [Cosigned(**c) for c in orjson.loads((directory / COSIGNATURES).read_bytes())]
    except FileNotFoundError:
        return None
    good = [c for c in cosigned if c.verified is not False]
    latest = max(good, key=lambda c: c.size, default=None)
    return {
        "cosignatures": len(cosigned),
        "failed": len(cosigned) - len(good),
        "witnesses": sorted({c.witness for c in good}),
        "latest_size": latest.size if latest else None,
        "verified": None if latest is None else latest.verified,
    }
