"""Three real gateway replicas behind a real HAProxy (round robin, health-checked), sharing a
real PostgreSQL approval store: everything a client does goes through the balancer."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import peers
import pgcluster
import pytest
from approvals_helpers import Client, start_replicas
from balancer import Balancer
from conftest import entries, launch_gateway
from peers import wait_for

from gateway.audit import verify_log

NAMES = ("r0", "r1", "r2")


def unique(content: str) -> dict:
    return {"model": "credit-risk-v1", "messages": [{"role": "user", "content": content}]}


@pytest.fixture(scope="module")
def cluster():
    """A cluster of this module's own: one test restarts it."""
    db = pgcluster.Cluster()
    yield db
    db.destroy()


@pytest.fixture(scope="module")
def fleet(issuer, upstream, tmp_path_factory, cluster):
    replicas = dict(
        zip(
            NAMES,
            start_replicas(issuer, upstream, tmp_path_factory, cluster.new_database("lb"), 3),
            strict=True,
        )
    )
    try:
        balancer = Balancer({name: r.url for name, r in replicas.items()})
        try:
            yield balancer, replicas
        finally:
            balancer.stop()
    finally:
        for replica in replicas.values():  # the kill test puts a restarted one in
            replica.stop()


@pytest.fixture(scope="module")
def tokens(issuer):
    return {
        "alice": peers.mint(issuer.url, "alice@example.com", ["analysts"]),
        "rita": peers.mint(issuer.url, "rita@example.com", ["risk-officers"]),
    }


def held(client: Client, body: dict) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def call() -> None:
        try:
            result["r"] = client.infer(body, wait=25)
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread, result


def pending_with(rita: Client, text: str) -> dict:
    def find() -> dict | None:
        found = [a for a in rita.get("?status=pending").json()["approvals"]]
        return next((a for a in found if text in (a["preview"] or "")), None)

    return wait_for(find)


def test_round_robin_spreads_requests_over_every_replica(fleet) -> None:
    balancer, _ = fleet
    served = Counter(
        httpx.get(f"{balancer.url}/_gateway/health", timeout=10).headers["x-served-by"]
        for _ in range(9)
    )
    assert set(served) == set(NAMES)  # 3 each unless a health check blinked meanwhile


def test_hold_on_one_replica_approve_on_another_through_the_balancer(fleet, tokens) -> None:
    balancer, _ = fleet
    alice = Client(balancer.url, tokens["alice"], pin="r0")
    rita = Client(balancer.url, tokens["rita"], pin="r1")
    thread, result = held(alice, unique("hold r0 approve r1"))
    mine = pending_with(rita, "hold r0 approve r1")
    decided = rita.decide(mine["id"], "approve")
    assert (decided.status_code, decided.headers["x-served-by"]) == (200, "r1")
    thread.join(30)
    response = result["r"]
    assert (response.status_code, response.headers["x-served-by"]) == (200, "r0")


def test_ticket_redeemed_exactly_once_under_20_concurrent_retries(fleet, tokens, upstream) -> None:
    balancer, _ = fleet
    alice = Client(balancer.url, tokens["alice"])
    rita = Client(balancer.url, tokens["rita"])
    body = unique("twenty retries")
    approval_id = alice.ticket(body)
    assert rita.decide(approval_id, "approve").status_code == 200
    peers.upstream_reset(upstream.url)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: alice.infer(body, approval_id=approval_id), range(20)))
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: 1, 403: 19}, [a.text for a in answers]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 403} == {"approval_used"}
    assert len({a.headers["x-served-by"] for a in answers}) == 3  # every replica raced
    assert len(peers.upstream_requests(upstream.url)) == 1  # the model saw the call once


