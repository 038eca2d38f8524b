"""Vertex AI's streamGenerateContent without `alt=sse`: a JSON array of response chunks.

Each chunk carries the next piece of the model's text, so a value can straddle two chunks. The
array is masked as the event stream it stands for: every chunk goes through the masker's SSE
stream as one event, so text is followed across chunks, and the events that come out (held-back
text may arrive in one more chunk at the end) become the masked array.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway._masker import Masker


def chunks(body: bytes) -> list[dict[str, Any]] | None:
    """The chunks if `body` is an array of Gemini response chunks (objects with `candidates`)."""
    if body.lstrip()[:1] != b"[":
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("response is not JSON") from None
    gemini = all(isinstance(c, dict) for c in document) and any("candidates" in c for c in document)
    return document if document and gemini else None


def mask(masker: Masker, items: list[dict[str, Any]]) -> tuple[bytes, dict[str, int]]:
    stream = masker.sse_stream()
    events = bytearray()
    for item in items:
        events += stream.push(b"data: " + orjson.dumps(item) + b"\n\n")
    events += stream.finish()
    masked = [orjson.loads(line[5:]) for line in events.split(b"\n") if line.startswith(b"data:")]
    return orjson.dumps(masked), stream.counts
