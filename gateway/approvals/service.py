"""The approval service: the state machine, a store, the audit log and the webhook put together.

Every change follows one pattern: read the row, let state.py compute the next approval, write it
back with a compare-and-swap, and re-read and re-apply if another decision got there first (the
state machine then refuses what is no longer legal). A hold waits on an in-process event, set by
local decisions and, with PostgreSQL, by the store's announcement of a change made by any
replica or worker; with SQLite, which announces nothing, it also re-reads every HOLD_POLL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway._masker import DEFAULT_REQUEST_PATHS, Masker
from gateway.approvals import state
from gateway.approvals.pgstore import PostgresStore
from gateway.approvals.state import APPROVED, PENDING, Approval, ApprovalRefused, Retry
from gateway.approvals.store import ApprovalStore, Row, SqliteStore, StoreUnavailable
from gateway.approvals.webhook import Webhook
from gateway.auditing import Auditor, request_fields
from gateway.config import ApprovalsConfig, RuleConfig
from gateway.errors import GatewayError
from gateway.identity import Identity

log = logging.getLogger("gateway.approvals")

URL_PREFIX = "/_gateway/approvals/"
HOLD_POLL_S = 1.0  # SQLite only: a decision taken in another process reaches a hold this fast
PING_TIMEOUT_S = 2.0  # health check of the store
SWEEP_S = 5.0  # how often overdue approvals are expired (and recorded) when nobody looks
CAS_ATTEMPTS = 8  # concurrent writers on one approval; more than this is a bug, not load
LIST_LIMIT = 500
PREVIEW_MAX = 4000  # characters of the masked request body an approver is shown


def refused(exc: ApprovalRefused) -> GatewayError:
    return GatewayError(exc.status, exc.code, exc.message)


def store_down(exc: StoreUnavailable) -> GatewayError:
    log.error("approval store: %s", exc)
    return GatewayError(
        503, "approvals_unavailable", "the approval store is unavailable; try again shortly"
    )


def open_store(url: str) -> ApprovalStore:
    """A store for a `[approvals] store` URL (validated by config.py)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return SqliteStore(Path(parts.path))
    return PostgresStore(url)


