"""The two ways a request waits for approval on the request path: hold and ticket.

- Hold: with `Prefer: wait=N` (RFC 7240) the request is held up to N s (at most
  `hold_max_s`); approved, it goes on to the upstream; denied, 403.
- Ticket: otherwise, or when the wait runs out, 202 with `Location` and
  `{"approval": {"id", "status", "url"}}`. The client retries the same request with
  `x-approval-id`; it goes through once approved, unexpired, unused, for the same requester,
  connection, model and body.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from gateway import headers as hdr
from gateway.approvals.service import URL_PREFIX, Approvals
from gateway.approvals.state import PENDING, Approval, Retry, mismatch
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.proxy import Exchange

WAIT = re.compile(r"^\s*wait\s*=\s*\"?(\d{1,9})\"?\s*$", re.IGNORECASE)
APPROVAL_ID = re.compile(r"^apr_[0-9a-f]{24}$")
MAX_REASON = 1000  # characters of x-approval-reason kept


@dataclass(frozen=True, slots=True)
class Ticket:
    """The 202 a request gets while its approval is pending."""

    approval: Approval

    @property
    def url(self) -> str:
        return URL_PREFIX + self.approval.id

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", b"application/json"), (b"location", self.url.encode())]

    def body(self) -> bytes:
        view = {"id": self.approval.id, "status": self.approval.state.name, "url": self.url}
        return orjson.dumps({"approval": view})


def prefer_wait(value: bytes | None) -> int:
    """Seconds from `Prefer: wait=N` (other preferences ignored); 0 if absent or malformed."""
    if not value:
        return 0
    for preference in value.decode("latin-1").split(","):
        match = WAIT.match(preference.split(";", 1)[0])
        if match:
            return int(match.group(1))
    return 0


async def gate(approvals: Approvals, exchange: Exchange, hold_max_s: float) -> Ticket | None:
    """None when the request may go on (its approval is consumed); a Ticket for a 202.

    Raises:
        GatewayError: 403 denied, expired, used, or granted for another request; 400 the rule
            needs a reason and none was given; 503 the store or the audit log failed.
    """
    request = exchange.request
    wait = min(prefer_wait(hdr.joined(request.headers, b"prefer")), hold_max_s)
    presented = hdr.get(request.headers, b"x-approval-id")
    assert exchange.identity is not None and exchange.connection is not None
    retry = Retry(
        requester=exchange.identity.subject,
        connection=exchange.connection,
        model=exchange.model,
        body_sha256=request.body_sha256(),
        request_id=request.request_id,
        now=approvals.clock(),
    )
    if presented is not None:
        approval = await _presented(approvals, presented.decode("latin-1").strip())
        exchange.approval = approval
        problem = mismatch(approval, retry)
        if problem is not None:  # refused before holding: a swapped body never waits
            raise GatewayError(403, "approval_mismatch", problem)
    else:
        rule = exchange.decision.rule if exchange.decision else None
        assert rule is not None
        reason = hdr.get(request.headers, b"x-approval-reason")
        text = reason.decode("utf-8", "replace").strip()[:MAX_REASON] if reason else None
        if rule.reason_required and not text:
            raise GatewayError(
                400, "approval_reason_required", "this call needs approval: send x-approval-reason"
            )
        approval = await approvals.request(exchange, rule, text)
        exchange.approval = approval
    if approval.state is PENDING and wait > 0:
        approval = await approvals.wait(approval.id, wait)
        exchange.approval = approval
    if approval.state is PENDING and presented is None:
        return Ticket(approval)
    retry = dataclasses.replace(retry, now=approvals.clock())
    await approvals.redeem(approval, retry, exchange)  # raises 403 unless APPROVED
    return None


async def _presented(approvals: Approvals, approval_id: str) -> Approval:
    if not APPROVAL_ID.match(approval_id):
        raise GatewayError(403, "approval_unknown", "x-approval-id does not name an approval")
    try:
        return await approvals.get(approval_id)
    except GatewayError as exc:
        if exc.status == 404:
            raise GatewayError(403, "approval_unknown", f"no approval {approval_id}") from None
        raise
