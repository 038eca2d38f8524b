"""The request path: authenticate, route, decide, forward, relay.

Each step either passes a request on or raises a GatewayError that becomes an OpenAI-shaped JSON
error. The response is relayed chunk by chunk as the upstream sends it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field

import orjson

from gateway import headers as hdr
from gateway.errors import GatewayError
from gateway.identity import Identity, TokenVerifier, bearer_token
from gateway.metrics import Metrics
from gateway.policy import Decision, Request
from gateway.runtime import Route, Runtime
from gateway.server import ClientDisconnected, IncomingRequest, ResponseWriter
from gateway.upstream import UpstreamResponse

access_log = logging.getLogger("gateway.access")

# Dot segments, empty segments and encoded slashes or dots would let a path mean one thing to the
# policy and another to the upstream; refuse them rather than guess how the upstream normalises.
AMBIGUOUS_PATH = re.compile(r"(^|/)\.{1,2}(/|$)|//|%2[eEfF]|%5[cC]|\\")
# A response up to this size with a Content-Length is sent with its head in one write.
COALESCE_MAX = 64 * 1024


@dataclass(slots=True)
class Exchange:
    """What one request became: filled in as it moves along the path, then logged."""

    request: IncomingRequest
    connection: str | None = None
    identity: Identity | None = None
    model: str | None = None
    decision: Decision | None = None
    status: int = 0
    upstream_started: float = 0.0
    upstream_ttfb: float = 0.0
    upstream_time: float = 0.0
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def split_route(path: str) -> tuple[str, str]:
    """`/llama/v1/chat` -> ("llama", "/v1/chat")."""
    _, _, rest = path.partition("/")
    name, slash, tail = rest.partition("/")
    return name, slash + tail if slash else "/"


def requested_model(request: IncomingRequest) -> str | None:
    """The JSON body's top-level `model`, which policy matches on."""
    body = request.body
    if not body or body[:1] not in (b"{", b" ", b"\n", b"\r", b"\t"):
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = document.get("model") if isinstance(document, dict) else None
    return model if isinstance(model, str) else None


class Proxy:
    """Serves every path under `/{connection}/`."""

    def __init__(self, runtime: Runtime, verifier: TokenVerifier, metrics: Metrics) -> None:
        self.runtime = runtime
        self.verifier = verifier
        self.metrics = metrics

    async def handle(self, request: IncomingRequest, writer: ResponseWriter) -> None:
        runtime = self.runtime  # one consistent view for the whole exchange
        exchange = Exchange(request)
        try:
            route = await self._admit(runtime, exchange)
            await self._forward(route, exchange, writer)
        except GatewayError as exc:
            exchange.status, exchange.error = exc.status, exc.message
            if writer.started:
                writer.abort()
            else:
                await writer.send_error(exc)
        except (ClientDisconnected, asyncio.CancelledError):
            exchange.error = "client disconnected"
            raise
        finally:
            self._record(exchange, writer)

    async def _admit(self, runtime: Runtime, exchange: Exchange) -> Route:
        request = exchange.request
        token = bearer_token(hdr.get(request.headers, b"authorization"))
        exchange.identity = identity = await self.verifier.verify(token)
        if not request.target.startswith("/") or AMBIGUOUS_PATH.search(request.path):
            raise GatewayError(400, "bad_path", "path has dot segments, '//' or encoded '/' or '.'")
        name, upstream_path = split_route(request.path)
        exchange.connection = name
        route = runtime.routes.get(name)
        if route is None:
            raise GatewayError(404, "unknown_connection", f"no connection named {name!r}")
        exchange.model = requested_model(request)
        decision = runtime.policy.decide(
            Request(
                subject=identity.subject,
                groups=identity.groups,
                connection=name,
                model=exchange.model,
                path=upstream_path,
                method=request.method,
            )
        )
        exchange.decision = decision
        if not decision.allowed:
            raise GatewayError(403, "forbidden", f"denied by policy: {decision.reason}")
        exchange.extra["upstream_path"] = upstream_path
        return route

    async def _forward(self, route: Route, exchange: Exchange, writer: ResponseWriter) -> None:
        request = exchange.request
        target = route.connection.base_path + str(exchange.extra["upstream_path"])
        if request.query:
            target += "?" + request.query
        headers = hdr.request_headers_for_upstream(
            request.headers,
            route.pool.host_header,
            route.credential,
            request.request_id.encode(),
            len(request.body),
        )
        exchange.upstream_started = time.perf_counter()
        response = await route.pool.request(request.method, target, headers, request.body)
        exchange.upstream_ttfb = time.perf_counter() - exchange.upstream_started
        exchange.status = response.status
        try:
            await self._relay(response, writer)
        finally:
            response.discard()  # no-op once the body was read to the end
            exchange.upstream_time = time.perf_counter() - exchange.upstream_started

    async def _relay(self, response: UpstreamResponse, writer: ResponseWriter) -> None:
        length = hdr.get(response.headers, b"content-length")
        if length is not None and int(length) <= COALESCE_MAX:
            # Small and framed by length: read it all and answer in one write.
            body = bytearray()
            while (chunk := await response.read()) is not None:
                body += chunk
            out = hdr.response_headers_for_client(response.headers, keep_length=False)
            await writer.send_full(response.status, out, bytes(body))
            return
        out = hdr.response_headers_for_client(response.headers, keep_length=True)
        await writer.start(response.status, out)
        while (chunk := await response.read()) is not None:
            await writer.write(chunk)
        await writer.end()

    def _record(self, exchange: Exchange, writer: ResponseWriter) -> None:
        request = exchange.request
        total = time.perf_counter() - request.started
        status = exchange.status or writer.status
        decision = exchange.decision.action if exchange.decision else "none"
        label = exchange.connection or "-"
        self.metrics.requests.labels(label, str(status), decision).inc()
        self.metrics.duration.labels(label).observe(total)
        if exchange.upstream_started:
            self.metrics.upstream_ttfb.labels(label).observe(exchange.upstream_ttfb)
            self.metrics.overhead.labels(label).observe(max(total - exchange.upstream_time, 0.0))
        access_log.info(
            "exchange",
            extra={
                "request_id": request.request_id,
                "client": request.client,
                "method": request.method,
                "path": request.path,
                "connection": exchange.connection,
                "subject": exchange.identity.subject if exchange.identity else None,
                "model": exchange.model,
                "decision": decision,
                "rule": exchange.decision.rule_id if exchange.decision else None,
                "status": status,
                "bytes_out": writer.bytes_sent,
                "duration_ms": round(total * 1000, 3),
                "upstream_ttfb_ms": round(exchange.upstream_ttfb * 1000, 3),
                "error": exchange.error,
            },
        )
