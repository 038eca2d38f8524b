"""`/_gateway/approvals`: the approvers' HTTP API, and the web page for a browser.

- `GET approvals[?status=S]`: approvals the caller may see (they are an approver for it, or
  its requester); with `Accept: text/html` and no JSON asked for, the web page instead.
- `GET approvals/{id}`: one approval (the ticket's `url`; the requester polls it).
- `POST approvals/{id}/approve|deny` with `{"reason": "..."}` (optional): a decision.

Every JSON call needs a bearer token; the page itself is static and signs in with one.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson

from gateway import headers as hdr
from gateway.approvals.page import PAGE, PAGE_HEADERS
from gateway.approvals.service import Approvals
from gateway.approvals.state import STATES, Approval
from gateway.errors import GatewayError
from gateway.identity import Identity, TokenVerifier, bearer_token
from gateway.server import IncomingRequest, ResponseWriter

JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
MAX_REASON = 1000


def wants_html(request: IncomingRequest) -> bool:
    accept = (hdr.get(request.headers, b"accept") or b"").lower()
    return b"text/html" in accept and b"application/json" not in accept


def may_see(approval: Approval, who: Identity) -> bool:
    return who.subject == approval.requester or not who.groups.isdisjoint(approval.approvers)


class ApprovalsApi:
    def __init__(self, verifier: TokenVerifier, approvals: Approvals) -> None:
        self.verifier = verifier
        self.approvals = approvals

    async def handle(self, name: str, request: IncomingRequest, writer: ResponseWriter) -> None:
        """`name` is the path after `/_gateway/`: `approvals`, `approvals/{id}[/verb]`."""
        if self.approvals.store is None:
            raise GatewayError(404, "not_found", "this gateway has no [approvals] configured")
        parts = name.split("/")
        if parts == ["approvals"] and request.method in ("GET", "HEAD") and wants_html(request):
            await writer.send_full(200, PAGE_HEADERS, PAGE)
            return
        who = await self.verifier.verify(bearer_token(hdr.get(request.headers, b"authorization")))
        now = self.approvals.clock()
        if len(parts) == 1:
            _method(request, "GET", "HEAD")
            status = _status(request.query)
            visible = [a for a in await self.approvals.list(status) if may_see(a, who)]
            await _send(writer, {"approvals": [a.public(now) for a in visible]})
        elif len(parts) == 2:
            _method(request, "GET", "HEAD")
            approval = await self.approvals.get(parts[1])
            if not may_see(approval, who):
                raise GatewayError(404, "not_found", f"no approval {parts[1]!r}")
            await _send(writer, {"approval": approval.public(now)})
        elif len(parts) == 3 and parts[2] in ("approve", "deny"):
            _method(request, "POST")
            reason = _reason(request.body)
            approval = await self.approvals.decide(parts[1], who, parts[2], reason, request)
            await _send(writer, {"approval": approval.public(now)})
        else:
            raise GatewayError(404, "not_found", f"no gateway endpoint {request.path!r}")


def _method(request: IncomingRequest, *allowed: str) -> None:
    if request.method not in allowed:
        raise GatewayError(405, "method_not_allowed", f"{request.method} not allowed here")


def _status(query: str) -> str | None:
    values = parse_qs(query).get("status")
    if not values:
        return None
    if values[0] not in STATES:
        raise GatewayError(400, "bad_request", f"status must be one of {', '.join(STATES)}")
    return values[0]


def _reason(body: bytes) -> str | None:
    """`{"reason": "..."}`, an empty body, or `{}`."""
    if not body.strip():
        return None
    try:
        document = orjson.loads(body)
        reason = document.get("reason") if isinstance(document, dict) else ...
    except orjson.JSONDecodeError:
        reason = ...
    if reason is not None and not isinstance(reason, str):
        raise GatewayError(400, "bad_request", 'the body must be {"reason": "..."}')
    return reason.strip()[:MAX_REASON] or None if reason else None


async def _send(writer: ResponseWriter, document: dict[str, object]) -> None:
    await writer.send_full(200, JSON, orjson.dumps(document))
