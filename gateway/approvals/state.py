"""The approval state machine: pending -> approved | denied | expired; approved -> used | expired.

Sans-IO and pure, in the manner of h11's `_state.py`: states are marker objects, the legal
transitions are one table, and `_set_state` is the only code that changes a state (like
asyncpg's `_set_state`). Who may decide, how many approvers are needed and whether a retried
request matches what was approved are checked here too, so every store and every replica
applies the same rules. Callers persist the returned copy with a compare-and-swap on `version`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson


class State:
    """A marker object for one state; compared by identity, stored by name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name.upper()


PENDING = State("pending")
APPROVED = State("approved")
DENIED = State("denied")
EXPIRED = State("expired")
USED = State("used")
STATES = {s.name: s for s in (PENDING, APPROVED, DENIED, EXPIRED, USED)}

# Events that move an approval.
VOTE, APPROVE, DENY, EXPIRE, USE = "vote", "approve", "deny", "expire", "use"

# TRANSITIONS[state][event] -> next state. Anything absent is illegal; terminal states are empty.
TRANSITIONS: dict[State, dict[str, State]] = {
    PENDING: {VOTE: PENDING, APPROVE: APPROVED, DENY: DENIED, EXPIRE: EXPIRED},
    APPROVED: {USE: USED, EXPIRE: EXPIRED},
    DENIED: {},
    EXPIRED: {},
    USED: {},
}


class ApprovalRefused(Exception):
    """A step the rules do not allow; carries the HTTP status and code the edge should send."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class IllegalTransition(ApprovalRefused):
    """An event the current state does not accept (e.g. approving a denied request)."""

    def __init__(self, approval_id: str, state: State, event: str) -> None:
        super().__init__(
            409, "approval_conflict", f"approval {approval_id} is already {state.name}"
        )
        self.state, self.event = state, event


@dataclass(frozen=True, slots=True)
class Vote:
    approver: str
    decision: str  # approve | deny
    reason: str | None  # masked
    at: float


@dataclass(frozen=True, slots=True)
class Approval:
    """One request waiting for (or granted) human approval; never holds an unmasked value."""

    id: str
    requester: str
    connection: str
    model: str | None
    method: str
    path: str
    body_sha256: str
    rule: str
    approvers: tuple[str, ...]  # groups whose members may decide
    min_approvals: int
    created: float
    expires: float
    timeout_s: float
    request_id: str
    reason: str | None = None  # the requester's, masked
    preview: str | None = None  # the request body, masked
    state: State = PENDING
    votes: tuple[Vote, ...] = ()
    used_request_id: str | None = None
    version: int = 0  # bumped by the store on every successful update

    @property
    def approved_by(self) -> list[str]:
        return [v.approver for v in self.votes if v.decision == "approve"]

    def record(self) -> bytes:
        """The stored form (JSON), without the store's version."""
        data = dataclasses.asdict(self)
        data["state"] = self.state.name
        del data["version"]
        return orjson.dumps(data)

    @classmethod
    def from_record(cls, record: bytes, version: int) -> Approval:
        data: dict[str, Any] = orjson.loads(record)
        data["state"] = STATES[data["state"]]
        data["approvers"] = tuple(data["approvers"])
        data["votes"] = tuple(Vote(**v) for v in data["votes"])
        return cls(**data, version=version)

    def public(self, now: float) -> dict[str, Any]:
        """What approvers and the requester see (masked fields only)."""
        return {
            "id": self.id,
            "status": self.state.name,
            "requester": self.requester,
            "connection": self.connection,
            "model": self.model,
            "method": self.method,
            "path": self.path,
            "rule": self.rule,
            "reason": self.reason,
            "preview": self.preview,
            "body_sha256": self.body_sha256,
            "approvers": list(self.approvers),
            "min_approvals": self.min_approvals,
            "decisions": [dataclasses.asdict(v) for v in self.votes],
            "created": self.created,
            "expires": self.expires,
            "age_s": round(max(now - self.created, 0.0), 1),
        }


