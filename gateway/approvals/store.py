"""Where approvals are kept: an interface, and SQLite behind it.

The store moves rows and nothing else: the state machine (state.py) decides every change, and
the store only applies it with a compare-and-swap on the row's version, so two concurrent
decisions on one approval resolve to exactly one. pgstore.py has the same methods over
PostgreSQL for several replicas, and announces each change to all of them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")

# Ordered schema steps; step N brings a database from version N-1 to N. Never edit a released
# step: add the next one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        record BLOB NOT NULL
    );
    CREATE INDEX approvals_state_expires ON approvals (state, expires);
    """,
)
BUSY_TIMEOUT_MS = 5000  # another process (an overlapping restart) holding the write lock


class StoreUnavailable(Exception):
    """The store could not be read or written; callers refuse the request (fail closed)."""


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    state: str
    version: int
    created: float
    expires: float
    record: bytes


class ApprovalStore(Protocol):
    """What the approval service needs from a store. Every method raises StoreUnavailable."""

    # True: a change made by any process reaches subscribe()'s callback, so holds need not poll.
    announces_changes: bool

    def subscribe(self, on_change: Callable[[str | None], None]) -> None:
        """Call `on_change(approval_id)` for changes, `on_change(None)` if some may be missed."""
        ...

    async def open(self) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...
    async def insert(self, row: Row) -> None: ...
    async def get(self, approval_id: str) -> Row | None: ...
    async def list(self, state: str | None, limit: int) -> list[Row]: ...
    async def due(self, states: tuple[str, ...], now: float) -> list[Row]: ...
    async def replace(self, row: Row, expected_version: int) -> bool:
        """Write `row` (with version expected_version + 1) only if the stored version is still
        `expected_version`; False if someone else changed it first."""
        ...


class SqliteStore:
    """SQLite through the stdlib, on one worker thread so the event loop never blocks.

    It cannot hear other processes' changes: holds re-read it (the service polls)."""

    announces_changes = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="approvals-db")
        self.db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"approval store {self.path}: {exc}") from None

    def subscribe(self, on_change: Callable[[str | None], None]) -> None:
        """Nothing to subscribe to: this process's own changes wake holds in the service."""

    async def open(self) -> None:
        await self._run(self._open)

    async def ping(self) -> None:
        await self._run(lambda: self._db().execute("SELECT 1").fetchone())

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a decision must survive a power loss
        migrate(db)
        self.db = db

    async def close(self) -> None:
        if self.db is not None:
            await self._run(self.db.close)
        self.executor.shutdown(wait=True)

    def _db(self) -> sqlite3.Connection:
        if self.db is None:
            raise sqlite3.OperationalError("store is not open")
        return self.db

    async def insert(self, row: Row) -> None:
        sql = "INSERT INTO approvals (id, state, version, created, expires, record) "
        sql += "VALUES (?, ?, ?, ?, ?, ?)"
        values = (row.id, row.state, row.version, row.created, row.expires, row.record)
        await self._run(lambda: self._db().execute(sql, values))

    async def get(self, approval_id: str) -> Row | None:
        rows = await self._select("WHERE id = ?", (approval_id,))
        return rows[0] if rows else None

    async def list(self, state: str | None, limit: int) -> list[Row]:
        if state is None:
            return await self._select("ORDER BY created DESC LIMIT ?", (limit,))
        return await self._select("WHERE state = ? ORDER BY created DESC LIMIT ?", (state, limit))

    async def due(self, states: tuple[str, ...], now: float) -> list[Row]:
        marks = ", ".join("?" for _ in states)
        where = f"WHERE state IN ({marks}) AND expires <= ?"
        return await self._select(where, (*states, now))

    async def _select(self, where: str, args: tuple[object, ...]) -> list[Row]:
        sql = f"SELECT id, state, version, created, expires, record FROM approvals {where}"  # noqa: S608
        rows = await self._run(lambda: self._db().execute(sql, args).fetchall())
        return [Row(*r) for r in rows]

    async def replace(self, row: Row, expected_version: int) -> bool:
        sql = (
            "UPDATE approvals SET state = ?, version = ?, expires = ?, record = ? "
            "WHERE id = ? AND version = ?"
        )
        values = (
            row.state,
            expected_version + 1,
            row.expires,
            row.record,
            row.id,
            expected_version,
        )
        cursor = await self._run(lambda: self._db().execute(sql, values))
        return cursor.rowcount == 1


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema to the latest version in one transaction; returns that version."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        current = row[0] if row else 0
        if current > len(MIGRATIONS):
            raise sqlite3.DatabaseError(
                f"schema version {current} is newer than this gateway knows ({len(MIGRATIONS)})"
            )
        for step in MIGRATIONS[current:]:
            for statement in filter(str.strip, step.split(";")):
                db.execute(statement)
        if row is None:
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS),))
        else:
            db.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)
