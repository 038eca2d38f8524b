"""The request path: authenticate, route, decide, record, forward, relay, record.

Each step either passes a request on or raises a GatewayError that becomes an OpenAI-shaped JSON
error (and a `denied` audit entry). The response is relayed chunk by chunk as the upstream sends
it; only its last byte waits for the exchange's audit entry to be durable.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import headers as hdr
from gateway import model_list
from gateway.access_log import AccessLog
from gateway.answers import NO_TOKENS, Tokens, json_answer, sse_model, sse_tokens
from gateway.approvals import Approval, Approvals, gate
from gateway.auditing import Auditor, ResponseTap
from gateway.encoding import DecodedBody, ask_identity, coding, compressed_request
from gateway.errors import GatewayError
from gateway.identity import Identity, TokenVerifier, bearer_token
from gateway.masking import RuleMasking, StreamTransform, masking_failed
from gateway.media import media_type
from gateway.metrics import Metrics
from gateway.policy import Decision, Request
from gateway.redact import RedactedBody, RedactingStream
from gateway.runtime import Route, Runtime
from gateway.server import ClientDisconnected, IncomingRequest, ResponseWriter
from gateway.strict_json import parse_request, request_model
from gateway.upstream import BodyReader, UpstreamResponse

# Dot segments, empty segments and encoded slashes or dots would let a path mean one thing to the
# policy and another to the upstream; refuse them rather than guess how the upstream normalises.
AMBIGUOUS_PATH = re.compile(r"(^|/)\.{1,2}(/|$)|//|%2[eEfF]|%5[cC]|\\")
# A response up to this size with a Content-Length is read whole, then sent in one write.
COALESCE_MAX = 64 * 1024
# A JSON response is masked whole; past this size it is refused rather than held in memory.
MASK_WHOLE_MAX = 64 * 1024 * 1024


@dataclass(slots=True)
class Exchange:
    """What one request became: filled in as it moves along the path, then logged."""

    request: IncomingRequest
    connection: str | None = None
    upstream_path: str = "/"
    identity: Identity | None = None
    model: str | None = None
    decision: Decision | None = None
    decision_seq: int | None = None
    approval: Approval | None = None  # under an `approve` rule: the approval it asked for or used
    status: int = 0
    served_model: str | None = None
    model_version: str | None = None
    tokens: Tokens = NO_TOKENS  # (in, out) as the upstream's `usage` reports them
    bytes_out: int = 0
    upstream_started: float = 0.0
    upstream_ttfb: float = 0.0
    upstream_time: float = 0.0
    masking: RuleMasking | None = None
    masked: dict[str, int] = field(default_factory=dict)
    masked_request: dict[str, int] = field(default_factory=dict)
    # GET /v1/models: cuts the upstream's list to the models the caller may use
    model_filter: Callable[[bytes], bytes] | None = None
    echoes: RedactingStream | None = None  # the connection's credential, found and redacted
    error: str | None = None
    recorded: bool = False  # the `inference` entry was written

    def elapsed(self) -> float:
        return time.perf_counter() - self.request.started


def _holds_secrets(route: Route) -> bool:
    """Could the upstream echo a credential? Token modes may not have fetched theirs yet."""
    return route.connection.auth != "static" or bool(route.auth.secrets())


def split_route(path: str) -> tuple[str, str]:
    """`/llama/v1/chat` -> ("llama", "/v1/chat")."""
    _, _, rest = path.partition("/")
    name, slash, tail = rest.partition("/")
    return name, slash + tail if slash else "/"


class Proxy:
    """Serves every path under `/{connection}/`."""

    def __init__(
        self,
        runtime: Runtime,
        verifier: TokenVerifier,
        metrics: Metrics,
        auditor: Auditor,
        approvals: Approvals,
    ) -> None:
        self.runtime = runtime
        self.verifier = verifier
        self.metrics = metrics
        self.access_log = AccessLog()
        self.auditor = auditor
        self.approvals = approvals

    async def handle(self, request: IncomingRequest, writer: ResponseWriter) -> None:
        runtime = self.runtime  # one consistent view for the whole exchange
        exchange = Exchange(request)
        try:
            try:
                route = await self._admit(runtime, exchange)
                if exchange.decision and exchange.decision.action == "approve":
                    settings = runtime.config.approvals
                    assert settings is not None  # config.py: approve rules need [approvals]
                    ticket = await gate(self.approvals, exchange, settings.hold_max_s)
                    if ticket is not None:
                        exchange.status = 202
                        await writer.send_full(202, ticket.headers(), ticket.body())
                        return
            except GatewayError as refusal:
                await self.auditor.denied(exchange, refusal)
                raise
            exchange.decision_seq = await self.auditor.allowed(exchange)
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
        except Exception:  # a defect: server.py logs it and answers 500; record it as that
            exchange.status, exchange.error = 500, "internal error"
            raise
        finally:
            if exchange.error and exchange.decision_seq is not None and not exchange.recorded:
                self.auditor.failed_later(exchange)
            self._record(exchange, writer)

    async def _admit(self, runtime: Runtime, exchange: Exchange) -> Route:
        request = exchange.request
        token = bearer_token(request.fields.get(b"authorization"))
        exchange.identity = identity = await self.verifier.verify(token)
        if not request.target.startswith("/") or AMBIGUOUS_PATH.search(request.path):
            raise GatewayError(400, "bad_path", "path has dot segments, '//' or encoded '/' or '.'")
        name, exchange.upstream_path = split_route(request.path)
        exchange.connection = name
        route = runtime.routes.get(name)
        if route is None:
            raise GatewayError(404, "unknown_connection", f"no connection named {name!r}")
        # Before any rule: the model the policy sees is the model the upstream will run.
        if request.body and b"content-encoding" in request.fields and coding(request.headers):
            raise compressed_request()
        kind = media_type(request.fields.get(b"content-type"))
        exchange.model = request_model(parse_request(request.body, kind))
        decision = runtime.policy.decide(
            Request(
                subject=identity.subject,
                groups=identity.groups,
                connection=name,
                model=exchange.model,
                path=exchange.upstream_path,
                method=request.method,
            )
        )
        exchange.decision = decision
        if decision.action not in ("allow", "approve"):
            raise GatewayError(403, "forbidden", f"denied by policy: {decision.reason}")
        exchange.masking = runtime.masking.get(decision.rule_id or "")
        if model_list.is_model_list(request.method, exchange.upstream_path):
            policy = runtime.policy
            exchange.model_filter = lambda body: model_list.filtered(body, policy, identity, name)
        return route

    async def _forward(self, route: Route, exchange: Exchange, writer: ResponseWriter) -> None:
        request = exchange.request
        target = route.connection.base_path + exchange.upstream_path
        if request.query:
            target += "?" + request.query
        body = request.body
        if exchange.masking is not None:
            body, exchange.masked_request = exchange.masking.mask_request(body)
        headers = hdr.request_headers_for_upstream(
            request.headers, route.pool.host_header, request.request_id.encode(), len(body)
        )
        # A body the gateway reads (to mask it, or to redact the credential) must be plain: asked
        # for before the auth signs the headers.
        transformed = exchange.masking is not None or _holds_secrets(route)
        if transformed:
            headers = ask_identity(headers)
        headers = await route.auth.apply(request.method, route.url(target), headers, body)
        exchange.upstream_started = time.perf_counter()
        response = await route.pool.request(request.method, target, headers, body)
        exchange.upstream_ttfb = time.perf_counter() - exchange.upstream_started
        exchange.status = response.status
        try:
            reader = self._reader(route, exchange, response, transformed)
            version_header = route.connection.model_version_header
            if version_header:
                version = hdr.get(response.headers, version_header.encode())
                exchange.model_version = version.decode("latin-1") if version else None
            await self._relay(response, reader, exchange, writer)
        finally:
            response.discard()  # no-op once the body was read to the end
            exchange.upstream_time = time.perf_counter() - exchange.upstream_started

    @staticmethod
    def _reader(
        route: Route, exchange: Exchange, response: UpstreamResponse, transformed: bool
    ) -> BodyReader:
        """The body as the gateway may relay it: decoded if it must be read, then redacted.

        With neither masking nor a credential, the upstream's bytes pass as they are.
        """
        reader: BodyReader = response
        compressed = coding(response.headers) if transformed else None
        if compressed is not None:  # asked for identity, got a compressed answer anyway
            reader = DecodedBody(response, compressed)
            response.headers = hdr.without(
                response.headers, {b"content-encoding", b"content-length"}
            )
        redactor = route.redactors.get(route.auth.secrets())  # the credential just sent
        if redactor is not None:  # no credential, no cost
            exchange.echoes = echoes = redactor.stream()
            response.headers = echoes.headers(response.headers)
            reader = RedactedBody(reader.read, echoes)
        return reader

    async def _relay(
        self,
        response: UpstreamResponse,
        body: BodyReader,
        exchange: Exchange,
        writer: ResponseWriter,
    ) -> None:
        kind = media_type(hdr.get(response.headers, b"content-type"))
        length_header = hdr.get(response.headers, b"content-length")
        length = int(length_header) if length_header is not None else None
        masking = exchange.masking
        if masking is not None and length != 0 and exchange.request.method != "HEAD":
            masking.check(kind)  # a type no method masks is refused before its body is read
        small = length is not None and length <= COALESCE_MAX
        listing = exchange.model_filter is not None and response.status == 200
        if small or listing or (masking is not None and not masking.streams(kind)):
            await self._relay_whole(response, body, exchange, writer, kind)
            return
        stream = masking.stream_for(kind) if masking is not None else None
        tap = self.auditor.response_tap()  # the original, sealed as it passes
        try:
            await self._relay_stream(response, body, exchange, writer, stream, length, tap)
        finally:
            if tap is not None and not exchange.recorded:
                tap.discard()

    async def _relay_whole(
        self,
        response: UpstreamResponse,
        body: BodyReader,
        exchange: Exchange,
        writer: ResponseWriter,
        kind: str,
    ) -> None:
        """Read the body, mask it whole, record it, answer in one write."""
        received = bytearray()
        while (chunk := await body.read()) is not None:
            received += chunk
            if len(received) > MASK_WHOLE_MAX:
                raise masking_failed(f"a response over {MASK_WHOLE_MAX} bytes")
        answer = original = bytes(received)  # one copy: recorded as is, answered transformed
        if self.auditor.enabled:  # served model and usage are recorded only in the audit entry
            exchange.served_model, exchange.tokens = json_answer(answer)
        if exchange.model_filter is not None and response.status == 200:
            answer = exchange.model_filter(answer)
        if exchange.masking is not None:
            answer, exchange.masked = exchange.masking.mask_body(kind, answer)
        self._count_masked(exchange.masked)
        exchange.bytes_out = len(answer)
        await self._completed(exchange, original)
        out = hdr.response_headers_for_client(response.headers, keep_length=False)
        if exchange.request.method == "HEAD":
            # The length a GET would get (masked, filtered) is not known here, and a wrong one is
            # forbidden (RFC 9110 §8.6): the head goes without one.
            await writer.start(response.status, out)
            await writer.end()
            return
        await writer.send_full(response.status, out, answer)

    async def _relay_stream(
        self,
        response: UpstreamResponse,
        body: BodyReader,
        exchange: Exchange,
        writer: ResponseWriter,
        stream: StreamTransform | None,
        length: int | None,
        tap: ResponseTap | None,
    ) -> None:
        """Relay chunks as they arrive, masked on the way when the rule says so.

        The head waits for the first bytes to pass the masker, so a body the masker rejects
        before it released anything is a clean 502, however the upstream cut it. Only the end
        of the body waits for the audit entry.
        """
        received = 0
        held = b""
        out = hdr.response_headers_for_client(response.headers, keep_length=stream is None)

        async def send(data: bytes) -> None:
            """Body bytes; the head first, in the same write, if it is not sent yet."""
            if writer.started:
                await writer.write(data)
            else:
                await writer.start(response.status, out, data)

        try:
            while (chunk := await body.read()) is not None:
                received += len(chunk)
                if tap is not None:
                    tap.add(chunk)
                if stream is not None:
                    chunk = stream.push(chunk)
                elif length is not None and received == length:
                    chunk, held = chunk[:-1], chunk[-1:]  # the last byte waits for the audit
                if chunk:
                    await send(chunk)
            if stream is not None:
                await send(stream.finish())
        except ValueError:
            released = stream.released() if stream is not None else b""
            if not writer.started and not released:
                raise masking_failed("the upstream response") from None
            assert stream is not None
            # Mid-stream: what was masked before the fault is sent. An event or NDJSON stream
            # ends with an error its clients raise; other text has no in-band signal, so the
            # connection is cut.
            exchange.error = "masking failed mid-stream; the rest was withheld"
            await send(released)
            if stream.failed_tail is None:
                await self._completed(exchange, tap)
                writer.abort()
                return
            await writer.write(stream.failed_tail)
        if not writer.started:
            await writer.start(response.status, out)
        if stream is not None:
            exchange.masked = stream.counts()
            exchange.served_model = stream.model()
            self._count_masked(exchange.masked)
        elif tap is not None:
            exchange.served_model = sse_model(bytes(tap.head))
        if tap is not None:
            exchange.tokens = sse_tokens(bytes(tap.tail))
        exchange.bytes_out = writer.bytes_sent + len(held)
        await self._completed(exchange, tap)
        await writer.end(held)

    def _count_masked(self, counts: dict[str, int]) -> None:
        for entity, n in counts.items():
            self.metrics.masked.labels(entity).inc(n)

    async def _completed(self, exchange: Exchange, original: bytes | ResponseTap | None) -> None:
        if original is not None and self.auditor.enabled:
            # Queued the moment append starts: written even if the client leaves while we wait.
            exchange.recorded = True
            await self.auditor.completed(exchange, original)

    def _record(self, exchange: Exchange, writer: ResponseWriter) -> None:
        request = exchange.request
        total = exchange.elapsed()
        status = exchange.status or writer.status
        decision = exchange.decision.action if exchange.decision else "none"
        # Configured names only: a caller's made-up name would be a new label set (unbounded,
        # and its text shown on a page that needs no token).
        label = exchange.connection if exchange.connection in self.runtime.routes else "-"
        upstream = (
            (exchange.upstream_ttfb, max(total - exchange.upstream_time, 0.0))
            if exchange.upstream_started
            else None
        )
        self.metrics.exchange(label, status, decision, total, upstream)
        if exchange.echoes is not None and exchange.echoes.count:
            self.metrics.credential_redacted.labels(label).inc(exchange.echoes.count)
        self.access_log.exchange(
            {
                "request_id": request.request_id,
                "client": request.client,
                "method": request.method,
                "path": request.path,
                "connection": exchange.connection,
                "subject": exchange.identity.subject if exchange.identity else None,
                "issuer": exchange.identity.issuer if exchange.identity else None,
                "model": exchange.model,
                "decision": decision,
                "rule": exchange.decision.rule_id if exchange.decision else None,
                "status": status,
                "bytes_out": writer.bytes_sent,
                "duration_ms": round(total * 1000, 3),
                "upstream_ttfb_ms": round(exchange.upstream_ttfb * 1000, 3),
                "error": exchange.error,
            }
        )