def test_kill_9_of_a_replica_holding_a_request(fleet, tokens) -> None:
    """The held client loses its connection; the approval it created survives in the shared
    store, is approved and used through the other replicas, and the killed replica's log
    (recovered at its restart) still verifies."""
    balancer, replicas = fleet
    alice = Client(balancer.url, tokens["alice"], pin="r2")
    rita = Client(balancer.url, tokens["rita"])
    body = unique("killed while holding")
    thread, result = held(alice, body)
    mine = pending_with(rita, "killed while holding")
    victim = replicas["r2"]
    victim.proc.kill()
    victim.proc.wait(10)
    thread.join(30)
    lost = result.get("r")
    assert "error" in result or (lost is not None and lost.status_code in (502, 503))
    # The balancer takes it out; nothing else a client sends is lost meanwhile.
    anyone = Client(balancer.url, tokens["rita"])
    assert all(anyone.get("?status=pending").status_code == 200 for _ in range(6))
    assert rita.decide(mine["id"], "approve").status_code == 200
    retried = Client(balancer.url, tokens["alice"]).infer(body, approval_id=mine["id"])
    assert retried.status_code == 200, retried.text
    assert retried.headers["x-served-by"] in ("r0", "r1")
    victim.stop()
    assert verify_log(victim.audit_dir).problem is None
    requested = [e for e in entries(victim.audit_dir) if e.get("approval_id") == mine["id"]]
    assert [e["type"] for e in requested] == ["approval.requested"]  # durable before the kill
    restarted = launch_gateway(victim.config_path)  # same port: the balancer takes it back
    restarted.audit_dir, restarted.config_path = victim.audit_dir, victim.config_path
    replicas["r2"] = restarted
    balancer.wait_until_serving(set(NAMES))
    assert verify_log(victim.audit_dir).problem is None


def test_postgresql_restarted_under_load(fleet, tokens, cluster) -> None:
    """Clients keep asking, approving and redeeming through the balancer while the database
    restarts: while it is down they get 503 (from a replica, or from the balancer once every
    replica's health check says it cannot serve), never another error, no approval is used
    twice, and every worker completes a whole cycle again once the database is back."""
    balancer, _ = fleet
    alice = Client(balancer.url, tokens["alice"])
    rita = Client(balancer.url, tokens["rita"])
    stop = threading.Event()
    outage = threading.Event()
    statuses: Counter[int] = Counter()
    redeemed: Counter[str] = Counter()
    cycles: Counter[tuple[int, bool]] = Counter()  # (worker, after the restart)
    after = threading.Event()
    seen_503 = threading.Event()
    lock = threading.Lock()

    def record(response: httpx.Response) -> int:
        with lock:
            statuses[response.status_code] += 1
        if response.status_code == 503 and outage.is_set():
            seen_503.set()
        if response.status_code == 403:  # only a retry after a 503 that used it after all
            assert response.json()["error"]["code"] == "approval_used", response.text
        return response.status_code

    def work(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            restarted = after.is_set()
            body = unique(f"load {worker}-{n}")
            ticket = alice.infer(body, timeout=20)
            if record(ticket) != 202:
                continue
            approval_id = ticket.json()["approval"]["id"]
            while not stop.is_set() and record(rita.decide(approval_id, "approve")) != 200:
                pass
            while not stop.is_set():
                status = record(alice.infer(body, approval_id=approval_id, timeout=20))
                if status == 200:
                    with lock:
                        redeemed[approval_id] += 1
                if status != 503:
                    break
            with lock:
                cycles[(worker, restarted)] += 1

    workers = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in workers:
        thread.start()
    try:
        wait_for(lambda: all(cycles[(w, False)] for w in range(4)), timeout=60)
        outage.set()
        cluster.stop()
        wait_for(seen_503.is_set, timeout=30)  # the outage was felt under load
        cluster.start()
        after.set()
        wait_for(lambda: all(cycles[(w, True)] for w in range(4)), timeout=60)
    finally:
        stop.set()
        for thread in workers:
            thread.join(60)
    assert set(statuses) <= {200, 202, 403, 503}, statuses
    assert max(redeemed.values()) == 1
    balancer.wait_until_serving(set(NAMES))
