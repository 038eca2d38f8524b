"""Control evaluation as pure functions: statuses follow from config and entries alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.audit import Checkpoint, VerifyReport
from gateway.config import parse
from gateway.evidence.collect import Log, Period
from gateway.evidence.controls import CONTROLS, Status, missing_fields
from gateway.evidence.facts import Scope

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PERIOD = Period(T0, T0 + timedelta(hours=1))


def config(upstream: str = "https://models.internal", server: dict | None = None, **rule: object):
    raw = {
        "server": server or {},
        "identity": {"issuer": "https://idp.example.com", "audience": "gw"},
        "approvals": {"store": "sqlite:///tmp/approvals.db"},
        "connections": [{"name": "llama", "upstream": upstream}],
        "rules": [
            {"id": "chat", "groups": ["analysts"], "connections": ["llama"], "action": "allow"},
            {
                "id": "risky",
                "groups": ["analysts"],
                "models": ["credit-*"],
                "action": "approve",
                "approvers": ["officers"],
                "min_approvals": 2,
            },
            *([rule] if rule else []),
        ],
    }
    return parse(raw, Path("gateway.toml"), "ab" * 32)


def scope(entries: list[dict], cfg=None) -> tuple[Scope, list[dict]]:
    """One log holding `entries` (seq and ts filled in), all in the period and signed."""
    for seq, e in enumerate(entries):
        e.setdefault("ts", (T0 + timedelta(seconds=seq)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        e["seq"] = seq
    checkpoint = Checkpoint("unit/audit", len(entries), bytes(32))
    log = Log(
        directory=Path("audit"),
        verifier=None,  # type: ignore[arg-type]  # not read by these controls
        pinned=True,
        latest=checkpoint,
        latest_note="",
        report=VerifyReport(Path("audit")),
        checkpoint=checkpoint,
    )
    return Scope(cfg or config(), PERIOD, [log]), entries


def evaluate(control_id: str, s: tuple[Scope, list[dict]]):
    """Declare the control, feed the log's entries in one pass, then judge."""
    scope_, entries = s
    pending = next(c for c in CONTROLS if c.id == control_id).evaluate(scope_)
    for e in entries:
        scope_.feed(scope_.logs[0], e["seq"], e)
    return pending()


def approval(requester: str, approver: str, approved_by: list[str]) -> list[dict]:
    return [
        {"type": "approval.requested", "approval_id": "a1", "subject": requester,
         "min_approvals": 2},
        {"type": "approval.decided", "approval_id": "a1", "approver": approver,
         "requester": requester, "decision": "approve"},
        {"type": "decision", "decision": "approve", "rule": "risky", "approval_id": "a1",
         "subject": requester, "approved_by": approved_by},
    ]  # fmt: skip


def test_ac5_not_assessed_without_approvals() -> None:
    outcome = evaluate("AC-5", scope([{"type": "decision", "decision": "allow", "rule": "chat"}]))
    assert outcome.status is Status.NOT_ASSESSED


def test_ac5_counts_refused_attempts_as_enforcement() -> None:
    refused = {"type": "approval.refused", "approval_id": "a1", "approver": "alice",
               "requester": "alice", "decision": "approve", "status": 403,
               "code": "self_approval"}  # fmt: skip
    outcome = evaluate("AC-5", scope([{"type": "approval.requested", "approval_id": "a1",
                                       "subject": "alice"}, refused]))  # fmt: skip
    assert outcome.status is Status.SATISFIED, outcome.reason  # assessed: it was enforced
    measures = {m.name: m for m in outcome.measures}
    assert list(measures["decisions_refused"].seqs["unit/audit"]) == [1]
    assert measures["self_decisions_refused"].total == 1


def test_ac5_satisfied_with_distinct_approvers() -> None:
    outcome = evaluate("AC-5", scope(approval("alice", "rita", ["rita", "raj"])))
    assert outcome.status is Status.SATISFIED, outcome.reason


def test_ac5_self_approval_and_too_few_approvers_are_gaps() -> None:
    outcome = evaluate("AC-5", scope(approval("alice", "alice", ["alice"])))
    assert outcome.status is Status.NOT_SATISFIED
    measures = {m.name: m.total for m in outcome.measures}
    assert measures["self_decisions"] == 1
    assert measures["forwarded_self_approved"] == 1
    assert measures["forwarded_short_of_approvers"] == 1


