"""Demo OpenAI-compatible model server: deterministic answers, optional PII, failure modes.

    python -m gateway.demo.upstream --host 127.0.0.1 --port 0 [--api-key KEY] [--token-delay-ms 20]

Answers are a pure function of the request (model and last user message or prompt), so tests
can compare runs. A prompt containing the word "pii" gets an answer carrying every value in
`gateway.demo.pii`, cut into tokens of a few characters so each value straddles stream events.
A request whose `model` is one of FAILURE_MODES misbehaves on purpose. `/_demo/` exposes what
the server saw (requests, connections, streams) for the tests; it needs no API key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import math
import re
import struct
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import typedefs as web_typedefs
from aiohttp import web

from gateway.demo import pii
from gateway.demo._serve import base_parser, error_body, error_response, serve, start_app

MODEL_VERSION = "2026-11-01"  # sent as x-model-version on every answer
MODEL_VERSION_HEADER = "x-model-version"
MODELS = ("llama-3-8b-instruct", "llama-3-70b-instruct", "credit-risk-v1", "text-embedding-demo")
FAILURE_MODES = (
    "fail-close-early",  # headers and part of the body, then the connection is aborted
    "fail-slow-headers",  # nothing for x-demo-delay-s seconds (default 30), then a normal answer
    "fail-malformed-json",  # 200 application/json that does not parse
    "fail-invalid-utf8",  # a content string carrying bytes that are not UTF-8
    "fail-500",  # 500 with an OpenAI error body
    "fail-stall-stream",  # part of the answer, then silence with the connection held open
)
STREAM_DELAY_HEADER = "x-demo-token-delay-ms"
SLOW_HEADERS_DELAY_HEADER = "x-demo-delay-s"
SLOW_HEADERS_DEFAULT_S = 30.0
DEFAULT_MAX_TOKENS = 32
MAX_TOKENS_LIMIT = 100_000  # keeps a typo from building a gigabyte answer
DEFAULT_DIMENSIONS = 64
MAX_DIMENSIONS = 4096
PARTIAL_TOKENS = 3  # tokens sent before fail-close-early / fail-stall-stream give up
HISTORY = 100  # requests kept for GET /_demo/requests
FINGERPRINT = "fp_demo"
# 0xFF and 0xFE never occur in UTF-8; C3 28 is a lead byte whose continuation is missing.
INVALID_UTF8 = b"\xff\xfe\xc3\x28"

_PII_TRIGGER = re.compile(r"\bpii\b", re.IGNORECASE)
_TOKEN_SIZES = (3, 4, 2, 5, 3, 4)  # shorter than every PII value, so each one is split
_POISON = "\x00poison\x00"  # stands in for INVALID_UTF8 until the answer is bytes
_SLOT = "\x00slot\x00"  # marks where a token goes in a pre-rendered stream event
_DONE = b"data: [DONE]\n\n"
_FILLER_TEXT = (
    "The gateway sits on the wire in front of every model endpoint. It checks who is calling, "
    "decides whether the call is allowed, masks what must not leave, and writes a record that "
    "an auditor can verify without trusting the operator. Streams pass through token by token, "
    "so the first words reach the caller while the model is still thinking about the rest. "
)


def tokenize(text: str) -> tuple[str, ...]:
    """Cut `text` into pieces of a few characters, the way a BPE tokenizer splits words."""
    sizes = itertools.cycle(_TOKEN_SIZES)
    pieces: list[str] = []
    start = 0
    while start < len(text):
        size = next(sizes)
        pieces.append(text[start : start + size])
        start += size
    return tuple(pieces)


_FILLER = tokenize(_FILLER_TEXT)
_PII_TOKENS = tokenize(pii.TEXT + " ")


def answer_tokens(model: str, prompt: str, max_tokens: int) -> tuple[str, ...]:
    """The deterministic answer: filler from a prompt-chosen offset, PII first when asked.

    A PII answer is never cut short of the whole PII text, whatever max_tokens says.
    """
    digest = hashlib.blake2b(f"{model}\0{prompt}".encode(), digest_size=4).digest()
    start = int.from_bytes(digest, "big")
    lead = _PII_TOKENS if _PII_TRIGGER.search(prompt) else ()
    filler = (_FILLER[(start + i) % len(_FILLER)] for i in range(max_tokens - len(lead)))
    return lead + tuple(filler)


@dataclass(frozen=True, slots=True)
class Answer:
    """A completion before it is put in the chat or text wire shape."""

    id: str
    model: str
    created: int
    tokens: tuple[str, ...]
    prompt_tokens: int
    finish_reason: str

    def usage(self) -> dict[str, int]:
        completion = len(self.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }


@dataclass(frozen=True, slots=True)
class Stream:
    """A streamed answer as SSE bytes: opening event, one event per token, closing events."""

    head: bytes
    tokens: list[bytes]
    tail: bytes

    def replace(self, old: bytes, new: bytes) -> Stream:
        return Stream(self.head, [event.replace(old, new) for event in self.tokens], self.tail)


# A choice builder gets the token (None on the closing chunk) and the finish reason.
ChoiceBuilder = Callable[[str | None, str | None], dict[str, Any]]


def _chat_delta(content: str | None, finish: str | None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def _text_delta(content: str | None, finish: str | None) -> dict[str, Any]:
    return {"text": content or "", "index": 0, "logprobs": None, "finish_reason": finish}


_CHAT_HEAD = {
    "index": 0,
    "delta": {"role": "assistant", "content": "", "refusal": None},
    "logprobs": None,
    "finish_reason": None,
}


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def render_stream(
    answer: Answer, obj: str, choice: ChoiceBuilder, head: dict[str, Any] | None, usage: bool
) -> Stream:
    """Render every SSE event up front; token events come from one template, not a dump each."""
    base = answer.envelope(obj)
    # OpenAI sends "usage": null on every chunk when usage was asked for, then a usage chunk.
    trailer: dict[str, Any] = {"usage": None} if usage else {}

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**base, "choices": choices, **trailer}

    prefix, suffix = _event(chunk([choice(_SLOT, None)])).split(orjson.dumps(_SLOT))
    tokens = [prefix + orjson.dumps(token) + suffix for token in answer.tokens]
    tail = _event(chunk([choice(None, answer.finish_reason)]))
    if usage:
        tail += _event({**base, "choices": [], "usage": answer.usage()})
    return Stream(_event(chunk([head])) if head else b"", tokens, tail + _DONE)


def render_chat(answer: Answer, stream: bool, usage: bool) -> bytes | Stream:
    if stream:
        return render_stream(answer, "chat.completion.chunk", _chat_delta, _CHAT_HEAD, usage)
    message = {"role": "assistant", "content": "".join(answer.tokens), "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": answer.finish_reason,
    }
    return orjson.dumps(
        {**answer.envelope("chat.completion"), "choices": [choice], "usage": answer.usage()}
    )


def render_text(answer: Answer, stream: bool, usage: bool) -> bytes | Stream:
    if stream:
        return render_stream(answer, "text_completion", _text_delta, None, usage)
    choice = _text_delta("".join(answer.tokens), answer.finish_reason)
    return orjson.dumps(
        {**answer.envelope("text_completion"), "choices": [choice], "usage": answer.usage()}
    )


def embedding(model: str, text: str, dimensions: int, as_base64: bool) -> list[float] | str:
    """A unit vector derived from the text, little-endian float32 in base64 if asked."""
    raw = hashlib.shake_256(f"{model}\0{text}".encode()).digest(2 * dimensions)
    values = struct.unpack(f"<{dimensions}h", raw)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    vector = [v / norm for v in values]
    if as_base64:
        return base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
    return vector


def _count_tokens(text: str) -> int:
    return len(text) // 4 + 1


class BadRequest(web.HTTPBadRequest):
    """A 400 with an OpenAI error body, raised from anywhere in a handler."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        body = error_body(message, "invalid_request_error", code)
        super().__init__(body=body, content_type="application/json")


