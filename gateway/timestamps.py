"""RFC 3339 UTC timestamps with microseconds, as `datetime` writes them, for every audit entry
and log line: the date and time of day are formatted once a second (strftime costs a few
microseconds a call), the microseconds on each call."""

from __future__ import annotations

import math
from datetime import UTC, datetime


class Timestamps:
    """`datetime.fromtimestamp(posix, UTC)` as `YYYY-MM-DDTHH:MM:SS.ffffff` + `zone`."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.cached = (-1, "")  # (second, its text), replaced whole: safe to read on any thread

    def at(self, posix: float) -> str:
        # Rounded as datetime rounds: the fraction alone, half to even.
        second = math.floor(posix)
        micros = round((posix - second) * 1_000_000)
        if micros == 1_000_000:
            second, micros = second + 1, 0
        cached_second, text = self.cached
        if second != cached_second:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self.cached = (second, text)
        return f"{text}.{micros:06d}{self.zone}"


ISO = Timestamps("+00:00")  # as datetime.isoformat writes UTC: every log line
ZULU = Timestamps("Z")  # audit entries' `ts` and `received`, e.g. 2025-01-02T03:04:05.123456Z
