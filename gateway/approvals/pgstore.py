"""Approvals in PostgreSQL, shared by every replica; a change on one is announced to all.

The same rows and compare-and-swap as the SQLite store. Each successful replace also sends a
NOTIFY carrying the approval id in the same statement (PostgreSQL delivers it at commit), and
every replica LISTENs on one dedicated connection, so a decision made on replica B wakes a
request held on replica A without anyone polling. While the listening connection is lost,
announcements can be missed: when it is back, every hold is woken to re-read its approval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from gateway.approvals.store import Row, StoreUnavailable
from gateway.config import without_password

log = logging.getLogger("gateway.approvals")
T = TypeVar("T")

CHANNEL = "gateway_approvals"
MIGRATION_LOCK = 0x6761_7477_6179  # pg_advisory_xact_lock key: replicas starting together
CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 5.0
POOL_MAX = 10
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 2.0
# Errors that mean "the database is not there right now" rather than "this query is wrong".
# InternalClientError is what asyncpg raises on a connection whose session the server ended
# while a statement was under way (a restart, a failover, pg_terminate_backend).
CONNECTION_LOST = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)

# Ordered schema steps, as for SQLite: step N brings the schema from version N-1 to N.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        record BYTEA NOT NULL
    );
    CREATE INDEX approvals_state_expires ON approvals (state, expires);
    """,
)
COLUMNS = "id, state, version, created, expires, record"


class PostgresStore:
    """asyncpg: a small pool for queries, one more connection that only LISTENs."""

    announces_changes = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = without_password(url)
        self.pool: asyncpg.Pool | None = None
        self.listener: asyncio.Task[None] | None = None
        self.on_change: Callable[[str | None], None] = lambda _id: None

    def subscribe(self, on_change: Callable[[str | None], None]) -> None:
        """`on_change(id)` for every change by any replica; `on_change(None)`: maybe missed."""
        self.on_change = on_change

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """One statement on a pooled connection; a connection lost mid-way is tried once more
        on a fresh one (after a database restart every pooled connection is stale)."""
        if self.pool is None:
            raise StoreUnavailable(f"approval store {self.where}: not open")
        for attempt in (1, 2):
            try:
                async with self.pool.acquire(timeout=CONNECT_TIMEOUT_S) as db:
                    return await fn(db)
            except CONNECTION_LOST as exc:
                if attempt == 2:
                    raise StoreUnavailable(f"approval store {self.where}: {_say(exc)}") from None
            except asyncpg.PostgresError as exc:
                raise StoreUnavailable(f"approval store {self.where}: {_say(exc)}") from None
        raise AssertionError("unreachable")

    async def open(self) -> None:
        try:
            self.pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=POOL_MAX,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
            )
            async with self.pool.acquire() as db:
                await migrate(db)
            connection = await self._listen()
        except (*CONNECTION_LOST, asyncpg.PostgresError) as exc:
            await self.close()
            raise StoreUnavailable(f"approval store {self.where}: {_say(exc)}") from None
        except StoreUnavailable:
            await self.close()
            raise
        self.listener = asyncio.get_running_loop().create_task(self._keep_listening(connection))

    async def _listen(self) -> asyncpg.Connection:
        connection = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        await connection.add_listener(CHANNEL, self._notified)
        return connection

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.on_change(payload)

    async def _keep_listening(self, connection: asyncpg.Connection) -> None:
        """Hold the LISTEN connection; when it drops, reconnect and wake every hold."""
        delay = RECONNECT_MIN_S
        while True:
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
            try:
                await lost.wait()
            finally:
                with contextlib.suppress(*CONNECTION_LOST, asyncpg.PostgresError):
                    await connection.close(timeout=1)
            log.warning("approval store %s: notifications lost; reconnecting", self.where)
            while True:
                try:
                    connection = await self._listen()
                    break
                except (*CONNECTION_LOST, asyncpg.PostgresError) as exc:
                    log.warning("approval store %s: %s", self.where, _say(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
            delay = RECONNECT_MIN_S
            log.info("approval store %s: listening again", self.where)
            self.on_change(None)  # anything may have changed while nobody listened

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.listener
            self.listener = None
        if self.pool is not None:
            with contextlib.suppress(*CONNECTION_LOST, asyncpg.PostgresError):
                await asyncio.wait_for(self.pool.close(), CONNECT_TIMEOUT_S)
            self.pool = None

    async def ping(self) -> None:
        await self._run(lambda db: db.fetchval("SELECT 1"))

    async def insert(self, row: Row) -> None:
        sql = f"INSERT INTO approvals ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"  # noqa: S608
        values = (row.id, row.state, row.version, row.created, row.expires, row.record)
        await self._run(lambda db: db.execute(sql, *values))

    async def get(self, approval_id: str) -> Row | None:
        rows = await self._select("WHERE id = $1", approval_id)
        return rows[0] if rows else None

    async def list(self, state: str | None, limit: int) -> list[Row]:
        if state is None:
            return await self._select("ORDER BY created DESC LIMIT $1", limit)
        return await self._select("WHERE state = $1 ORDER BY created DESC LIMIT $2", state, limit)

    async def due(self, states: tuple[str, ...], now: float) -> list[Row]:
        return await self._select("WHERE state = ANY($1::text[]) AND expires <= $2", states, now)

    async def _select(self, where: str, *args: object) -> list[Row]:
        sql = f"SELECT {COLUMNS} FROM approvals {where}"  # noqa: S608
        rows = await self._run(lambda db: db.fetch(sql, *args))
        return [Row(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    async def replace(self, row: Row, expected_version: int) -> bool:
        sql = (
            "WITH changed AS (UPDATE approvals SET state = $1, version = $2, expires = $3, "
            "record = $4 WHERE id = $5 AND version = $6 RETURNING id) "
            "SELECT pg_notify($7, id) FROM changed"
        )
        values = (row.state, expected_version + 1, row.expires, row.record, row.id)
        result = await self._run(lambda db: db.fetch(sql, *values, expected_version, CHANNEL))
        return len(result) == 1


async def migrate(db: asyncpg.Connection) -> int:
    """Bring the schema to the latest version in one transaction; returns that version.

    An advisory lock serialises replicas that start at the same moment."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await db.execute(
            "CREATE TABLE IF NOT EXISTS approvals_schema_version (version INTEGER NOT NULL)"
        )
        current = await db.fetchval("SELECT version FROM approvals_schema_version")
        if current is not None and current > len(MIGRATIONS):
            raise StoreUnavailable(
                f"schema version {current} is newer than this gateway knows ({len(MIGRATIONS)})"
            )
        for step in MIGRATIONS[current or 0 :]:
            await db.execute(step)
        if current is None:
            await db.execute(
                "INSERT INTO approvals_schema_version (version) VALUES ($1)", len(MIGRATIONS)
            )
        else:
            await db.execute("UPDATE approvals_schema_version SET version = $1", len(MIGRATIONS))
    return len(MIGRATIONS)


def _say(exc: BaseException) -> str:
    """A short reason without connection parameters (never the password)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
