"""The approval state machine (pure) and both stores (migrations, compare-and-swap,
announcements)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3

import asyncpg
import pgcluster
import pytest

from gateway.approvals import pgstore, state
from gateway.approvals.pgstore import PostgresStore
from gateway.approvals.service import _load, _row, open_store
from gateway.approvals.state import (
    APPROVED,
    DENIED,
    EXPIRED,
    PENDING,
    STATES,
    TRANSITIONS,
    USED,
    Approval,
    ApprovalRefused,
    IllegalTransition,
    Retry,
)
from gateway.approvals.store import MIGRATIONS, SqliteStore, StoreUnavailable, migrate

RISK = frozenset({"risk-officers"})


def pending(**changes) -> Approval:
    base = Approval(
        id="apr_" + "a" * 24,
        requester="alice",
        connection="llama",
        model="credit-risk-v1",
        method="POST",
        path="/llama/v1/chat/completions",
        body_sha256="0" * 64,
        rule="credit-risk",
        approvers=("risk-officers",),
        min_approvals=1,
        created=1000.0,
        expires=1900.0,
        timeout_s=900.0,
        request_id="r1",
    )
    return dataclasses.replace(base, **changes)


def retry(**changes) -> Retry:
    base = Retry("alice", "llama", "credit-risk-v1", "0" * 64, "r2", 1100.0)
    return dataclasses.replace(base, **changes)


def test_transition_table_is_the_documented_machine() -> None:
    assert {s: set(t.values()) for s, t in TRANSITIONS.items()} == {
        PENDING: {PENDING, APPROVED, DENIED, EXPIRED},
        APPROVED: {USED, EXPIRED},
        DENIED: set(),
        EXPIRED: set(),
        USED: set(),
    }


def test_approve_then_use_once() -> None:
    approved = state.decide(pending(), "rita", RISK, "approve", "ok", 1050.0)
    assert approved.state is APPROVED and approved.approved_by == ["rita"]
    assert approved.expires == 1050.0 + 900.0  # a fresh timeout to use it
    used = state.use(approved, retry())
    assert used.state is USED and used.used_request_id == "r2"
    with pytest.raises(ApprovalRefused, match="already used"):
        state.use(used, retry())


@pytest.mark.parametrize(
    ("who", "groups", "code"),
    [("alice", RISK, "self_approval"), ("nina", frozenset({"analysts"}), "not_an_approver")],
)
def test_who_may_decide(who, groups, code) -> None:
    with pytest.raises(ApprovalRefused) as err:
        state.decide(pending(), who, groups, "approve", None, 1050.0)
    assert (err.value.status, err.value.code) == (403, code)


def test_min_approvals_counts_distinct_approvers_and_any_deny_is_final() -> None:
    two = pending(min_approvals=2)
    once = state.decide(two, "rita", RISK, "approve", None, 1010.0)
    assert once.state is PENDING
    with pytest.raises(ApprovalRefused, match="already decided"):
        state.decide(once, "rita", RISK, "approve", None, 1020.0)
    assert state.decide(once, "raj", RISK, "approve", None, 1030.0).state is APPROVED
    denied = state.decide(once, "raj", RISK, "deny", "no", 1030.0)
    assert denied.state is DENIED
    with pytest.raises(IllegalTransition):
        state.decide(denied, "rob", RISK, "approve", None, 1040.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"requester": "nina"}, "requested by someone else"),
        ({"connection": "other"}, "another connection"),
        ({"model": "credit-risk-v2"}, "another model"),
        ({"body_sha256": "1" * 64}, "body differs"),
    ],
)
def test_use_is_bound_to_requester_connection_model_and_body(changes, message) -> None:
    approved = state.decide(pending(), "rita", RISK, "approve", None, 1050.0)
    with pytest.raises(ApprovalRefused, match=message):
        state.use(approved, retry(**changes))


def test_expiry_of_pending_and_of_unused_approvals() -> None:
    assert not state.is_due(pending(), 1899.0)
    assert state.expire(pending(), 1900.0).state is EXPIRED
    approved = state.decide(pending(), "rita", RISK, "approve", None, 1050.0)
    with pytest.raises(ApprovalRefused, match="expired"):
        state.use(approved, retry(now=approved.expires))
    with pytest.raises(ApprovalRefused, match="still pending"):
        state.use(pending(), retry())
    used = state.use(approved, retry())
    assert not state.is_due(used, 10**9)  # terminal states never expire


def test_record_round_trip() -> None:
    approval = state.decide(pending(reason="r", preview="{}"), "rita", RISK, "approve", "ok", 1.0)
    assert Approval.from_record(approval.record(), 7) == dataclasses.replace(approval, version=7)
    assert set(STATES) == {"pending", "approved", "denied", "expired", "used"}


async def test_store_migrates_once_and_refuses_a_newer_schema(tmp_path) -> None:
    path = tmp_path / "a.db"
    for _ in range(2):  # reopening is a no-op migration
        store = SqliteStore(path)
        await store.open()
        await store.close()
    db = sqlite3.connect(path, isolation_level=None)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
    db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        migrate(db)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/a.db"
    return request.getfixturevalue("postgres").new_database("state")


async def test_postgres_store_migrates_once_and_refuses_a_newer_schema(postgres) -> None:
    url = postgres.new_database("migrate")
    # Two replicas starting at once: the advisory lock lets exactly one create the schema.
    stores = [PostgresStore(url), PostgresStore(url)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    db = await asyncpg.connect(url)
    try:
        assert await db.fetch("SELECT version FROM approvals_schema_version") == [
            (len(pgstore.MIGRATIONS),)
        ]
        await db.execute("UPDATE approvals_schema_version SET version = 99")
        with pytest.raises(StoreUnavailable, match="newer"):
            await PostgresStore(url).open()
    finally:
        await db.close()


async def test_store_compare_and_swap_lets_exactly_one_writer_win(store_url) -> None:
    store = open_store(store_url)
    await store.open()
    try:
        await store.insert(_row(pending(), 0))
        row = await store.get(pending().id)
        assert row is not None
        current = _load(row)
        approve = state.decide(current, "rita", RISK, "approve", None, 1050.0)
        deny = state.decide(current, "raj", RISK, "deny", None, 1050.0)
        results = await asyncio.gather(
            store.replace(_row(approve, 1), 0), store.replace(_row(deny, 1), 0)
        )
        assert sorted(results) == [False, True]
        row = await store.get(pending().id)
        assert row is not None and row.version == 1
        assert row.state == ("approved" if results[0] else "denied")
        assert [r.id for r in await store.list("pending", 10)] == []
        due = [r.id for r in await store.due(("approved", "pending"), 10**9)]
        assert due == ([row.id] if row.state == "approved" else [])
    finally:
        await store.close()


async def test_postgres_store_announces_changes_made_through_another_store(postgres) -> None:
    """Replica B's compare-and-swap reaches replica A's subscriber as a NOTIFY, and only a
    successful swap is announced."""
    url = postgres.new_database("notify")
    a, b = PostgresStore(url), PostgresStore(url)
    heard: asyncio.Queue[str | None] = asyncio.Queue()
    a.subscribe(heard.put_nowait)
    await a.open()
    await b.open()
    try:
        await b.insert(_row(pending(), 0))
        approve = state.decide(pending(), "rita", RISK, "approve", None, 1050.0)
        assert await b.replace(_row(approve, 1), 0)
        assert not await b.replace(_row(approve, 1), 0)  # lost the race: nothing to announce
        async with asyncio.timeout(10):
            assert await heard.get() == pending().id
        assert heard.empty()
    finally:
        await a.close()
        await b.close()


async def test_postgres_store_down_is_unavailable_and_recovers_after_a_restart() -> None:
    """A restart of the database: 503-worthy errors while it is down, then the same store object
    works again, and its listener reconnects and tells the service it may have missed changes."""
    cluster = pgcluster.Cluster()
    try:
        url = cluster.new_database("restart")
        store = PostgresStore(url)
        heard: asyncio.Queue[str | None] = asyncio.Queue()
        store.subscribe(heard.put_nowait)
        await store.open()
        await store.insert(_row(pending(), 0))
        await asyncio.to_thread(cluster.stop)
        with pytest.raises(StoreUnavailable, match="approval store"):
            await store.get(pending().id)
        await asyncio.to_thread(cluster.start)
        async with asyncio.timeout(20):
            assert await heard.get() is None  # the listener is back and says "re-read"
        row = await store.get(pending().id)
        assert row is not None and row.state == "pending"
        approve = state.decide(pending(), "rita", RISK, "approve", None, 1050.0)
        assert await store.replace(_row(approve, 1), 0)
        async with asyncio.timeout(10):
            assert await heard.get() == pending().id  # announcements flow again
        await store.close()
    finally:
        cluster.destroy()
