"""HTTP/1.1 server: one asyncio.Protocol driving one h11.Connection per client connection.

The protocol reads a whole request (headers within `max_header_bytes`, body within
`max_body_bytes`, refused before reading further) and hands it to an async handler together with a
`ResponseWriter`. The writer couples backpressure: `write` waits while the client's socket buffer
is above the high-water mark, so a slow client slows whatever feeds the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from itertools import chain

import h11

from gateway.config import ServerConfig
from gateway.errors import GatewayError, error_body, protocol_error_reason
from gateway.flow_control import FlowControl
from gateway.headers import Headers, checked, duplicated, get, listed, new_uuid4, request_id
from gateway.timestamps import ZULU

log = logging.getLogger("gateway.server")


# Looked up per response: `HTTPStatus(status)` is an enum call each time.
REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    return REASONS.get(status, b"")


class ClientDisconnected(Exception):
    """The client went away; whatever we were sending it has nowhere to go."""


@dataclass(slots=True)
class IncomingRequest:
    method: str
    target: str
    path: str
    query: str
    headers: Headers
    # The first value of each name, for fields read once (a second copy of those is refused).
    fields: dict[bytes, bytes]
    body: bytes
    client: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    received: float = field(default_factory=time.time)  # formatted only if an entry names it
    digest: str | None = field(default=None, repr=False)

    @property
    def received_at(self) -> str:
        return ZULU.at(self.received)

    def body_sha256(self) -> str:
        """Hex SHA-256 of the body, computed once: audit entries and approvals all name it."""
        if self.digest is None:
            self.digest = hashlib.sha256(self.body).hexdigest()
        return self.digest


Handler = Callable[[IncomingRequest, "ResponseWriter"], Awaitable[None]]


def _head_only(request: h11.Request | None) -> bool:
    """A HEAD request's answer has no body: h11 refuses body bytes on it."""
    return request is not None and request.method == b"HEAD"


class ResponseWriter:
    """Sends one response on a connection; every response carries `x-request-id`.

    The answer to a HEAD request is the head a GET would get, its Content-Length included, and
    no body (RFC 9110 §9.3.2): body bytes given to the writer are dropped, as h11 refuses them.
    """

    __slots__ = ("_conn", "_head_only", "_request_id", "bytes_sent", "started", "status")

    def __init__(self, conn: HttpConnection, request_id: str, *, head_only: bool = False) -> None:
        self._conn = conn
        self._head_only = head_only
        self._request_id = request_id.encode()
        self.started = False
        self.status = 0
        self.bytes_sent = 0

    def _head(self, status: int, headers: Headers) -> bytes:
        self.started, self.status = True, status
        headers = checked([*headers, (b"x-request-id", self._request_id)])
        return self._conn.send(
            h11.Response(
                status_code=status, headers=headers, reason=reason_phrase(status), _parsed=True
            )
        )

    async def start(self, status: int, headers: Headers, data: bytes = b"") -> None:
        """The head, and the first body bytes in the same write (one send, one wake-up)."""
        await self._conn.write(self._head(status, headers) + self._data(data))

    async def write(self, data: bytes) -> None:
        if data:
            await self._conn.write(self._data(data))

    def _data(self, data: bytes) -> bytes:
        if not data or self._head_only:
            return b""
        self.bytes_sent += len(data)
        return self._conn.send(h11.Data(data=data))

    async def end(self, data: bytes = b"") -> None:
        """Send the last bytes and the end of the message in one write."""
        await self._conn.write(self._data(data) + self._conn.send(h11.EndOfMessage()))

    async def send_full(self, status: int, headers: Headers, body: bytes) -> None:
        """A whole small response in a single write."""
        head = self._head(status, [*headers, (b"content-length", str(len(body)).encode())])
        await self._conn.write(head + self._data(body) + self._conn.send(h11.EndOfMessage()))

    async def send_error(self, exc: GatewayError) -> None:
        headers = [(b"content-type", b"application/json"), *exc.headers]
        await self.send_full(exc.status, headers, exc.body())

    def abort(self) -> None:
        """Close the connection mid-response, so the client sees the body is incomplete."""
        self._conn.close()


class ServerState:
    """What all connections of one listening server share."""

    def __init__(self, handler: Handler, limits: ServerConfig) -> None:
        self.handler = handler
        self.limits = limits
        self.connections: set[HttpConnection] = set()
        self.draining = False
        self.on_open: Callable[[int], None] = lambda n: None
        # (client, request id, status, code, reason) of requests refused before the handler.
        self.on_refused: Callable[[str, str, int, str, str], None] = lambda *a: None
        # (target, headers) of a request whose client waits for 100 Continue: raises the
        # GatewayError to answer instead, before the body is sent.
        self.check_head: Callable[[str, Headers], Awaitable[None]] = _nothing_to_check


async def _nothing_to_check(target: str, headers: Headers) -> None:
    return None