def _last_user_text(payload: dict[str, Any]) -> str:
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list", "invalid_messages")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _prompt_text(payload: dict[str, Any]) -> str:
    prompt = payload.get("prompt", "")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[-1]  # a batch of prompts: answer the last, like the chat path
    return str(prompt)


def _int_field(payload: dict[str, Any], names: tuple[str, ...], default: int, limit: int) -> int:
    for name in names:
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise BadRequest(f"'{name}' must be an integer from 1 to {limit}", f"invalid_{name}")
        return value
    return default


def _float_header(request: web.Request, name: str, default: float) -> float:
    try:
        value = float(request.headers.get(name, default))
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise BadRequest(f"header {name} must be a non-negative number", "invalid_header")
    return value


def _parse(body: bytes) -> Any:
    """The JSON body, or None when there is none or it does not parse (recorded either way)."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class Call:
    """A /v1 request that was read and recorded: its parsed body and the body's SHA-256."""

    request: web.Request
    payload: Any
    sha256: str

    def body(self) -> dict[str, Any]:
        """The JSON object with a string `model`, which every completion request needs."""
        if not isinstance(self.payload, dict):
            raise BadRequest("the body must be a JSON object", "invalid_json")
        if not isinstance(self.payload.get("model"), str):
            raise BadRequest("'model' is required and must be a string", "invalid_model")
        return self.payload