def _set_state(approval: Approval, event: str, **changes: Any) -> Approval:
    """The one place a state changes: refuses any event the table does not allow."""
    target = TRANSITIONS[approval.state].get(event)
    if target is None:
        raise IllegalTransition(approval.id, approval.state, event)
    return dataclasses.replace(approval, state=target, **changes)


def is_due(approval: Approval, now: float) -> bool:
    return EXPIRE in TRANSITIONS[approval.state] and now >= approval.expires


def expire(approval: Approval, now: float) -> Approval:
    """Pending or approved-but-unused past its deadline."""
    if not is_due(approval, now):
        raise ApprovalRefused(409, "approval_conflict", f"approval {approval.id} is not due")
    return _set_state(approval, EXPIRE)


def decide(
    approval: Approval,
    approver: str,
    groups: frozenset[str],
    decision: str,
    reason: str | None,
    now: float,
) -> Approval:
    """Record one approver's decision.

    Args:
        decision: "approve" or "deny". A deny by any approver is final; approvals count
            distinct approvers until `min_approvals`.

    Raises:
        ApprovalRefused: 403 not an approver or their own request, 409 already decided by
            them or no longer pending, 400 unknown decision.
    """
    if decision not in (APPROVE, DENY):
        raise ApprovalRefused(400, "bad_request", "decision must be approve or deny")
    # Before the state: an approver's own vote is why it is no longer pending, often enough.
    if any(v.approver == approver for v in approval.votes):
        raise ApprovalRefused(409, "already_decided", "you have already decided on this request")
    if approval.state is not PENDING:
        raise IllegalTransition(approval.id, approval.state, decision)
    if set(approval.approvers).isdisjoint(groups):
        raise ApprovalRefused(
            403, "not_an_approver", f"only members of {', '.join(approval.approvers)} may decide"
        )
    if approver == approval.requester:
        raise ApprovalRefused(403, "self_approval", "nobody may decide on their own request")
    votes = (*approval.votes, Vote(approver, decision, reason, now))
    if decision == DENY:
        return _set_state(approval, DENY, votes=votes)
    if sum(v.decision == APPROVE for v in votes) < approval.min_approvals:
        return _set_state(approval, VOTE, votes=votes)
    # The approved ticket gets its own full timeout to be used.
    return _set_state(approval, APPROVE, votes=votes, expires=now + approval.timeout_s)


@dataclass(frozen=True, slots=True)
class Retry:
    """What a request presenting `x-approval-id` is, to be compared with what was approved."""

    requester: str
    connection: str
    model: str | None
    body_sha256: str
    request_id: str
    now: float


def mismatch(approval: Approval, retry: Retry) -> str | None:
    """Why this approval does not cover this request, or None if it does (state aside)."""
    if retry.requester != approval.requester:
        return f"approval {approval.id} was requested by someone else"
    if retry.connection != approval.connection:
        return f"approval {approval.id} is for another connection"
    if retry.model != approval.model:
        return f"approval {approval.id} is for another model"
    if retry.body_sha256 != approval.body_sha256:
        return f"the request body differs from the one approval {approval.id} was granted for"
    return None


def use(approval: Approval, retry: Retry) -> Approval:
    """Consume an approved approval for the request it was granted for.

    Raises:
        ApprovalRefused: 403 with the reason: another requester, connection, model or body;
            still pending, denied, expired or already used.
    """
    problem = mismatch(approval, retry)
    if problem is not None:
        raise ApprovalRefused(403, "approval_mismatch", problem)
    if approval.state is APPROVED and is_due(approval, retry.now):
        raise ApprovalRefused(403, "approval_expired", f"approval {approval.id} has expired")
    reasons = {
        PENDING: ("approval_pending", "is still pending: no approver has approved it yet"),
        DENIED: ("approval_denied", "was denied by an approver"),
        EXPIRED: ("approval_expired", "has expired"),
        USED: ("approval_used", "was already used: an approval is good for one request"),
    }
    if approval.state in reasons:
        code, why = reasons[approval.state]
        raise ApprovalRefused(403, code, f"approval {approval.id} {why}")
    return _set_state(approval, USE, used_request_id=retry.request_id)
