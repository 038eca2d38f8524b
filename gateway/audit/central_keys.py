"""Copies of epoch keys in the central store's deletable table (`[audit.central] keys_store`).

The append-only tables never hold a key. With `keys_store` a writer also copies the wrapped key
of each of its epochs (the bytes of its keys-directory file: RFC 3394 under the sealing key,
useless without it) into `audit_epoch_keys`, under a role of its own that may delete, so the
sealed originals held centrally stay readable if a replica's keys directory is lost; and it
deletes the copy of every epoch shredded locally (`retention_days`, `gateway audit shred`),
whose tombstone in the keys directory says so. A failure is a health warning and is retried;
a shred that could not reach the store is deleted there at the next try.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from pathlib import Path
from urllib.parse import unquote

import asyncpg

from gateway.audit.epoch_keys import EPOCHS, KEY_SUFFIX, SHREDDED_SUFFIX
from gateway.config import without_password

log = logging.getLogger("gateway.audit")
CONNECT_TIMEOUT_S = 5.0
# What the central store's clients raise when it cannot be reached or refuses a statement.
STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def one_line(exc: BaseException) -> str:
    """A database error for a log line or a health warning: its first line, bounded."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def writer_keys(sealing_key: Path, writer_origin: str) -> tuple[dict[str, bytes], list[str]]:
    """This writer's wrapped epoch keys (origin -> bytes) and the origins of its shredded
    epochs, from the keys directory."""
    directory = Path(sealing_key).parent / EPOCHS
    keys: dict[str, bytes] = {}
    shredded: list[str] = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        for suffix in (KEY_SUFFIX, SHREDDED_SUFFIX):
            origin = unquote(path.name.removesuffix(suffix))
            if not path.name.endswith(suffix) or origin.rsplit("/", 1)[0] != writer_origin:
                continue
            if suffix == SHREDDED_SUFFIX:
                shredded.append(origin)
                continue
            with contextlib.suppress(OSError, binascii.Error):
                keys[origin] = base64.b64decode(path.read_bytes().strip(), validate=True)
    return keys, shredded


async def delete_copies(url: str, origins: list[str]) -> None:
    """Delete the central copies of these epochs' keys (at once, for `gateway audit shred`)."""
    db = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    try:
        await db.execute("DELETE FROM audit_epoch_keys WHERE origin = ANY($1)", origins)
    finally:
        await db.close()


class KeyCopies:
    """Keeps `audit_epoch_keys` equal to this writer's keys directory: copies, then deletions."""

    def __init__(self, url: str, sealing_key: Path, writer_origin: str) -> None:
        self.url = url
        self.where = without_password(url)
        self.sealing_key = sealing_key
        self.writer_origin = writer_origin
        self.copied: set[str] = set()  # through this connection
        self.deleted: set[str] = set()
        self.db: asyncpg.Connection | None = None
        self.problem: str | None = None

    async def sync(self) -> None:
        """One pass; a failure is kept in `problem` (a warning), never raised."""
        try:
            await self._sync()
            self.problem = None
        except STORE_ERRORS as exc:
            text = one_line(exc)
            if self.problem != text:
                log.warning("audit: epoch keys not synced to %s, will retry: %s", self.where, text)
            self.problem = text
            await self.close()

    async def _sync(self) -> None:
        keys, shredded = writer_keys(self.sealing_key, self.writer_origin)
        gone = [o for o in shredded if o not in self.deleted]
        new = [(o, k) for o, k in keys.items() if o not in self.copied]
        if not gone and not new:
            return
        if self.db is None or self.db.is_closed():
            self.db = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        if gone:
            await self.db.execute("DELETE FROM audit_epoch_keys WHERE origin = ANY($1)", gone)
        if new:
            await self.db.executemany(
                "INSERT INTO audit_epoch_keys (origin, wrapped) VALUES ($1, $2) "
                "ON CONFLICT (origin) DO NOTHING",
                new,
            )
        self.deleted.update(gone)
        self.copied.update(o for o, _ in new)

    async def close(self) -> None:
        db, self.db = self.db, None
        self.copied.clear()  # a new connection may find another store: check everything again
        self.deleted.clear()
        if db is not None:
            with contextlib.suppress(Exception):
                await db.close(timeout=1)
