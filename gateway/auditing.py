"""What the request path writes to the audit log, and when.

- `denied`: every refusal (401, 403, 404, 4xx with its reason), with the request body sealed.
- `decision`: an allowed call, durable (in sync mode) before anything is sent upstream; it seals
  the original request body.
- `inference`: the completed exchange, durable before the response's last byte is released; it
  seals the original (unmasked) response body and links to its `decision` entry.
- Requests under an `approve` rule also carry `approval_id` (and `approved_by` once approved);
  the `approval.*` entries are written by gateway/approvals/service.py.
- `gateway.started`, `policy.loaded`, `gateway.stopped` around the process's life.

If the log cannot be written the caller gets 503 and nothing is forwarded (fail closed).
Entries never hold a token, a credential or an unmasked value: bodies go only into `sealed/`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.audit import AuditLog, AuditUnavailable
from gateway.audit.epochs import EpochLog
from gateway.audit.seal import SealedStream
from gateway.config import AuditConfig, Config
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.proxy import Exchange

log = logging.getLogger("gateway.audit")
log_error = log.error


def unavailable(exc: AuditUnavailable) -> GatewayError:
    return GatewayError(503, "audit_unavailable", f"refused: {exc}; nothing was forwarded")


class Auditor:
    """The gateway's handle on its audit log; a no-op when `[audit]` is not configured."""

    def __init__(self, log: AuditLog | EpochLog | None) -> None:
        self.log = log
        self.background: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, config: AuditConfig | None, worker: int | None = None) -> Auditor:
        """Worker N of a multi-worker gateway keeps its own log in `{dir}/{N}/`, `{origin}/{N}`;
        with `epoch`, one log per period below that (gateway/audit/epochs.py)."""
        if config is None:
            return cls(None)
        directory, origin = Path(config.dir), config.origin
        if worker is not None:
            directory, origin = directory / str(worker), f"{origin}/{worker}"
        signing, sealing = Path(config.signing_key), Path(config.sealing_key)
        durability: Any = config.durability  # checked by config.py
        if config.epoch is None:
            log: AuditLog | EpochLog = await AuditLog.open(
                directory, origin=origin, signing_key=signing, sealing_key=sealing,
                durability=durability,
            )  # fmt: skip
        else:
            log = await EpochLog.open(
                directory, origin=origin, kind=config.epoch, signing_key=signing,
                sealing_key=sealing, durability=durability, retention_days=config.retention_days,
            )  # fmt: skip
        return cls(log)

    @property
    def enabled(self) -> bool:
        return self.log is not None

    @property
    def writer_directory(self) -> Path | None:
        """Where this writer's logs are: its log's directory, or with epochs the one that holds
        a log per epoch (what the shipper follows)."""
        if isinstance(self.log, EpochLog):
            return self.log.base
        return self.log.directory if self.log is not None else None

    async def append(
        self, entry: dict[str, Any], sealed: dict[str, bytes | SealedStream] | None = None
    ) -> int:
        """Append or raise the 503 that refuses the request."""
        if self.log is None:
            return -1
        entry = {k: v for k, v in entry.items() if v is not None}  # absent, never null
        try:
            return await self.log.append(entry, {k: v for k, v in (sealed or {}).items() if v})
        except AuditUnavailable as exc:
            raise unavailable(exc) from None

    async def lifecycle(self, kind: str, config: Config, **fields: Any) -> None:
        await self.append(
            {"type": kind, "config": config.path, "config_sha256": config.sha256, **fields}
        )

    async def close(self) -> None:
        if self.background:
            await asyncio.wait(self.background)
        if self.log is not None:
            await self.log.close()

    def maintain_later(self) -> None:
        """On SIGHUP: apply retention and record shreds `gateway audit shred` made meanwhile."""
        if not isinstance(self.log, EpochLog):
            return

        async def maintain(log: EpochLog) -> None:
            try:
                await log.maintain()
            except AuditUnavailable as exc:
                log_error("audit: could not record shredded epochs: %s", exc)

        task = asyncio.get_running_loop().create_task(maintain(self.log))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- per-request entries --------------------------------------------------------------

    def refused_later(
        self, client: str, request_id: str, status: int, code: str, reason: str
    ) -> None:
        """A request the server refused before it could be parsed (malformed, too large...)."""
        entry: dict[str, Any] = {"type": "denied", "client": client, "request_id": request_id}
        entry.update(status=status, code=code)
        self._later({**entry, "reason": reason})

    def _later(self, entry: dict[str, Any]) -> None:
        """Append off the request path (nothing waits on it); a failure is logged."""
        if self.log is None:
            return

        async def write() -> None:
            try:
                await self.append(entry)
            except GatewayError:
                log.error("audit: could not record %s entry", entry["type"])

        task = asyncio.get_running_loop().create_task(write())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def denied(self, exchange: Exchange, error: GatewayError) -> None:
        if self.log is None:  # no entry to build: the request path pays nothing
            return
        entry = request_fields(exchange)
        entry.update(type="denied", status=error.status, code=error.code, reason=error.message)
        await self.append(entry, {"request": exchange.request.body})

    async def allowed(self, exchange: Exchange) -> int:
        if self.log is None:
            return -1
        entry = request_fields(exchange)
        entry["type"] = "decision"
        return await self.append(entry, {"request": exchange.request.body})

    def response_tap(self) -> ResponseTap | None:
        """Where a streamed answer goes to be recorded; None without an audit log."""
        return ResponseTap(self.log.sealed_stream()) if self.log is not None else None

    async def completed(self, exchange: Exchange, response: bytes | ResponseTap) -> int:
        if isinstance(response, ResponseTap):
            response.stream.finish()
            fields = _exchange_fields(exchange, response.length, response.sha256())
            sealed: bytes | SealedStream = response.stream if response.length else b""
        else:
            fields = _exchange_fields(exchange, len(response), hashlib.sha256(response).hexdigest())
            sealed = response
        return await self.append(fields, {"response": sealed})

    def failed_later(self, exchange: Exchange) -> None:
        """An allowed exchange that broke off (upstream or client gone): record it off-path."""
        entry = _exchange_fields(exchange, 0, "")
        entry["error"] = exchange.error
        for unknown in ("bytes_upstream", "response_sha256"):
            del entry[unknown]
        self._later(entry)


