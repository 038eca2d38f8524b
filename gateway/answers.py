"""What a request or an answer says about itself: its `model`, and the tokens the upstream
reports in `usage` (OpenAI `prompt_tokens`/`completion_tokens`, or `input_tokens`/
`output_tokens`). The audit log records them, so evidence can say who used how much of what.
"""

from __future__ import annotations

from typing import Any

import orjson

Tokens = tuple[int | None, int | None]  # (in, out); None where the upstream does not say
NO_TOKENS: Tokens = (None, None)
SSE_LINES = 64  # lines of an event stream looked at, from its start or its end


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one."""
    if not body or body.lstrip()[:1] != b"{":
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def model_of(document: dict[str, Any] | None) -> str | None:
    model = document.get("model") if document else None
    return model if isinstance(model, str) else None


def tokens_of(document: dict[str, Any] | None) -> Tokens:
    usage = document.get("usage") if document else None
    if not isinstance(usage, dict):
        return NO_TOKENS
    return (
        _count(usage.get("prompt_tokens", usage.get("input_tokens"))),
        _count(usage.get("completion_tokens", usage.get("output_tokens"))),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def json_answer(body: bytes) -> tuple[str | None, Tokens]:
    """A JSON answer's served model and token usage, from one parse."""
    document = json_object(body)
    return model_of(document), tokens_of(document)


def _events(lines: list[bytes]):
    for line in lines:
        if line.startswith(b"data:") and b"{" in line:
            yield json_object(line[5:].strip())


def sse_model(body: bytes) -> str | None:
    """The `model` of the first JSON event in an event stream."""
    return next((model_of(d) for d in _events(body.split(b"\n", SSE_LINES)[:SSE_LINES])), None)


def sse_tokens(body: bytes) -> Tokens:
    """The usage an event stream reports: its last event with a `usage` object (OpenAI sends it
    last, when the client asked with stream_options.include_usage)."""
    tail = body.rsplit(b"\n", SSE_LINES)[-SSE_LINES:]
    for document in _events([line for line in reversed(tail) if b'"usage"' in line]):
        tokens = tokens_of(document)
        if tokens != NO_TOKENS:
            return tokens
    return NO_TOKENS
