"""The access log: one JSON line per exchange on stderr, the same shape as every other log line.

It is written on every request, so it skips the logging machinery (record, handler lock,
formatter, a write per line): the line is one orjson call, and the lines go out together, in one
write at most FLUSH_DELAY_S after the first of them. Written at the end of the event-loop
iteration instead, the write landed on the next request's way in or on its first relayed event
(a keep-alive client asks again as the previous answer ends): benches/bench_ttft.py. Lines still
pending when the gateway stops are written then. Whether it is written at all still follows the
`gateway.access` logger's level.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import orjson

from gateway.timestamps import ISO

NAME = "gateway.access"
# Short enough that a reader sees each line at once, long enough to batch a busy gateway's lines.
FLUSH_DELAY_S = 0.01


class AccessLog:
    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self.logger = logging.getLogger(NAME)
        self.pending: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None

    def exchange(self, fields: dict[str, Any]) -> None:
        """Queue one line; it is written within FLUSH_DELAY_S."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        line = {
            "ts": ISO.at(time.time()),
            "level": "info",
            "logger": NAME,
            "msg": "exchange",
            **fields,
        }
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self.flush)
        self.pending.append(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        """Write every pending line now."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        data, self.pending = memoryview(b"".join(self.pending)), []
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:  # stderr gone (closed pipe): nothing to report it on
            return
