"""The approval state machine (pure) and the SQLite store (migrations, compare-and-swap)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3

import pytest

from gateway.approvals import state
from gateway.approvals.service import _load, _row
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
from gateway.approvals.store import MIGRATIONS, SqliteStore, migrate

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


async def test_store_compare_and_swap_lets_exactly_one_writer_win(tmp_path) -> None:
    store = SqliteStore(tmp_path / "a.db")
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
