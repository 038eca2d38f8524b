"""Backpressure on one client connection, both ways (in the manner of uvicorn's flow_control.py).

- Writing: the transport calls pause_writing/resume_writing around its high-water mark; writers
  `await drain()`, so a slow client slows whatever feeds it.
- Reading: while an exchange runs, bytes the client sends on (a pipelined request, a flood)
  are not read beyond the one read that showed them, so a connection never buffers more than
  its limits plus one read, however much the client sends.
"""

from __future__ import annotations

import asyncio

# Client socket write buffer: above HIGH we stop feeding it, below LOW we resume. uvloop's default
# low-water mark is 16 bytes, which would wake us for almost every chunk.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024


class FlowControl:
    __slots__ = ("_transport", "_writable", "read_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self._writable = asyncio.Event()
        self._writable.set()
        self.read_paused = False

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        """Also called when the connection is lost, so a waiting writer sees it."""
        self._writable.set()

    @property
    def writable(self) -> bool:
        return self._writable.is_set()

    async def drain(self) -> None:
        await self._writable.wait()
