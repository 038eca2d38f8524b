"""The reserved `/_gateway/` endpoints: health, metrics, audit access for readers, approvals."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import orjson

from gateway import headers
from gateway.approvals.api import ApprovalsApi
from gateway.auditing import Auditor
from gateway.config import AuditConfig
from gateway.errors import GatewayError
from gateway.identity import Identity, TokenVerifier, bearer_token
from gateway.replay import Investigator, replay
from gateway.runtime import Runtime
from gateway.server import IncomingRequest, ResponseWriter

PREFIX = "/_gateway/"
PROBE_TTL_S = 5.0  # how long an upstream reachability probe result is reused
PROBE_TIMEOUT_S = 1.0
JSON = [(b"content-type", b"application/json")]
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
PROMETHEUS = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]


class UpstreamProbe:
    """Is each upstream accepting TCP connections? Cached, so health checks stay cheap."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, int], tuple[float, bool]] = {}

    async def reachable(self, host: str, port: int) -> bool:
        now = time.monotonic()
        cached = self.results.get((host, port))
        if cached is not None and now - cached[0] < PROBE_TTL_S:
            return cached[1]
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
            ok = True
        except (OSError, TimeoutError):
            ok = False
        self.results[(host, port)] = (now, ok)
        return ok


class AuditReaders:
    """Checkpoints, proofs and replays over HTTP, for callers in the `[audit] readers` groups."""

    def __init__(self, verifier: TokenVerifier, auditor: Auditor, config: AuditConfig | None):
        self.verifier = verifier
        self.auditor = auditor
        self.readers = frozenset(config.readers) if config else frozenset()
        self.sealing_key = Path(config.sealing_key) if config else None

    async def _reader(self, request: IncomingRequest) -> Identity:
        if self.auditor.log is None:
            raise GatewayError(404, "not_found", "this gateway has no audit log configured")
        identity = await self.verifier.verify(
            bearer_token(headers.get(request.headers, b"authorization"))
        )
        if self.readers.isdisjoint(identity.groups):
            raise GatewayError(403, "forbidden", "audit endpoints are for [audit] readers groups")
        return identity

    async def handle(self, name: str, request: IncomingRequest, writer: ResponseWriter) -> None:
        await self._reader(request)
        log = self.auditor.log
        assert log is not None  # checked by _reader
        await log.signed()  # what this caller just appended is covered
        if name == "checkpoint":
            await writer.send_full(200, TEXT, log.checkpoint())
            return
        params = parse_qs(request.query)
        try:
            index = int(params["index"][0])
            size = int(params["size"][0]) if "size" in params else None
        except (KeyError, ValueError):
            # A fixed reason, never int()'s message: that would echo the caller's text.
            raise GatewayError(400, "bad_request", "proof needs index=N (and size=M)") from None
        try:
            proof = log.inclusion_proof(index, size)
        except ValueError as exc:  # our own message: numbers only
            raise GatewayError(400, "bad_request", f"no such proof: {exc}") from None
        await writer.send_full(200, JSON, orjson.dumps(proof))

    async def replay(
        self, seq: str, request: IncomingRequest, writer: ResponseWriter, runtime: Runtime
    ) -> None:
        """`POST audit/replay/{seq}`, optional body `{"connection": NAME}` (see replay.py)."""
        identity = await self._reader(request)
        assert self.sealing_key is not None  # a log is only opened with [audit]
        try:
            options = orjson.loads(request.body) if request.body else {}
            connection = options.get("connection")
            if not (seq.isdigit() and (connection is None or isinstance(connection, str))):
                raise ValueError
        except (orjson.JSONDecodeError, AttributeError, ValueError):
            raise GatewayError(
                400, "bad_request", 'replay takes a decimal seq and {"connection": NAME}'
            ) from None
        who = Investigator(identity, request.request_id, request.client)
        result = await replay(
            runtime, self.auditor, self.sealing_key, int(seq), who, connection or None
        )
        await writer.send_full(200, JSON, orjson.dumps(result))