def _exchange_fields(exchange: Exchange, length: int, sha256: str) -> dict[str, Any]:
    entry = request_fields(exchange)
    entry.update(
        type="inference",
        decision_seq=exchange.decision_seq,
        status=exchange.status,
        served_model=exchange.served_model,
        model_version=exchange.model_version,
        tokens_in=exchange.tokens[0],
        tokens_out=exchange.tokens[1],
        bytes_in=len(exchange.request.body),
        bytes_upstream=length,
        bytes_out=exchange.bytes_out,
        upstream_ttfb_ms=round(exchange.upstream_ttfb * 1000, 3),
        total_ms=round(exchange.elapsed() * 1000, 3),
        masked=exchange.masked,
        response_sha256=sha256,
    )
    return entry


class ResponseTap:
    """A streamed answer as the audit log sees it, never held whole: sealed chunk by chunk as it
    passes, with its first and last WINDOW bytes kept for the served model and token usage."""

    WINDOW = 64 * 1024

    def __init__(self, stream: SealedStream) -> None:
        self.stream = stream
        self.length = 0
        self.head = bytearray()
        self.tail = bytearray()

    def add(self, chunk: bytes) -> None:
        self.stream.add(chunk)
        self.length += len(chunk)
        if len(self.head) < self.WINDOW:
            self.head += chunk[: self.WINDOW - len(self.head)]
        self.tail += chunk
        if len(self.tail) > 2 * self.WINDOW:
            del self.tail[: -self.WINDOW]

    def sha256(self) -> str:
        return self.stream.sealer.plain_sha.hexdigest()

    def discard(self) -> None:
        """The exchange was not recorded with its answer: drop what was sealed of it."""
        self.stream.discard()


def request_fields(exchange: Exchange) -> dict[str, Any]:
    request = exchange.request
    identity = exchange.identity
    decision = exchange.decision
    approval = exchange.approval
    return {
        "request_id": request.request_id,
        "received": request.received_at,
        "client": request.client,
        "method": request.method,
        "path": request.path,
        "subject": identity.subject if identity else None,
        "issuer": identity.issuer if identity else None,
        "groups": sorted(identity.groups) if identity else [],
        "connection": exchange.connection,
        "model": exchange.model,
        "decision": decision.action if decision else None,
        "rule": decision.rule_id if decision else None,
        "request_sha256": request.body_sha256(),
        "approval_id": approval.id if approval else None,
        "approved_by": approval.approved_by or None if approval else None,
    }
