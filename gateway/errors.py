"""Error responses in the OpenAI error shape, so SDKs show the gateway's reason to the caller."""

from __future__ import annotations

import re

import orjson

# Where h11 starts quoting the bytes it could not parse: `illegal header line: b'...'`,
# `Illegal header value b'...'`, `... (incomplete chunked read)`. Those bytes may be a token.
# Its own sentences may hold a colon ("Only Transfer-Encoding: chunked is supported"): kept.
QUOTED_TAIL = re.compile(r"\s(?:b['\"]|bytearray\()|\s\(")


class GatewayError(Exception):
    """A refusal with an HTTP status, a stable machine code and a message safe to show.

    The message must never contain a secret, a token or an unmasked value.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []

    def body(self) -> bytes:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "gateway_error", "code": code}})


def error_message(body: bytes) -> str:
    """The message of an error body in the OpenAI shape, or the start of any other body."""
    try:
        return orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:200]


def protocol_error_reason(exc: Exception) -> str:
    """What an h11 protocol error says, without the bytes it quotes (they may hold a secret)."""
    return QUOTED_TAIL.split(str(exc), maxsplit=1)[0].strip().rstrip(":") or "malformed HTTP"
