"""Upstream client: h11 over asyncio with a bounded keep-alive pool per connection.

Reading from the upstream socket is paused while the consumer has not asked for more, so a slow
client (whose writer stops draining) stops reads from the upstream: memory stays bounded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

import h11

from gateway.config import ConnectionConfig, ServerConfig
from gateway.errors import GatewayError, protocol_error_reason
from gateway.headers import Headers, checked, listed

# Pause reading the upstream socket once this much is received but not yet consumed.
READ_HIGH_WATER = 256 * 1024
# An idle pooled connection older than this is closed rather than reused. Common model servers
# (uvicorn, and so vLLM) close idle keep-alive connections after 5 s; reusing one just as the
# server closes it would fail a request that was already sent, which we must not retry.
POOL_IDLE_S = 4.0


class UpstreamError(GatewayError):
    """The upstream failed: 502 when it broke, 504 when it was too slow."""


def _bad_gateway(message: str) -> UpstreamError:
    return UpstreamError(502, "upstream_error", message)


def _malformed(exc: h11.RemoteProtocolError) -> UpstreamError:
    return _bad_gateway(f"upstream sent a malformed response: {protocol_error_reason(exc)}")


def _timeout(message: str) -> UpstreamError:
    return UpstreamError(504, "upstream_timeout", message)


class UpstreamConnection(asyncio.Protocol):
    """One socket to the upstream and its h11 client state."""

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.unread = 0
        self.paused = False
        self.lost = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self.unread += len(data)
        if self.unread > READ_HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.h11.their_state is not h11.CLOSED:
            with contextlib.suppress(RuntimeError):  # h11 already saw EOF
                self.h11.receive_data(b"")
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    @property
    def reusable(self) -> bool:
        return (
            not self.lost
            and self.transport is not None
            and not self.transport.is_closing()
            and self.h11.our_state is h11.IDLE
            and self.h11.their_state is h11.IDLE
            and not self.h11.trailing_data[0]
            and time.monotonic() - self.idle_since < POOL_IDLE_S
        )

    def send_request(self, request: h11.Request, body: bytes) -> None:
        """Head, body and end in one write: one syscall per request, not three."""
        data = self.h11.send(request) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        self.transport.write(data + (self.h11.send(h11.EndOfMessage()) or b""))

    async def next_event(self, idle_s: float, *, wait_first: bool = False) -> h11.Event:
        """The next h11 event, reading more from the socket only when h11 needs it.

        `wait_first`: h11 holds nothing yet (an answer to a request just sent), so asking it
        before bytes arrive would only be told NEED_DATA.
        """
        while True:
            if not wait_first:
                try:
                    event = self.h11.next_event()
                except h11.RemoteProtocolError as exc:
                    raise _malformed(exc) from None
                if event is not h11.NEED_DATA:
                    return event
            wait_first = False
            if self.lost:
                raise _bad_gateway("upstream closed the connection")
            self.unread = 0
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            await self._wait(idle_s)

    def poll_event(self) -> h11.Event | type[h11.NEED_DATA]:
        """The next event if it is already buffered; NEED_DATA otherwise (never waits)."""
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise _malformed(exc) from None

    async def _wait(self, idle_s: float) -> None:
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        timer = loop.call_later(idle_s, self._expire, waiter, idle_s)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    @staticmethod
    def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
        if not waiter.done():
            waiter.set_exception(_timeout(f"upstream sent nothing for {timeout:g} s"))

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class BodyReader(Protocol):
    """What reads a response body: the upstream's own, or one decoding or redacting it."""

    async def read(self) -> bytes | None: ...


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Headers
    conn: UpstreamConnection
    pool: UpstreamPool
    timeout: float
    done: bool = False

    async def read(self) -> bytes | None:
        """The body bytes that have arrived (waiting for some if none have), or None at the end.

        Everything already received is returned at once, so a burst of small chunks (a fast
        token stream) costs one write to the client rather than one per chunk.
        """
        if self.done:
            return None
        data = b""
        while True:
            event = await self.conn.next_event(self.timeout) if not data else self.conn.poll_event()
            if isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.done = True
                self.pool.release(self.conn)
                return data or None
            elif isinstance(event, h11.ConnectionClosed):
                raise _bad_gateway("upstream closed the connection before the body ended")
            elif event is h11.NEED_DATA:
                return data

    def discard(self) -> None:
        """Give up on the rest of the body: the connection cannot be reused."""
        if not self.done:
            self.done = True
            self.pool.discard(self.conn)


class UpstreamPool:
    """A bounded set of keep-alive connections to one upstream."""

    def __init__(self, conn: ConnectionConfig, server: ServerConfig) -> None:
        self.config = conn
        self.host, self.port = conn.host, conn.port
        self.host_header = (
            conn.host if conn.port in (80, 443) else f"{conn.host}:{conn.port}"
        ).encode()
        self.connect_timeout = server.upstream_connect_timeout_s
        self.read_timeout = conn.upstream_timeout_s or server.upstream_timeout_s
        self.ssl: ssl.SSLContext | None = None
        if conn.scheme == "https":
            self.ssl = ssl.create_default_context(cafile=conn.ca_file)
        self.idle: collections.deque[UpstreamConnection] = collections.deque()
        self.slots = asyncio.Semaphore(conn.pool_size)
        self.open = 0

    async def _acquire(self) -> UpstreamConnection:
        await self.slots.acquire()
        while self.idle:
            conn = self.idle.pop()
            if conn.reusable:
                return conn
            self._close(conn)
        try:
            return await self._connect()
        except BaseException:
            self.slots.release()
            raise

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    UpstreamConnection,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            raise _timeout(
                f"connecting to upstream {self.config.name!r} timed out after "
                f"{self.connect_timeout:g} s"
            ) from None
        except ssl.SSLError as exc:
            raise _bad_gateway(
                f"TLS to upstream {self.config.name!r} failed: {exc.reason or exc}"
            ) from None
        except OSError as exc:
            raise _bad_gateway(
                f"cannot connect to upstream {self.config.name!r}: {exc.strerror or exc}"
            ) from None
        self.open += 1
        return conn

    async def request(
        self, method: str, target: str, headers: Headers, body: bytes
    ) -> UpstreamResponse:
        """Send a request and wait for the response head (502/504 on failure)."""
        conn = await self._acquire()
        try:
            head = h11.Request(
                method=method.encode("ascii"),
                target=target.encode("ascii"),
                headers=checked(headers),
                _parsed=True,
            )
            conn.send_request(head, body)
            buffered, closed = conn.h11.trailing_data  # empty but for a hostile upstream
            wait_first = not buffered and not closed
            while True:
                event = await conn.next_event(self.read_timeout, wait_first=wait_first)
                wait_first = False
                if isinstance(event, h11.Response):
                    return UpstreamResponse(
                        event.status_code, listed(event.headers), conn, self, self.read_timeout
                    )
                if isinstance(event, h11.ConnectionClosed):
                    raise _bad_gateway("upstream closed the connection without a response")
                # InformationalResponse (1xx): keep waiting for the final response.
        except BaseException:
            self.discard(conn)
            raise

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose exchange completed; reuse it if both sides allow."""
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE and not conn.lost:
            conn.h11.start_next_cycle()
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            self._close(conn)
        self.slots.release()

    def discard(self, conn: UpstreamConnection) -> None:
        self._close(conn)
        self.slots.release()

    def _close(self, conn: UpstreamConnection) -> None:
        conn.close()
        self.open -= 1

    def close(self) -> None:
        while self.idle:
            self._close(self.idle.pop())