class Approvals:
    """Creates, decides, holds, redeems and expires approvals. Disabled without `[approvals]`."""

    def __init__(
        self,
        config: ApprovalsConfig | None,
        auditor: Auditor,
        clock: Callable[[], float] = time.time,
        on_wake: Callable[[str], None] = lambda _by: None,
    ) -> None:
        self.config = config
        self.auditor = auditor
        self.clock = clock
        self.on_wake = on_wake  # counts what woke a hold: "this_process", "store", "poll"
        self.store: ApprovalStore | None = None
        self.webhook = Webhook(config.webhook_url) if config and config.webhook_url else None
        self.holds: dict[str, set[asyncio.Event]] = {}  # approval id -> one event per hold
        self.sweeper: asyncio.Task[None] | None = None
        self.text_masker = Masker(["all"])
        self.body_masker = Masker(["all"], paths=DEFAULT_REQUEST_PATHS)

    async def open(self) -> None:
        if self.config is None:
            return
        store = open_store(self.config.store)
        store.subscribe(self._announced)
        await store.open()
        self.store = store
        self.sweeper = asyncio.get_running_loop().create_task(self._sweep_periodically())

    async def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        if self.webhook is not None:
            await self.webhook.close()
        if self.store is not None:
            await self.store.close()

    async def reachable(self) -> bool | None:
        """For health: None without [approvals]; else whether the store answers."""
        if self.store is None:
            return None
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self.store.ping()
        except (StoreUnavailable, TimeoutError):
            return False
        return True

    # -- reading ----------------------------------------------------------------------------

    def _store(self) -> ApprovalStore:
        if self.store is None:
            raise GatewayError(503, "approvals_unavailable", "this gateway has no [approvals]")
        return self.store

    async def get(self, approval_id: str) -> Approval:
        """An approval, expired first if overdue. Raises 404 if unknown."""
        try:
            row = await self._store().get(approval_id)
        except StoreUnavailable as exc:
            raise store_down(exc) from None
        if row is None:
            raise GatewayError(404, "not_found", f"no approval {approval_id!r}")
        return await self._expire_if_due(_load(row))

    async def list(self, status: str | None) -> list[Approval]:
        try:
            rows = await self._store().list(status, LIST_LIMIT)
        except StoreUnavailable as exc:
            raise store_down(exc) from None
        out = [await self._expire_if_due(_load(r)) for r in rows]
        return [a for a in out if status is None or a.state.name == status]

    # -- changing ---------------------------------------------------------------------------

    async def _change(
        self, approval: Approval, step: Callable[[Approval], Approval]
    ) -> tuple[Approval, Approval]:
        """Apply `step` with compare-and-swap; returns (what it was applied to, the result)."""
        store = self._store()
        for _ in range(CAS_ATTEMPTS):
            try:
                new = step(approval)
            except ApprovalRefused as exc:
                raise refused(exc) from None
            try:
                if await store.replace(_row(new, approval.version + 1), approval.version):
                    self._wake(new.id, "this_process")
                    return approval, dataclasses.replace(new, version=approval.version + 1)
                row = await store.get(approval.id)
            except StoreUnavailable as exc:
                raise store_down(exc) from None
            assert row is not None  # rows are never deleted
            approval = _load(row)
        raise GatewayError(409, "approval_conflict", "too many concurrent changes; try again")

    async def request(self, exchange: Any, rule: RuleConfig, reason: str | None) -> Approval:
        """Record a new pending approval for an exchange the policy sent to `approve`.

        The `approval.requested` entry (sealing the original body and reason) is durable
        before the approval exists, so nothing can be approved that the log does not show.
        """
        config = self.config
        store = self._store()
        assert config is not None
        request = exchange.request
        now = self.clock()
        timeout = rule.timeout_s or config.timeout_s
        approval = Approval(
            id="apr_" + secrets.token_hex(12),
            requester=exchange.identity.subject,
            connection=exchange.connection,
            model=exchange.model,
            method=request.method,
            path=request.path,
            body_sha256=request.body_sha256(),
            rule=rule.id,
            approvers=rule.approvers,
            min_approvals=rule.min_approvals,
            created=now,
            expires=now + timeout,
            timeout_s=timeout,
            request_id=request.request_id,
            reason=self._mask_text(reason),
            preview=self._preview(request.body),
        )
        entry = request_fields(exchange)
        entry.update(
            type="approval.requested",
            approval_id=approval.id,
            approvers=list(approval.approvers),
            min_approvals=approval.min_approvals,
            expires_at=_rfc3339(approval.expires),
            reason=approval.reason,
        )
        sealed = {"request": request.body, "reason": (reason or "").encode()}
        await self.auditor.append(entry, sealed)
        try:
            await store.insert(_row(approval, 0))
        except StoreUnavailable as exc:
            raise store_down(exc) from None
        self._notify("approval.requested", approval)
        return approval

    async def decide(
        self, approval_id: str, who: Identity, decision: str, reason: str | None, context: Any
    ) -> Approval:
        """One approver's decision (`context` is their HTTP request, for the audit entry)."""
        now = self.clock()
        masked = self._mask_text(reason)
        approval = await self.get(approval_id)
        try:
            _, new = await self._change(
                approval, lambda a: state.decide(a, who.subject, who.groups, decision, masked, now)
            )
        except GatewayError as exc:
            # A refused attempt (self-approval, not an approver, ...) is evidence too (AC-5).
            await self.auditor.append(
                {
                    "type": "approval.refused",
                    "approval_id": approval.id,
                    "request_id": context.request_id,
                    "client": context.client,
                    "approver": who.subject,
                    "approver_groups": sorted(who.groups),
                    "requester": approval.requester,
                    "decision": decision,
                    "status": exc.status,
                    "code": exc.code,
                    "reason": exc.message,
                }
            )
            raise
        entry = {
            "type": "approval.decided",
            "approval_id": new.id,
            "request_id": context.request_id,
            "client": context.client,
            "approver": who.subject,
            "approver_groups": sorted(who.groups),
            "requester": new.requester,
            "decision": decision,
            "reason": masked,
            "status": new.state.name,
            "approved_by": new.approved_by,
        }
        await self.auditor.append(entry)  # 503 to the approver if it cannot be written
        self._notify("approval.decided", new, who.subject, decision)
        return new

    async def redeem(self, approval: Approval, retry: Retry, exchange: Any) -> Approval:
        """Consume an approval for the request it covers; records `approval.used`."""
        _, used = await self._change(approval, lambda a: state.use(a, retry))
        entry = {
            "type": "approval.used",
            "approval_id": used.id,
            "request_id": retry.request_id,
            "subject": retry.requester,
            "connection": retry.connection,
            "model": retry.model,
            "request_sha256": retry.body_sha256,
            "approved_by": used.approved_by,
        }
        exchange.approval = used
        await self.auditor.append(entry)
        return used

    async def _expire_if_due(self, approval: Approval) -> Approval:
        now = self.clock()
        if not state.is_due(approval, now):
            return approval
        try:
            before, expired = await self._change(approval, lambda a: state.expire(a, now))
        except GatewayError:
            return await self.get(approval.id)  # someone else moved it first
        entry = {
            "type": "approval.expired",
            "approval_id": expired.id,
            "requester": expired.requester,
            "was": before.state.name,
            "expires_at": _rfc3339(before.expires),
        }
        try:
            await self.auditor.append(entry)
        except GatewayError as exc:
            log.error("audit: approval.expired for %s not recorded: %s", expired.id, exc.message)
        return expired

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                rows = await self._store().due((PENDING.name, APPROVED.name), self.clock())
                for row in rows:
                    await self._expire_if_due(_load(row))
            except (StoreUnavailable, GatewayError) as exc:
                log.error("approval sweep failed: %s", exc)

    # -- holding ----------------------------------------------------------------------------

    async def wait(self, approval_id: str, seconds: float) -> Approval:
        """Until the approval leaves `pending` or `seconds` pass; returns it as it then is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        poll = not self._store().announces_changes
        polled = False
        changed = asyncio.Event()
        self.holds.setdefault(approval_id, set()).add(changed)
        try:
            while True:
                changed.clear()  # before reading: a change after the read sets it again
                approval = await self.get(approval_id)
                remaining = deadline - loop.time()
                if approval.state is not PENDING or remaining <= 0:
                    if polled and approval.state is not PENDING:
                        self.on_wake("poll")
                    return approval
                polled = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, HOLD_POLL_S) if poll else remaining):
                        await changed.wait()
                        continue
                polled = poll
        finally:
            waiting = self.holds[approval_id]
            waiting.discard(changed)
            if not waiting:
                del self.holds[approval_id]

    def _wake(self, approval_id: str, by: str) -> None:
        for event in self.holds.get(approval_id, ()):
            if not event.is_set():
                self.on_wake(by)
                event.set()

    def _announced(self, approval_id: str | None) -> None:
        """The store says this approval changed (None: anything may have; wake every hold)."""
        for held in [approval_id] if approval_id is not None else list(self.holds):
            self._wake(held, "store")

    # -- masking and notifying -------------------------------------------------------------

    def _mask_text(self, text: str | None) -> str | None:
        return self.text_masker.mask_text(text)[0] if text else None

    def _preview(self, body: bytes) -> str | None:
        """The request body as approvers see it: masked, and only if it is JSON."""
        try:
            masked, _ = self.body_masker.mask_json(body)
        except ValueError:
            return None
        return masked.decode("utf-8", "replace")[:PREVIEW_MAX]

    def _notify(self, event: str, approval: Approval, who: str = "", decision: str = "") -> None:
        if self.webhook is None:
            return
        view = approval.public(self.clock())
        del view["preview"]  # the webhook leaves the gateway: as little content as possible
        url = URL_PREFIX + approval.id
        what = f"{approval.model or 'a call'} on {approval.connection} (rule {approval.rule})"
        if event == "approval.requested":
            because = f': "{approval.reason}"' if approval.reason else ""
            text = f"{approval.requester} asks to call {what}{because}. Decide at {url}"
        else:
            text = f"{who} {decision_past(decision)} {approval.requester}'s call to {what}: "
            text += f"now {approval.state.name}. {url}"
        self.webhook.send({"event": event, **view, "url": url, "text": text})


def decision_past(decision: str) -> str:
    return "approved" if decision == "approve" else "denied"


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _row(approval: Approval, version: int) -> Row:
    return Row(
        approval.id,
        approval.state.name,
        version,
        approval.created,
        approval.expires,
        approval.record(),
    )


def _load(row: Row) -> Approval:
    return Approval.from_record(row.record, row.version)
