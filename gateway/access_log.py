"""The access log: one JSON line per exchange on stderr, the same shape as every other log line.

It is written on every request, so it skips the logging machinery (record, handler lock,
formatter, a write per line): the line is one orjson call, and the lines of all exchanges that
end in the same event-loop iteration go out in one write at its end. Whether it is written at
all still follows the `gateway.access` logger's level.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson

NAME = "gateway.access"


class AccessLog:
    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self.logger = logging.getLogger(NAME)
        self.pending: list[bytes] = []

    def exchange(self, fields: dict[str, Any]) -> None:
        """Queue one line; it is written when this loop iteration ends."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
            "level": "info",
            "logger": NAME,
            "msg": "exchange",
            **fields,
        }
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        data, self.pending = memoryview(b"".join(self.pending)), []
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:  # stderr gone (closed pipe): nothing to report it on
            return
