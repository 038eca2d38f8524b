"""`/_gateway/approvals`: the approvers' HTTP API, and the web page for a browser.

- `GET approvals[?status=S]`: approvals the caller may see (they are an approver for it, or
  its requester); with `Accept: text/html` and no JSON asked for, the web page instead.
- `GET approvals/{id}`: one approval (the ticket's `url`; the requester polls it).
- `POST approvals/{id}/approve|deny` with `{"reason": "..."}` (optional): a decision.
- with `[approvals] sign_in_issuer`: `GET approvals/login` and `approvals/callback` (the
  IdP sign-in, see signin.py), `GET approvals/session` (who is signed in, and the CSRF token),
  `POST approvals/logout`.

Every JSON call needs a bearer token, or with IdP sign-in the session cookie (and for a POST
its `x-csrf-token`); the page itself is static.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

import orjson

from gateway import headers as hdr
from gateway.approvals.page import PAGE, PAGE_HEADERS, PAGE_SIGN_IN
from gateway.approvals.service import Approvals
from gateway.approvals.signin import SignIn, csrf_token
from gateway.approvals.state import STATES, Approval
from gateway.errors import GatewayError
from gateway.identity import AuthError, Identity, TokenVerifier, bearer_token
from gateway.server import IncomingRequest, ResponseWriter

JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
MAX_REASON = 1000


def wants_html(request: IncomingRequest) -> bool:
    accept = (hdr.get(request.headers, b"accept") or b"").lower()
    return b"text/html" in accept and b"application/json" not in accept


def may_see(approval: Approval, who: Identity) -> bool:
    return who.subject == approval.requester or not who.groups.isdisjoint(approval.approvers)


SIGN_IN_STEPS = ("login", "callback", "logout", "session")


class ApprovalsApi:
    def __init__(
        self, verifier: TokenVerifier, approvals: Approvals, sign_in: SignIn | None = None
    ) -> None:
        self.verifier = verifier
        self.approvals = approvals
        self.sign_in = sign_in

    async def handle(self, name: str, request: IncomingRequest, writer: ResponseWriter) -> None:
        """`name` is the path after `/_gateway/`: `approvals`, `approvals/{id}[/verb]`."""
        if self.approvals.store is None:
            raise GatewayError(404, "not_found", "this gateway has no [approvals] configured")
        parts = name.split("/")
        if parts == ["approvals"] and request.method in ("GET", "HEAD") and wants_html(request):
            await writer.send_full(200, PAGE_HEADERS, PAGE_SIGN_IN if self.sign_in else PAGE)
            return
        if self.sign_in is not None and len(parts) == 2 and parts[1] in SIGN_IN_STEPS:
            await self._sign_in_step(self.sign_in, parts[1], request, writer)
            return
        who = (await self._caller(request))[1]
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

    async def _caller(self, request: IncomingRequest) -> tuple[str | None, Identity]:
        """A bearer token's identity, else (with IdP sign-in) the session's and its token."""
        authorization = hdr.get(request.headers, b"authorization")
        if authorization is not None or self.sign_in is None:
            return None, await self.verifier.verify(bearer_token(authorization))
        found = await self.sign_in.session(hdr.get(request.headers, b"cookie"))
        if found is None:
            raise AuthError(
                "sign in at /_gateway/approvals/login, or send a bearer token",
                invalid_token=False,
            )
        session, who = found
        if request.method == "POST":
            sent = hdr.get(request.headers, b"x-csrf-token") or b""
            if not hmac.compare_digest(sent, csrf_token(session).encode()):
                raise GatewayError(403, "csrf_failed", "x-csrf-token is missing or wrong")
        return session, who

    async def _sign_in_step(
        self, sign_in: SignIn, step: str, request: IncomingRequest, writer: ResponseWriter
    ) -> None:
        if step == "login":
            _method(request, "GET")
            await writer.send_full(302, sign_in.login(), b"")
        elif step == "callback":
            _method(request, "GET")
            headers = await sign_in.callback(request.query, hdr.get(request.headers, b"cookie"))
            await writer.send_full(303, headers, b"")
        elif step == "logout":
            _method(request, "POST")
            await self._caller(request)  # CSRF-checked: nobody signs another page out
            await writer.send_full(204, sign_in.logout(), b"")
        else:
            _method(request, "GET", "HEAD")
            session, who = await self._caller(request)
            if session is None:
                raise GatewayError(404, "not_found", "a bearer token has no session")
            await _send(
                writer,
                {
                    "subject": who.subject,
                    "groups": sorted(who.groups),
                    "expires_at": who.expires_at,
                    "csrf": csrf_token(session),
                },
            )


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
