"""Just-in-time approval end to end: a real gateway process, demo issuer and upstream, and
several identities: alice (analyst, requester), rita and raj (risk officers), rob (analyst AND
risk officer), nina (analyst, not an approver). Every test runs against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import peers
import pytest
from approvals_helpers import (
    BODY,
    MODEL,
    Client,
    WebhookReceiver,
    approvals_config,
    woken,
    woken_by_decision,
)
from conftest import entries, launch_gateway
from peers import wait_for

from gateway.audit import verify_log
from gateway.demo import pii


@pytest.fixture(scope="module")
def webhook():
    receiver = WebhookReceiver(fail_first=1)  # the first delivery fails: it must be retried
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def gw(start_gateway, issuer, upstream, tmp_path_factory, webhook, approvals_store):
    tmp = tmp_path_factory.mktemp("approvals")
    config = approvals_config(
        issuer.url, upstream.url, tmp, webhook_url=webhook.url, store=approvals_store
    )
    gateway = start_gateway(config)
    gateway.audit_dir = tmp / "audit"
    return gateway


@pytest.fixture(scope="module")
def people(gw, issuer):
    def client(sub: str, groups: list[str]) -> Client:
        return Client(gw.url, peers.mint(issuer.url, sub, groups))

    return {
        "alice": client("alice@example.com", ["analysts"]),
        "rita": client("rita@example.com", ["risk-officers"]),
        "raj": client("raj@example.com", ["risk-officers"]),
        "rob": client("rob@example.com", ["analysts", "risk-officers"]),
        "nina": client("nina@example.com", ["analysts"]),
    }


def unique(content: str, model: str = MODEL) -> dict:
    """A body no other test sends, so each approval is for its own request."""
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def test_hold_flow_answers_once_approved(gw, people) -> None:
    alice, rita = people["alice"], people["rita"]
    body = unique("hold flow")
    result: dict = {}
    held = threading.Thread(target=lambda: result.update(r=alice.infer(body, wait=20)))
    held.start()
    pending = wait_for(lambda: rita.get("?status=pending").json()["approvals"])
    mine = next(a for a in pending if a["preview"] and "hold flow" in a["preview"])
    assert mine["requester"] == "alice@example.com" and mine["model"] == MODEL
    assert mine["reason"] == "monthly credit review"
    before = woken(gw.url)
    assert rita.decide(mine["id"], "approve", "looks fine").status_code == 200
    held.join(10)
    assert woken_by_decision(before, woken(gw.url))  # the decision released it, not a poll
    response = result["r"]
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    assert rita.get(f"/{mine['id']}").json()["approval"]["status"] == "used"


def test_prefer_wait_in_a_second_prefer_line_still_holds(gw, people) -> None:
    """RFC 9110 §5.3: two Prefer lines are one list; the wait may be in either."""
    alice, rita = people["alice"], people["rita"]
    body = unique("two prefer lines")
    headers = [
        *alice.auth.items(),
        ("x-approval-reason", "quarterly"),
        ("prefer", "respond-async"),
        ("prefer", "wait=20"),
    ]
    url = f"{gw.url}/llama/v1/chat/completions"
    result: dict = {}
    held = threading.Thread(
        target=lambda: result.update(r=httpx.post(url, json=body, headers=headers, timeout=40))
    )
    held.start()
    pending = wait_for(lambda: rita.get("?status=pending").json()["approvals"])
    mine = next(a for a in pending if a["preview"] and "two prefer lines" in a["preview"])
    assert rita.decide(mine["id"], "approve").status_code == 200
    held.join(30)
    assert result["r"].status_code == 200, result["r"].text


def test_hold_flow_denied_is_403(gw, people) -> None:
    alice, rita = people["alice"], people["rita"]
    body = unique("deny me")
    result: dict = {}
    held = threading.Thread(target=lambda: result.update(r=alice.infer(body, wait=20)))
    held.start()
    pending = wait_for(lambda: rita.get("?status=pending").json()["approvals"])
    mine = next(a for a in pending if a["preview"] and "deny me" in a["preview"])
    assert rita.decide(mine["id"], "deny", "not this month").status_code == 200
    held.join(10)
    assert result["r"].status_code == 403
    assert result["r"].json()["error"]["code"] == "approval_denied"


def test_hold_runs_out_into_a_ticket(gw, people) -> None:
    started = time.monotonic()
    response = people["alice"].infer(unique("short hold"), wait=1)
    assert time.monotonic() - started >= 0.9  # it was held for the wait asked for
    assert response.status_code == 202
    assert response.json()["approval"]["status"] == "pending"


def test_ticket_flow_and_reuse_refused(gw, people, upstream) -> None:
    alice, rita = people["alice"], people["rita"]
    body = unique("ticket flow")
    response = alice.infer(body)
    assert response.status_code == 202
    approval = response.json()["approval"]
    assert (
        response.headers["location"] == approval["url"] == f"/_gateway/approvals/{approval['id']}"
    )
    assert approval["status"] == "pending"
    # The requester may read their own ticket, and retrying too early is refused.
    assert alice.get(f"/{approval['id']}").json()["approval"]["status"] == "pending"
    early = alice.infer(body, approval_id=approval["id"])
    assert (early.status_code, early.json()["error"]["code"]) == (403, "approval_pending")
    assert rita.decide(approval["id"], "approve").status_code == 200
    peers.upstream_reset(upstream.url)
    retried = alice.infer(body, approval_id=approval["id"])
    assert retried.status_code == 200, retried.text
    (seen,) = peers.upstream_requests(upstream.url)
    names = {name.lower() for name, _ in seen["headers"]}
    assert not names & {"x-approval-id", "x-approval-reason", "prefer"}  # consumed here
    again = alice.infer(body, approval_id=approval["id"])
    assert again.status_code == 403
    assert again.json()["error"]["code"] == "approval_used"
    assert "already used" in again.json()["error"]["message"]


def test_body_swap_and_other_requester_refused(gw, people) -> None:
    alice, rita, nina = people["alice"], people["rita"], people["nina"]
    body = unique("the approved body")
    approval_id = alice.ticket(body)
    assert rita.decide(approval_id, "approve").status_code == 200
    swapped = alice.infer(unique("a different body"), approval_id=approval_id)
    assert swapped.status_code == 403
    assert "body differs" in swapped.json()["error"]["message"]
    other = nina.infer(body, approval_id=approval_id)
    assert other.status_code == 403
    assert "requested by someone else" in other.json()["error"]["message"]
    unknown = alice.infer(body, approval_id="apr_" + "0" * 24)
    assert unknown.json()["error"]["code"] == "approval_unknown"
    # None of that used it up: the real request still goes through.
    assert alice.infer(body, approval_id=approval_id).status_code == 200


def test_self_approval_and_non_approver_refused(gw, people) -> None:
    rob, nina, rita = people["rob"], people["nina"], people["rita"]
    approval_id = rob.ticket(unique("rob asks"))
    own = rob.decide(approval_id, "approve")
    assert (own.status_code, own.json()["error"]["code"]) == (403, "self_approval")
    outsider = nina.decide(approval_id, "approve")
    assert (outsider.status_code, outsider.json()["error"]["code"]) == (403, "not_an_approver")
    assert nina.get(f"/{approval_id}").status_code == 404  # not hers to see
    assert rita.get(f"/{approval_id}").json()["approval"]["status"] == "pending"
    refused = [
        (e["approver"], e["code"])
        for e in entries(gw.audit_dir)
        if e["type"] == "approval.refused" and e["approval_id"] == approval_id
    ]
    assert refused == [
        ("rob@example.com", "self_approval"),
        ("nina@example.com", "not_an_approver"),
    ]


def test_reason_required(gw, people) -> None:
    response = people["alice"].infer(unique("no reason"), reason=None)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "approval_reason_required"


def test_dual_control_needs_two_distinct_approvers_and_deny_is_final(gw, people) -> None:
    alice, rita, raj = people["alice"], people["rita"], people["raj"]
    body = unique("two keys", "dual-model")
    approval_id = alice.ticket(body)
    assert rita.decide(approval_id, "approve").json()["approval"]["status"] == "pending"
    twice = rita.decide(approval_id, "approve")
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "already_decided")
    assert raj.decide(approval_id, "approve").json()["approval"]["status"] == "approved"
    assert alice.infer(body, approval_id=approval_id).status_code == 200

    denied_id = alice.ticket(unique("one says no", "dual-model"))
    assert rita.decide(denied_id, "approve").status_code == 200
    assert raj.decide(denied_id, "deny").json()["approval"]["status"] == "denied"
    late = people["rob"].decide(denied_id, "approve")
    assert (late.status_code, late.json()["error"]["code"]) == (409, "approval_conflict")


def test_second_decision_by_the_same_approver_is_already_decided(gw, people) -> None:
    """already_decided: you decided this already; approval_conflict: it is no longer pending."""
    alice, rita, raj = people["alice"], people["rita"], people["raj"]
    body = unique("decided once")
    approval_id = alice.ticket(body)
    assert rita.decide(approval_id, "approve").json()["approval"]["status"] == "approved"
    for verb in ("approve", "deny"):
        again = rita.decide(approval_id, verb)
        assert (again.status_code, again.json()["error"]["code"]) == (409, "already_decided")
    other = raj.decide(approval_id, "approve")
    assert (other.status_code, other.json()["error"]["code"]) == (409, "approval_conflict")
    assert alice.infer(body, approval_id=approval_id).status_code == 200
    after_use = rita.decide(approval_id, "approve")
    assert after_use.json()["error"]["code"] == "already_decided"


def test_expiry(gw, people) -> None:
    alice, rita = people["alice"], people["rita"]
    body = unique("expires", "short-model")
    approval_id = alice.ticket(body)

    def status() -> str:
        return rita.get(f"/{approval_id}").json()["approval"]["status"]

    assert status() == "pending"
    wait_for(lambda: status() == "expired")  # its rule's timeout_s = 1
    late = rita.decide(approval_id, "approve")
    assert late.status_code == 409
    retried = alice.infer(body, approval_id=approval_id)
    assert retried.json()["error"]["code"] == "approval_expired"
    expired = wait_for(
        lambda: [
            e
            for e in entries(gw.audit_dir)
            if e["type"] == "approval.expired" and e.get("approval_id") == approval_id
        ]
    )
    assert len(expired) == 1


def test_concurrent_approvers_exactly_one_decision_wins(gw, people) -> None:
    alice, rita, raj = people["alice"], people["rita"], people["raj"]
    ids = [alice.ticket(unique(f"race {i}")) for i in range(8)]
    with ThreadPoolExecutor(16) as pool:
        futures = [
            (pool.submit(rita.decide, i, "approve"), pool.submit(raj.decide, i, "deny"))
            for i in ids
        ]
        results = [(a.result(), d.result()) for a, d in futures]
    for approval_id, (approve, deny) in zip(ids, results, strict=True):
        codes = sorted([approve.status_code, deny.status_code])
        assert codes == [200, 409], (approve.text, deny.text)
        final = rita.get(f"/{approval_id}").json()["approval"]
        winner = approve if approve.status_code == 200 else deny
        assert final["status"] == winner.json()["approval"]["status"]
        assert len(final["decisions"]) == 1


def test_webhook_receives_masked_events_with_retry(gw, people, webhook) -> None:
    alice, rita = people["alice"], people["rita"]
    approval_id = alice.ticket(unique("webhook " + pii.EMAIL), reason="for " + pii.EMAIL)
    rita.decide(approval_id, "approve", "ok")

    def events() -> list[dict]:
        return [e for e in webhook.events if e["id"] == approval_id]

    got = wait_for(lambda: len(events()) == 2 and events(), timeout=15)
    requested, decided = got
    assert requested["event"] == "approval.requested" and decided["event"] == "approval.decided"
    assert "alice@example.com" in requested["text"] and approval_id in requested["text"]
    assert "rita@example.com approved" in decided["text"]
    assert decided["status"] == "approved"
    raw = str(got)
    assert pii.EMAIL not in raw and "[EMAIL]" in raw


def test_audit_names_requester_and_approver_and_links_by_approval_id(gw, people) -> None:
    alice, rita = people["alice"], people["rita"]
    body = unique("audited " + pii.EMAIL)
    approval_id = alice.ticket(body, reason="because " + pii.EMAIL)
    rita.decide(approval_id, "approve", "fine")
    assert alice.infer(body, approval_id=approval_id).status_code == 200
    log = wait_for(lambda: _linked(gw.audit_dir, approval_id))
    kinds = [e["type"] for e in log]
    assert kinds == [
        "approval.requested",
        "approval.decided",
        "approval.used",
        "decision",
        "inference",
    ]
    requested, decided, used, decision, inference = log
    assert requested["subject"] == "alice@example.com" and requested["rule"] == "credit-risk"
    assert requested["reason"] == "because [EMAIL]" and "request" in requested["sealed"]
    assert decided["approver"] == "rita@example.com" and decided["requester"] == "alice@example.com"
    assert (decided["decision"], decided["reason"]) == ("approve", "fine")
    assert used["approved_by"] == ["rita@example.com"]
    assert decision["approved_by"] == ["rita@example.com"]
    assert inference["decision_seq"] == decision["seq"]
    raw = (gw.audit_dir / "entries").read_bytes()
    assert pii.EMAIL.encode() not in raw
    assert verify_log(gw.audit_dir).problem is None


def _linked(audit_dir, approval_id) -> list[dict]:
    found = [e for e in entries(audit_dir) if e.get("approval_id") == approval_id]
    return found if found and found[-1]["type"] == "inference" else []


def test_pending_approval_survives_a_restart(issuer, upstream, tmp_path, approvals_store) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(approvals_config(issuer.url, upstream.url, tmp_path, store=approvals_store))
    alice_token = peers.mint(issuer.url, "alice@example.com", ["analysts"])
    rita_token = peers.mint(issuer.url, "rita@example.com", ["risk-officers"])
    with launch_gateway(config) as first:
        approval_id = Client(first.url, alice_token).ticket(BODY)
    with launch_gateway(config) as second:
        alice, rita = Client(second.url, alice_token), Client(second.url, rita_token)
        assert rita.get(f"/{approval_id}").json()["approval"]["status"] == "pending"
        assert rita.decide(approval_id, "approve").status_code == 200
        response = alice.infer(BODY, approval_id=approval_id)
        assert response.status_code == 200, response.text
    assert verify_log(tmp_path / "audit").problem is None