class HttpConnection(asyncio.Protocol):
    """One client connection: h11 state, timers, flow control, the current request cycle."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.limits = state.limits
        self.loop = asyncio.get_running_loop()
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes
        )
        self.transport: asyncio.Transport | None = None
        self.client = "-"
        self.timer: asyncio.TimerHandle | None = None
        self.awaiting_next_request = False
        self.task: asyncio.Task[None] | None = None
        self.flow: FlowControl  # set once the transport exists
        self.closed = False
        self.request: h11.Request | None = None
        self.headers: Headers = []  # the request's, as a list (see _on_request)
        self.fields: dict[bytes, bytes] = {}
        self.body = bytearray()

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(self.transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client = f"{peer[0]}:{peer[1]}"
        self.state.connections.add(self)
        self.state.on_open(len(self.state.connections))
        self._arm(self.limits.header_timeout_s, self._on_header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        self.state.on_open(len(self.state.connections))
        self._disarm()
        self.flow.resume_writing()  # wake a writer so it sees the disconnect
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.awaiting_next_request:
            # The next request has begun: from now on its headers must arrive in time.
            self.awaiting_next_request = False
            self._arm(self.limits.header_timeout_s, self._on_header_timeout)
        self.h11.receive_data(data)
        if self.task is not None:
            # The client sends on while its exchange runs: keep this read, take no more until
            # the exchange ends (h11 would hold it all, unbounded).
            self.flow.pause_reading()
            return
        self._pump()

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        self._pump()
        return None

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -- reading ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Drain h11's events until it needs more data or a request is ready to handle."""
        while not self.closed and self.task is None:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                message = f"malformed HTTP request: {protocol_error_reason(exc)}"
                self._refuse(exc.error_status_hint, "bad_request", message)
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if not self._on_request(event):
                    return
            elif isinstance(event, h11.Data):
                if len(self.body) + len(event.data) > self.limits.max_body_bytes:
                    self._refuse(413, "body_too_large", self._body_limit_message())
                    return
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
                return
            elif isinstance(event, h11.ConnectionClosed):
                self.close()
                return

    def _on_request(self, request: h11.Request) -> bool:
        """Check what the headers alone can tell; start the body timer. False if refused."""
        self.request = request
        self.headers = headers = listed(request.headers)
        self.body = bytearray()
        # h11 bounds only a head that arrives in pieces; one that arrives whole is checked here
        # (": " and CRLF are 4 bytes a line).
        size = len(request.target) + 4 * len(headers) + len(b"".join(chain.from_iterable(headers)))
        if size > self.limits.max_header_bytes:
            message = f"request headers exceed max_header_bytes ({self.limits.max_header_bytes})"
            self._refuse(431, "headers_too_large", message)
            return False
        # The first value per name: fewer entries than lines if a name repeats.
        self.fields = fields = dict(reversed(headers))
        if b"content-length" in fields and b"transfer-encoding" in fields:
            # RFC 9112 §6.1: both present is how request smuggling starts; refuse outright.
            self._refuse(400, "bad_request", "Content-Length and Transfer-Encoding both set")
            return False
        if request.method != request.method.upper():
            # Methods are case-sensitive (RFC 9110 §9.1): `delete` is not DELETE to a method
            # rule, yet some upstreams would run it as DELETE. Take one spelling only.
            wanted = request.method.upper().decode("ascii", "replace")
            self._refuse(400, "bad_method", f"methods are upper case: send {wanted}")
            return False
        twice = duplicated(headers) if len(fields) < len(headers) else None
        if twice is not None:
            message = f"more than one {twice.decode()} header: send it once"
            self._refuse(400, "duplicate_header", message)
            return False
        # h11 keeps one Content-Length line, and refuses two that differ.
        length = fields.get(b"content-length")
        if length is not None and int(length) > self.limits.max_body_bytes:
            self._refuse(413, "body_too_large", self._body_limit_message())
            return False
        if self.h11.they_are_waiting_for_100_continue:
            # The client holds the body back: refuse now what its head already tells (a bad
            # token), or ask for the body. Nothing is read meanwhile.
            self.task = self.loop.create_task(self._continue_or_refuse(request))
            return True
        self._arm(self.limits.idle_timeout_s, self._on_body_timeout)
        return True

    async def _continue_or_refuse(self, request: h11.Request) -> None:
        """`Expect: 100-continue` (RFC 9110 §10.1.1): the final refusal, or 100 Continue."""
        refusal: GatewayError | None = None
        try:
            await self.state.check_head(request.target.decode("ascii", "replace"), request.headers)
        except GatewayError as exc:
            refusal = exc
        except Exception:
            log.exception("checking a request head failed")
            refusal = GatewayError(500, "internal_error", "internal error")
        self.task = None
        if self.closed:  # the client left, or the header timer answered already
            return
        if refusal is not None:
            self._refuse(refusal.status, refusal.code, refusal.message, refusal.headers)
            return
        if self.h11.they_are_waiting_for_100_continue:  # the client may not have waited
            self.transport.write(self.send(h11.InformationalResponse(status_code=100, headers=[])))
        self._arm(self.limits.idle_timeout_s, self._on_body_timeout)
        self.flow.resume_reading()
        self._pump()

    def _body_limit_message(self) -> str:
        return f"request body exceeds max_body_bytes ({self.limits.max_body_bytes} bytes)"

    def _dispatch(self) -> None:
        self._disarm()
        request, self.request = self.request, None
        assert request is not None
        target = request.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        incoming = IncomingRequest(
            method=request.method.decode("ascii", "replace"),
            target=target,
            path=path,
            query=query,
            headers=self.headers,
            fields=self.fields,
            body=bytes(self.body),
            client=self.client,
            request_id=request_id(self.fields.get(b"x-request-id")),
        )
        self.body = bytearray()
        writer = ResponseWriter(self, incoming.request_id, head_only=_head_only(request))
        self.task = self.loop.create_task(self._run(incoming, writer))

    async def _run(self, request: IncomingRequest, writer: ResponseWriter) -> None:
        try:
            await self.state.handler(request, writer)
        except (ClientDisconnected, asyncio.CancelledError):
            self.close()
            return
        except Exception:
            log.exception("handler failed", extra={"request_id": request.request_id})
            if not writer.started and not self.closed:
                await writer.send_error(GatewayError(500, "internal_error", "internal error"))
            else:
                self.close()
                return
        finally:
            self.task = None
        self._next_cycle()

    def _next_cycle(self) -> None:
        """After a response: keep the connection for the next request, or close it."""
        if self.closed:
            return
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            if self.state.draining:
                self.close()
                return
            self.h11.start_next_cycle()
            self._arm(self.limits.idle_timeout_s, self._on_idle_timeout)
            self.flow.resume_reading()
            self.awaiting_next_request = True
            pipelined, closed = self.h11.trailing_data
            if pipelined:
                self.awaiting_next_request = False
                self._arm(self.limits.header_timeout_s, self._on_header_timeout)
            if pipelined or closed:  # else h11 holds nothing: the next read pumps
                self._pump()
        else:
            self.close()

    # -- writing ----------------------------------------------------------------------------

    def send(self, event: h11.Event) -> bytes:
        try:
            return self.h11.send(event) or b""
        except h11.LocalProtocolError as exc:
            raise ClientDisconnected(str(exc)) from exc

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ClientDisconnected("client disconnected")
        self.transport.write(data)
        if not self.flow.writable:
            await self.flow.drain()
            if self.closed:
                raise ClientDisconnected("client disconnected")

    def _refuse(self, status: int, code: str, message: str, extra: Headers | None = None) -> None:
        """Answer a request we will not read any further, then close."""
        self._disarm()
        # The client's own UUID if its head was parsed, as for requests that reach the handler.
        rid = request_id(get(self.headers, b"x-request-id")) if self.request else new_uuid4()
        self.state.on_refused(self.client, rid, status, code, message)
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE) and not self.closed:
            body = error_body(code, message)
            headers = [
                *(extra or []),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"x-request-id", rid.encode()),
            ]
            head_only = _head_only(self.request)
            with contextlib.suppress(h11.LocalProtocolError):
                self.transport.write(
                    self.h11.send(
                        h11.Response(
                            status_code=status, headers=headers, reason=reason_phrase(status)
                        )
                    )
                    + (b"" if head_only else self.h11.send(h11.Data(data=body)))
                    + self.h11.send(h11.EndOfMessage())
                )
        self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    # -- timers -----------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_header_timeout(self) -> None:
        self.timer = None
        if self.h11.their_state is h11.IDLE and not self.h11.trailing_data[0]:
            self.close()  # nothing was sent at all: just close, no one to answer
        else:
            self._refuse(408, "request_timeout", "request headers not received in time")

    def _on_body_timeout(self) -> None:
        self.timer = None
        self._refuse(408, "request_timeout", "request body not received in time")

    def _on_idle_timeout(self) -> None:
        self.timer = None
        if self.task is None:
            self.close()

    def idle(self) -> bool:
        return self.task is None and self.request is None


async def serve(
    state: ServerState,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    tls: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """The one place the listening socket is made; `reuse_port` lets N workers share a port;
    with `tls` the port speaks HTTPS only (a TLS handshake gets header_timeout_s)."""
    loop = asyncio.get_running_loop()
    handshake = state.limits.header_timeout_s if tls is not None else None
    return await loop.create_server(
        lambda: HttpConnection(state),
        host,
        port,
        backlog=1024,
        reuse_port=reuse_port or None,
        ssl=tls,
        ssl_handshake_timeout=handshake,
    )


async def drain(server: asyncio.Server, state: ServerState, grace_s: float) -> None:
    """Graceful stop: no new connections, idle ones closed, in-flight ones given `grace_s`."""
    state.draining = True
    server.close()
    for conn in list(state.connections):
        if conn.idle():
            conn.close()
    in_flight = [c.task for c in state.connections if c.task is not None]
    if in_flight:
        await asyncio.wait(in_flight, timeout=grace_s)
    for conn in list(state.connections):
        conn.close()