def test_ac3_an_exchange_without_its_decision_is_a_gap() -> None:
    entries = [
        {"type": "decision", "decision": "allow", "rule": "chat"},
        {"type": "inference", "decision_seq": 0},
        {"type": "inference", "decision_seq": 1},  # points at an inference, not a decision
    ]
    outcome = evaluate("AC-3", scope(entries))
    assert outcome.status is Status.NOT_SATISFIED
    orphans = next(m for m in outcome.measures if m.name == "exchanges_without_decision")
    assert list(orphans.seqs["unit/audit"]) == [2]


def test_sc8_follows_the_upstream_scheme() -> None:
    one = [{"type": "inference", "connection": "llama", "decision_seq": 0}]
    assert evaluate("SC-8", scope(one, config("https://models.internal"))).status is (
        Status.SATISFIED
    )
    plain = evaluate("SC-8", scope(one, config("http://10.0.0.5:8000")))
    assert plain.status is Status.NOT_SATISFIED
    assert "llama" in plain.gaps[0] and "loopback" not in plain.gaps[0]
    sent = next(m for m in plain.measures if m.name == "exchanges_plain_http")
    assert sent.total == 1


def test_sc8_judges_the_listener_too() -> None:
    """A plain-HTTP listener on a network address is a gap; HTTPS there is not."""
    one = [{"type": "inference", "connection": "llama", "decision_seq": 0}]
    exposed = evaluate("SC-8", scope(one, config(server={"listen": "10.0.0.2:8443"})))
    assert exposed.status is Status.NOT_SATISFIED
    assert exposed.gaps == [exposed.gaps[0]] and "10.0.0.2 over plain HTTP" in exposed.gaps[0]
    tls = {"listen": "10.0.0.2:8443", "tls_cert": "/tls/crt", "tls_key": "/tls/key",
           "tls_client_ca": "/tls/ca", "tls_client_auth": "optional"}  # fmt: skip
    https = evaluate("SC-8", scope(one, config(server=tls)))
    assert https.status is Status.SATISFIED, https.gaps
    listener = next(m for m in https.measures if m.name == "listener")
    assert listener.items == (
        "10.0.0.2:8443 (HTTPS, TLS 1.2 or later, client certificates optional)",
    )


def test_ac6_unscoped_grant_is_a_gap() -> None:
    broad = config(id="everything", groups=["staff"], action="allow")
    outcome = evaluate("AC-6", scope([], broad))
    assert outcome.status is Status.NOT_SATISFIED and "unscoped_grants" in outcome.reason


def test_cm3_other_policy_in_force_is_a_gap() -> None:
    loaded = {"type": "policy.loaded", "config_sha256": "cd" * 32, "rules": ["other"],
              "connections": ["llama"]}  # fmt: skip
    outcome = evaluate("CM-3/CM-5", scope([{"type": "gateway.started"}, loaded]))
    assert outcome.status is Status.NOT_SATISFIED
    same = {**loaded, "rules": ["chat", "risky"]}
    assert evaluate("CM-3/CM-5", scope([{"type": "gateway.started"}, same])).status is (
        Status.SATISFIED
    )
    assert evaluate("CM-3/CM-5", scope([])).status is Status.NOT_ASSESSED


def test_au8_out_of_order_time_stamps_are_a_gap() -> None:
    entries = [{"type": "gateway.started", "ts": "2026-01-02T03:04:07.000000Z"},
               {"type": "policy.loaded", "ts": "2026-01-02T03:04:06.000000Z"}]  # fmt: skip
    assert evaluate("AU-8", scope(entries)).status is Status.NOT_SATISFIED


def test_au3_content_by_entry_type() -> None:
    assert missing_fields({"type": "denied", "ts": "t", "client": "c", "status": 400,
                           "code": "x", "reason": "y"}) == []  # fmt: skip
    unauthenticated = {"type": "denied", "ts": "t", "client": "c", "status": 401, "code": "x",
                       "reason": "y", "request_id": "r", "received": "t", "method": "POST",
                       "path": "/p", "request_sha256": "h"}  # fmt: skip
    assert missing_fields(unauthenticated) == []
    assert missing_fields({**unauthenticated, "status": 403}) == ["subject"]