class Ops:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        keys_ready: Callable[[], bool],
        render_metrics: Callable[[], bytes],
        audit: AuditReaders,
        approvals: ApprovalsApi,
    ) -> None:
        self.runtime = runtime
        self.keys_ready = keys_ready
        self.render_metrics = render_metrics
        self.audit = audit
        self.approvals = approvals
        self.probe = UpstreamProbe()
        # Other parts add theirs (audit shipping): each returns {"check", "problem"} warnings.
        self.warnings: list[Callable[[], list[dict[str, str]]]] = []

    async def handle(self, request: IncomingRequest, writer: ResponseWriter) -> None:
        name = request.path[len(PREFIX) :]
        if name == "approvals" or name.startswith("approvals/"):
            await self.approvals.handle(name, request, writer)
            return
        if name.startswith("audit/replay/"):
            if request.method != "POST":
                raise GatewayError(405, "method_not_allowed", "replay takes POST")
            await self.audit.replay(
                name.removeprefix("audit/replay/"), request, writer, self.runtime()
            )
            return
        if request.method not in ("GET", "HEAD"):
            raise GatewayError(405, "method_not_allowed", f"{request.method} not allowed here")
        if name == "health":
            await self._health(writer, live_only=request.query == "live")
        elif name == "metrics":
            await writer.send_full(200, PROMETHEUS, self.render_metrics())
        elif name in ("audit/checkpoint", "audit/proof"):
            await self.audit.handle(name.removeprefix("audit/"), request, writer)
        else:
            raise GatewayError(404, "not_found", f"no gateway endpoint {request.path!r}")

    async def _health(self, writer: ResponseWriter, *, live_only: bool) -> None:
        """Liveness (`?live`): the process answers. Readiness: 503 only for this gateway's own
        faults; what lies outside it (upstreams, token endpoints, shipping) is a warning with
        200, so one bad upstream never takes every replica out of a load balancer."""
        if live_only:
            await writer.send_full(200, JSON, b'{"status":"ok"}')
            return
        runtime = self.runtime()
        routes = runtime.routes
        results = await asyncio.gather(
            *(self.probe.reachable(r.pool.host, r.pool.port) for r in routes.values())
        )
        upstreams = dict(zip(routes, results, strict=True))
        approvals = self.approvals.approvals
        needs_store = any(rule.action == "approve" for rule in runtime.config.rules)
        checks = {
            "signing_keys_loaded": self.keys_ready(),
            "audit_log_writable": await audit_writable(self.audit.auditor),
            "approvals_store_reachable": await approvals.reachable() if needs_store else None,
            "upstreams_reachable": upstreams,
        }
        problems = [HEALTH_PROBLEMS[name] for name, ok in checks.items() if ok is False]
        # What lies outside this gateway is a warning: one bad upstream or token endpoint must
        # not take every replica out of the load balancer.
        warnings = [
            {
                "connection": name,
                "check": "upstream_reachable",
                "problem": "not accepting connections",
            }
            for name, ok in upstreams.items()
            if not ok
        ]
        warnings += [
            {"connection": name, "check": "upstream_credentials", "problem": route.auth.problem}
            for name, route in routes.items()
            if route.auth.problem
        ]
        for source in self.warnings:
            warnings += source()
        status = "unavailable" if problems else "degraded" if warnings else "ok"
        body = {"status": status, "checks": checks, "problems": problems, "warnings": warnings}
        await writer.send_full(503 if problems else 200, JSON, orjson.dumps(body))


HEALTH_PROBLEMS = {
    "signing_keys_loaded": "no token signing keys from the identity provider yet",
    "audit_log_writable": "the audit log cannot be written",
    "approvals_store_reachable": "the approval store is unreachable and approve rules exist",
}


async def audit_writable(auditor: Auditor) -> bool | None:
    """None without [audit]. After a failed write, one small entry tries the disk again: with
    every request refused by its load balancer, nothing else would find that it recovered."""
    log = auditor.log
    if log is None:
        return None
    if not log.available:
        with contextlib.suppress(GatewayError):
            await auditor.append({"type": "audit.probe"})
    return log.available
