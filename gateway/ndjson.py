"""NDJSON (`application/x-ndjson`, Ollama's streams) masked line by line with the SSE engine.

Each line is one JSON document, so it is fed to the Rust `SseStream` as one `data:` event and
each event it gives back is one line again. That engine carries a value split across lines
(`"bob@"`, then `"example.com"`) in the next line for the same JSONPath location, as it does
across SSE events, and its output does not depend on where the chunks were cut: lines are
pushed only once complete. Before a line with `"done": true` (Ollama's last one) the held text
is flushed, so it reaches the client before the stream says it is done.
"""

from __future__ import annotations

import orjson

from gateway._masker import SseStream

LINE_MAX = 16 * 1024 * 1024  # one line is held whole; a longer one fails closed
_DATA = b"data: "
_FLUSH = b"data: [DONE]\n\n"


def _ends_answer(line: bytes) -> bool:
    if b'"done"' not in line:
        return False
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False  # the masker refuses it next
    return isinstance(document, dict) and document.get("done") is True


def _lines(events: bytes) -> bytes:
    """SSE events from the masker (one `data:` line each) back to NDJSON lines."""
    out = bytearray()
    for event in events.split(b"\n\n"):
        if event and event != _FLUSH[:-2]:
            out += event.removeprefix(_DATA) + b"\n"
    return bytes(out)


class NdjsonStream:
    """Push chunks, get masked whole lines; `finish` masks a last line without a newline.

    Raises:
        ValueError: a line that is not JSON or not UTF-8, or longer than LINE_MAX.
    """

    def __init__(self, sse: SseStream) -> None:
        self.sse = sse
        self.pending = bytearray()
        self.released = b""  # after a failure: the lines masked before the failing one

    def push(self, chunk: bytes) -> bytes:
        end = chunk.rfind(b"\n")
        if end < 0:
            self.pending += chunk
            if len(self.pending) > LINE_MAX:
                raise ValueError(f"an NDJSON line longer than {LINE_MAX} bytes")
            return b""
        complete = bytes(self.pending) + chunk[:end]
        self.pending = bytearray(chunk[end + 1 :])
        return self._mask(complete.split(b"\n"))

    def finish(self) -> bytes:
        last = self._mask([bytes(self.pending)])
        self.pending.clear()
        try:
            return last + _lines(self.sse.finish())
        except ValueError:
            self.released = last + _lines(self.sse.take_released())
            raise

    def take_released(self) -> bytes:
        released, self.released = self.released, b""
        return released

    def _mask(self, lines: list[bytes]) -> bytes:
        events = bytearray()
        try:
            for line in lines:
                # A raw CR is JSON whitespace but an SSE line end: as a space it means the same.
                line = line.replace(b"\r", b" ").strip()
                if not line:
                    continue
                if _ends_answer(line):
                    events += self.sse.push(_FLUSH)
                events += self.sse.push(_DATA + line + b"\n\n")
        except ValueError:
            self.released = _lines(bytes(events) + self.sse.take_released())
            raise
        return _lines(bytes(events))

    @property
    def counts(self) -> dict[str, int]:
        return self.sse.counts

    @property
    def model(self) -> str | None:
        return self.sse.model
