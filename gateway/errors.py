"""Error responses in the OpenAI error shape, so SDKs show the gateway's reason to the caller."""

from __future__ import annotations

import orjson


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
