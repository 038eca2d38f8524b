"""Two real gateway processes sharing one PostgreSQL approval store: a request held on one is
released by a decision taken on the other, through the store's NOTIFY (the PostgreSQL store has
no poll: the metric names what woke the hold); and the database going away and coming back."""

from __future__ import annotations

import threading

import httpx
import peers
import pgcluster
import pytest
from approvals_helpers import Client, start_replicas, woken
from peers import wait_for


def unique(content: str) -> dict:
    return {"model": "credit-risk-v1", "messages": [{"role": "user", "content": content}]}


@pytest.fixture(scope="module")
def replicas(issuer, upstream, tmp_path_factory, postgres):
    started = start_replicas(
        issuer, upstream, tmp_path_factory, postgres.new_database("replicas"), 2
    )
    yield started
    for replica in started:
        replica.stop()


def test_decision_on_one_replica_wakes_a_hold_on_the_other_through_notify(replicas, issuer) -> None:
    a, b = replicas
    alice = Client(a.url, peers.mint(issuer.url, "alice@example.com", ["analysts"]))
    rita = Client(b.url, peers.mint(issuer.url, "rita@example.com", ["risk-officers"]))
    before = woken(a.url)
    result: dict = {}
    held = threading.Thread(target=lambda: result.update(r=alice.infer(unique("A→B"), wait=25)))
    held.start()
    pending = wait_for(lambda: rita.get("?status=pending").json()["approvals"])
    (mine,) = [p for p in pending if "A→B" in (p["preview"] or "")]
    assert rita.decide(mine["id"], "approve").status_code == 200
    held.join(30)
    assert result["r"].status_code == 200, result["r"].text
    after = woken(a.url)
    assert after.get("store", 0) == before.get("store", 0) + 1  # the NOTIFY from B's decision
    assert after.get("poll", 0) == 0 and after.get("this_process", 0) == before.get(
        "this_process", 0
    )


def test_database_restart_503_while_down_then_holds_and_tickets_work_again(
    issuer, upstream, tmp_path_factory
) -> None:
    cluster = pgcluster.Cluster()
    try:
        a, b = start_replicas(
            issuer, upstream, tmp_path_factory, cluster.new_database("restart"), 2
        )
        with a, b:
            alice = Client(a.url, peers.mint(issuer.url, "alice@example.com", ["analysts"]))
            rita = Client(b.url, peers.mint(issuer.url, "rita@example.com", ["risk-officers"]))
            cluster.stop()
            down = alice.infer(unique("while down"))
            assert down.status_code == 503
            error = down.json()["error"]
            assert error["code"] == "approvals_unavailable"
            assert "approval store is unavailable" in error["message"]
            assert "127.0.0.1" not in error["message"]  # no connection details to callers
            health = httpx.get(f"{a.url}/_gateway/health", timeout=10)
            assert health.status_code == 503  # approve rules exist: this replica cannot serve
            assert health.json()["problems"] == [
                "the approval store is unreachable and approve rules exist"
            ]
            cluster.start()
            healthy = wait_for(
                lambda: httpx.get(f"{a.url}/_gateway/health", timeout=10).status_code == 200
            )
            assert healthy
            # A hold that starts right after the restart is released from the other replica:
            # the listener came back (or woke every hold on reconnecting).
            result: dict = {}
            held = threading.Thread(
                target=lambda: result.update(r=alice.infer(unique("after restart"), wait=25))
            )
            held.start()
            pending = wait_for(lambda: rita.get("?status=pending").json()["approvals"])
            assert rita.decide(pending[0]["id"], "approve").status_code == 200
            held.join(30)
            assert result["r"].status_code == 200, result["r"].text
    finally:
        cluster.destroy()


def test_backends_terminated_mid_query_answer_503_never_500(
    issuer, upstream, tmp_path_factory, postgres
) -> None:
    """The database ending the gateway's sessions while statements run (a failover, an
    administrator's pg_terminate_backend) leaves asyncpg connections in a broken state
    (InternalClientError, not a connection error): each such request is retried once on a
    fresh connection or answered 503, never 500."""
    url = postgres.new_database("terminated")
    database = url.rsplit("/", 1)[1]
    (replica,) = start_replicas(issuer, upstream, tmp_path_factory, url, 1)
    with replica:
        alice = Client(replica.url, peers.mint(issuer.url, "alice@example.com", ["analysts"]))
        statuses: list[int] = []
        lock = threading.Lock()

        def ask(n: int) -> None:
            status = alice.infer(unique(f"terminated {n}"), timeout=20).status_code
            with lock:
                statuses.append(status)

        for round_ in range(6):
            askers = [threading.Thread(target=ask, args=(round_ * 20 + i,)) for i in range(20)]
            for thread in askers:
                thread.start()
            postgres.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = '{database}' AND pid <> pg_backend_pid()",
                database,
            )
            for thread in askers:
                thread.join(30)
        assert len(statuses) == 120
        assert set(statuses) <= {202, 503}, sorted(statuses)
        assert "handler failed" not in replica.stderr()