CallHandler = Callable[[Call], Awaitable[web.StreamResponse]]


class DemoUpstream:
    """One demo model server: its settings, what it has seen, and its handlers."""

    def __init__(self, *, api_key: str | None = None, token_delay_ms: float = 20) -> None:
        self._expected_auth = f"Bearer {api_key}".encode() if api_key else None
        self._token_delay_ms = token_delay_ms
        self._seen: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._counts = self._zero_counts()
        # Set once the runner exists; it alone knows the open connections.
        self.server: web.Server | None = None

    @staticmethod
    def _zero_counts() -> dict[str, int]:
        names = ("requests", "streams_started", "streams_completed", "streams_cancelled")
        return dict.fromkeys(names, 0)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._admit(self.models))
        app.router.add_post("/v1/chat/completions", self._admit(self.chat))
        app.router.add_post("/v1/completions", self._admit(self.completions))
        app.router.add_post("/v1/embeddings", self._admit(self.embeddings))
        app.router.add_get("/_demo/requests", self.requests_seen)
        app.router.add_post("/_demo/reset", self.reset)
        app.router.add_get("/_demo/stats", self.stats)
        return app

    def _admit(self, handler: CallHandler) -> web_typedefs.Handler:
        """Wrap a /v1 handler: read and record the request, then enforce the API key."""

        async def admit(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            call = Call(request, _parse(body), hashlib.sha256(body).hexdigest())
            self._record(call, len(body))
            if self._expected_auth is not None and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode("utf-8", "surrogateescape"),
                self._expected_auth,
            ):
                message = "Incorrect API key provided."
                return error_response(401, message, "invalid_request_error", "invalid_api_key")
            return await handler(call)

        return admit

    def _record(self, call: Call, body_length: int) -> None:
        request = call.request
        self._counts["requests"] += 1
        self._seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": [
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers
                ],
                "body_length": body_length,
                "body_sha256": call.sha256,
                "model": call.payload.get("model") if isinstance(call.payload, dict) else None,
            }
        )

    async def models(self, call: Call) -> web.StreamResponse:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "demo"} for m in MODELS]
        return self._json(orjson.dumps({"object": "list", "data": data}))

    async def chat(self, call: Call) -> web.StreamResponse:
        return await self._complete(call, _last_user_text(call.body()), "chatcmpl", render_chat)

    async def completions(self, call: Call) -> web.StreamResponse:
        return await self._complete(call, _prompt_text(call.body()), "cmpl", render_text)

    async def _complete(
        self,
        call: Call,
        prompt: str,
        id_prefix: str,
        render: Callable[[Answer, bool, bool], bytes | Stream],
    ) -> web.StreamResponse:
        payload = call.body()
        model = payload["model"]
        limit = ("max_tokens", "max_completion_tokens")
        max_tokens = _int_field(payload, limit, DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT)
        tokens = answer_tokens(model, prompt, max_tokens)
        if model == "fail-invalid-utf8":
            tokens = (*tokens[:PARTIAL_TOKENS], _POISON, *tokens[PARTIAL_TOKENS:])
        answer = Answer(
            id=f"{id_prefix}-{call.sha256[:24]}",  # same request, same id
            model=model,
            created=int(time.time()),
            tokens=tokens,
            prompt_tokens=_count_tokens(prompt),
            finish_reason="length" if any(payload.get(n) for n in limit) else "stop",
        )
        options = payload.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        rendered = render(answer, payload.get("stream") is True, usage)
        return await self._reply(call.request, model, rendered)

    async def embeddings(self, call: Call) -> web.StreamResponse:
        payload = call.body()
        model = payload["model"]
        inputs = payload.get("input")
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
        ):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("'input' must be a string or a non-empty list", "invalid_input")
        dimensions = _int_field(payload, ("dimensions",), DEFAULT_DIMENSIONS, MAX_DIMENSIONS)
        as_base64 = payload.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": embedding(model, str(text), dimensions, as_base64),
            }
            for i, text in enumerate(inputs)
        ]
        prompt_tokens = sum(_count_tokens(str(text)) for text in inputs)
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        body = orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})
        return await self._reply(call.request, model, body)

    async def _reply(
        self, request: web.Request, model: str, rendered: bytes | Stream
    ) -> web.StreamResponse:
        """Send the answer, or misbehave in the way the model name asks for."""
        if model == "fail-500":
            message = "The demo upstream failed on purpose."
            return error_response(500, message, "server_error", "demo_failure")
        if model == "fail-malformed-json":
            return self._json(b'{"id": "chatcmpl-broken", "choices": [{"message": ')
        if model == "fail-slow-headers":
            await asyncio.sleep(
                _float_header(request, SLOW_HEADERS_DELAY_HEADER, SLOW_HEADERS_DEFAULT_S)
            )
        if model == "fail-invalid-utf8":
            rendered = rendered.replace(orjson.dumps(_POISON)[1:-1], INVALID_UTF8)
        if model in ("fail-close-early", "fail-stall-stream"):
            return await self._partial(request, rendered, stall=model == "fail-stall-stream")
        if isinstance(rendered, Stream):
            return await self._stream(request, rendered)
        return self._json(rendered)

    @staticmethod
    def _json(body: bytes) -> web.Response:
        return web.Response(
            body=body,
            content_type="application/json",
            headers={MODEL_VERSION_HEADER: MODEL_VERSION},
        )

    async def _open_stream(
        self, request: web.Request, content_length: int | None = None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={MODEL_VERSION_HEADER: MODEL_VERSION})
        if content_length is None:
            response.content_type = "text/event-stream"
            response.headers["Cache-Control"] = "no-cache"
        else:
            response.content_type = "application/json"
            response.content_length = content_length
        await response.prepare(request)
        return response

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """Count a stream as started, then as completed or as cancelled by its client leaving."""
        self._counts["streams_started"] += 1
        try:
            yield
        except (asyncio.CancelledError, ConnectionResetError):
            self._counts["streams_cancelled"] += 1
            raise
        self._counts["streams_completed"] += 1

    async def _stream(self, request: web.Request, stream: Stream) -> web.StreamResponse:
        """Write each token as its own SSE event, pausing the token delay before each."""
        delay_s = _float_header(request, STREAM_DELAY_HEADER, self._token_delay_ms) / 1000
        response = await self._open_stream(request)
        with self._tracked():
            if stream.head:
                await response.write(stream.head)
            for event in stream.tokens:
                if delay_s:
                    await asyncio.sleep(delay_s)
                await response.write(event)
            await response.write(stream.tail)
            await response.write_eof()
        return response

    async def _partial(
        self, request: web.Request, rendered: bytes | Stream, *, stall: bool
    ) -> web.StreamResponse:
        """Send the start of the answer, then stall until the client leaves or abort."""
        if isinstance(rendered, Stream):
            response = await self._open_stream(request)
            await response.write(rendered.head + b"".join(rendered.tokens[:PARTIAL_TOKENS]))
        else:
            response = await self._open_stream(request, content_length=len(rendered))
            await response.write(rendered[: len(rendered) // 2])
        if stall:
            with self._tracked():
                await asyncio.Event().wait()  # cancelled by aiohttp when the client disconnects
        if request.transport is not None:
            request.transport.abort()
        return response

    async def requests_seen(self, request: web.Request) -> web.Response:
        return web.json_response(list(self._seen), dumps=lambda o: orjson.dumps(o).decode())

    async def reset(self, request: web.Request) -> web.Response:
        self._seen.clear()
        self._counts = self._zero_counts()
        return web.json_response({"reset": True})

    async def stats(self, request: web.Request) -> web.Response:
        # The connection asking is not counted: tests want to see what else is still open.
        open_connections = len(self.server.connections) - 1 if self.server else 0
        return web.json_response({**self._counts, "open_connections": open_connections})


async def start_upstream(
    host: str, port: int, *, api_key: str | None = None, token_delay_ms: float = 20
) -> tuple[web.AppRunner, str]:
    """Start a demo upstream in this event loop; the caller owns `runner.cleanup()`."""
    upstream = DemoUpstream(api_key=api_key, token_delay_ms=token_delay_ms)
    runner, url = await start_app(upstream.app(), host, port)
    upstream.server = runner.server
    return runner, url


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--api-key", help="require Authorization: Bearer KEY on /v1/*")
    parser.add_argument("--token-delay-ms", type=float, default=20, help="pause before each token")
    args = parser.parse_args(argv)
    return serve(
        lambda: start_upstream(
            args.host, args.port, api_key=args.api_key, token_delay_ms=args.token_delay_ms
        )
    )


if __name__ == "__main__":
    sys.exit(main())
