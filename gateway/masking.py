"""PII masking per policy rule, on top of the Rust masker (`gateway._masker`).

Maskers are compiled once per rule when a policy loads. Under a masking rule no response passes
unmasked; its media type picks the method:

- JSON (`application/json`, `+json`): masked whole at the rule's JSONPath expressions, or at
  every string value when those expressions select nothing in the body (a Vertex AI array of
  stream chunks as the stream it stands for);
- `text/event-stream`: event by event (values split across events are still caught);
- AWS event streams (Bedrock): message by message (eventstream_masking);
- NDJSON (`application/x-ndjson`, JSON Lines): line by line with the same engine;
- text (`text/*`, XML, YAML, ...): as one text stream;
- no Content-Type or `application/octet-stream`: read whole, masked as JSON, NDJSON or text
  by what the bytes are; bytes that are not UTF-8 are refused;
- anything else (images, audio, ...): refused with 502 `unmaskable_response`.

Anything the masker cannot parse fails closed: the caller gets a 502, never the body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway import chunk_arrays, eventstream
from gateway._masker import DEFAULT_REQUEST_PATHS, DEFAULT_RESPONSE_PATHS, Masker
from gateway.config import Config, ConfigError, RuleConfig
from gateway.errors import GatewayError
from gateway.eventstream_masking import MASKING_FAILED_MESSAGE, EventStreamMasking
from gateway.media import NDJSON, UNDECLARED, is_json, is_text
from gateway.ndjson import NdjsonStream
from gateway.strict_json import has_duplicate_key

# Where cloud model APIs put model text. Streams of these shapes (Vertex AI SSE) use the same
# paths.
CLOUD_RESPONSE_PATHS = (
    "$.candidates[*].content.parts[*].text",  # Vertex AI Gemini, and each of its SSE events
    "$[*].candidates[*].content.parts[*].text",  # Vertex AI streamGenerateContent JSON array
    "$.content[*].text",  # Anthropic Messages (Bedrock InvokeModel, Vertex AI)
    "$.completion",  # Anthropic text completions
    "$.output.message.content[*].text",  # Bedrock Converse
    "$.results[*].outputText",  # Amazon Titan
    "$.generation",  # Meta Llama on Bedrock
    "$.outputs[*].text",  # Mistral on Bedrock
    "$.text",  # Cohere Command
    "$.generations[*].text",  # Cohere
    "$.generated_text",  # SageMaker Hugging Face / TGI containers
    "$[*].generated_text",
    "$.predictions[*]",  # SageMaker and Vertex AI custom models that return strings
)
CLOUD_REQUEST_PATHS = (
    "$.contents[*].parts[*].text",  # Vertex AI Gemini
    "$.systemInstruction.parts[*].text",
    "$.system",  # Anthropic Messages (a string)
    "$.system[*].text",  # Anthropic blocks and Bedrock Converse
    "$.inputText",  # Amazon Titan
    "$.inputs",  # SageMaker Hugging Face / TGI containers
    "$.instances[*]",  # SageMaker and Vertex AI custom models that take strings
)
# Where model text sits in each API's answers; a rule without `mask_paths` masks all of them
# (an expression that selects nothing in a body costs nothing there).
RESPONSE_PATHS_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "openai": tuple(DEFAULT_RESPONSE_PATHS),
    "ollama": (
        "$.message.content",
        "$.message.thinking",
        "$.message.tool_calls[*].function.arguments..*",
        "$.response",
        "$.thinking",
    ),
    "anthropic": (
        "$.content[*].text",
        "$.content[*].thinking",
        "$.content[*].input..*",
        "$.delta.text",
        "$.delta.thinking",
        "$.delta.partial_json",
        "$.content_block.text",
    ),
    "tgi": (
        "$.generated_text",
        "$[*].generated_text",
        "$.token.text",
        "$.details.best_of_sequences[*].generated_text",
    ),
    "cloud": CLOUD_RESPONSE_PATHS,
}
# Where user text sits in each API's requests (`mask_request = true`).
REQUEST_PATHS_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "openai": tuple(DEFAULT_REQUEST_PATHS),  # also Ollama's messages and prompt
    "anthropic": ("$.system", "$.system[*].text"),
    "tgi": ("$.inputs",),
    "cloud": CLOUD_REQUEST_PATHS,
}
# Finds whether the rule's paths select any text: one finding (the first character) per
# non-empty selected string, never a value. Anchored, so the rest of a string is not scanned.
PROBE = ("gateway_probe", r"(?s)\A.", None)
# What an error may say about a media type an upstream sent: its registered shape, nothing else.
NAMEABLE_TYPE = re.compile(
    r"(application|audio|font|image|message|model|multipart|text|video)/[a-z0-9.+_-]{1,64}"
)


def masking_failed(what: str) -> GatewayError:
    return GatewayError(502, "masking_failed", f"{what} could not be masked, so it was withheld")


def unmaskable(kind: str) -> GatewayError:
    """502 for a response whose bytes the masker cannot read; names the type if it is one."""
    if not kind:
        named = "with no Content-Type"
    elif NAMEABLE_TYPE.fullmatch(kind):
        named = f"of type {kind}"
    else:
        named = "with a malformed Content-Type"
    return GatewayError(
        502,
        "unmaskable_response",
        f"the rule masks responses and a response {named} cannot be masked, so it was withheld",
    )


def _all_paths(formats: dict[str, tuple[str, ...]]) -> list[str]:
    return list(dict.fromkeys(p for paths in formats.values() for p in paths))


@dataclass(slots=True)
class StreamTransform:
    """A masking stream for one response: push chunks, then finish.

    `failed_tail` ends a stream whose rest cannot be masked with an in-band error its clients
    raise on (an error event the SDK raises); None when the format has none (the connection is
    cut instead). After `push` or `finish` raised, `released` gives the whole events masked
    before the failing one, so a client gets the same however the upstream cut its bytes.
    """

    push: Callable[[bytes], bytes]
    finish: Callable[[], bytes]
    counts: Callable[[], dict[str, int]]
    model: Callable[[], str | None] = lambda: None
    failed_tail: bytes | None = None
    released: Callable[[], bytes] = lambda: b""


# In-band ends for a stream whose rest could not be masked, in the OpenAI error shape SDKs
# raise on.
_FAILURE = (
    b'{"error":{"message":"the rest of this response could not be masked, so it was '
    b'withheld","type":"gateway_error","code":"masking_failed"}}'
)
MASKING_FAILED_EVENT = b"data: " + _FAILURE + b"\n\n"
NDJSON_FAILURE = _FAILURE + b"\n"  # Ollama's clients raise on a line with "error"


@dataclass(frozen=True, slots=True)
class JsonMasking:
    """A JSON body masked at some paths, or at every string when those paths select nothing.

    A body with a duplicate key is refused: the masker keeps one of the two values, and a client
    that reads the other would see it unmasked.
    """

    at_paths: Masker
    probe: Masker

    def mask(self, body: bytes) -> tuple[bytes, dict[str, int]]:
        """Raises ValueError if the body is not JSON or has a duplicate key."""
        masked, counts, text_selected = self.at_paths.mask_json_with_selection(body)
        # Text the paths selected (a chat answer's content) answers what the probe asks; a
        # string holding JSON, or nothing at all, is left to the probe.
        if not counts and not text_selected and not self.probe.mask_json(body)[1]:
            masked, counts = self.at_paths.mask_json_strings(body)
        if has_duplicate_key(body):
            raise ValueError("duplicate key")
        return masked, counts


@dataclass(frozen=True, slots=True)
class RuleMasking:
    """Everything one rule masks with; maskers of equal settings are shared between rules."""

    response: JsonMasking
    request: JsonMasking | None

    def mask_request(self, body: bytes) -> tuple[bytes, dict[str, int]]:
        """The request as the upstream will see it (`mask_request = true`)."""
        if self.request is None or not body:
            return body, {}
        try:
            return self.request.mask(body)
        except (ValueError, RecursionError):
            raise GatewayError(
                400, "masking_failed", "request body is not JSON, so it could not be masked"
            ) from None

    def streams(self, kind: str) -> bool:
        """Can a response of this type be masked as it arrives (rather than read whole)?"""
        return (
            kind in ("text/event-stream", eventstream.MEDIA_TYPE) or kind in NDJSON or is_text(kind)
        )

    def check(self, kind: str) -> None:
        """Refuse, before reading it, a response whose type no masking method reads."""
        if not (is_json(kind) or kind in UNDECLARED or self.streams(kind)):
            raise unmaskable(kind)

    def stream_for(self, kind: str) -> StreamTransform:
        """A stream masker for a response of a type `streams` accepts."""
        masker = self.response.at_paths
        if kind == "text/event-stream" or kind in NDJSON:
            sse = masker.sse_stream()
            if kind in NDJSON:
                lines = NdjsonStream(sse)
                return StreamTransform(
                    lines.push, lines.finish, lambda: lines.counts, lambda: lines.model,
                    NDJSON_FAILURE, lines.take_released,
                )  # fmt: skip
            return StreamTransform(
                sse.push, sse.finish, lambda: sse.counts, lambda: sse.model,
                MASKING_FAILED_EVENT, sse.take_released,
            )  # fmt: skip
        if kind == eventstream.MEDIA_TYPE:
            frames = EventStreamMasking(masker)
            return StreamTransform(
                frames.push, frames.finish, frames.counts,
                failed_tail=MASKING_FAILED_MESSAGE, released=frames.take_released,
            )  # fmt: skip
        text = masker.text_stream()
        return StreamTransform(text.push, text.finish, lambda: text.counts)

    def mask_body(self, kind: str, body: bytes) -> tuple[bytes, dict[str, int]]:
        """A whole response body masked at once. Raises GatewayError 502 if it cannot be."""
        if not body:
            return body, {}
        self.check(kind)
        try:
            if kind in UNDECLARED:
                kind = _sniff(body, kind)
            if is_json(kind):
                items = chunk_arrays.chunks(body)
                if items is not None:  # re-serialised from one parse: no duplicate survives
                    return chunk_arrays.mask(self.response.at_paths, items)
                return self.response.mask(body)
            stream = self.stream_for(kind)
            return stream.push(body) + stream.finish(), stream.counts()
        except (ValueError, RecursionError):
            raise masking_failed("the upstream response") from None


def _sniff(body: bytes, kind: str) -> str:
    """What an undeclared body is: one JSON document, JSON lines, or UTF-8 text."""
    try:
        orjson.loads(body)
        return "application/json"
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise unmaskable(kind) from None
    lines = [line for line in text.split("\n") if line.strip()]
    try:
        for line in lines:
            orjson.loads(line)
    except orjson.JSONDecodeError:
        return "text/plain"
    return "application/x-ndjson"


class _Compiler:
    """Builds the maskers of one config; rules with equal settings get the same instances."""

    def __init__(self, config: Config, hash_key: bytes | None) -> None:
        self.config, self.hash_key = config, hash_key
        self.custom = [(d.name, d.regex, d.validator) for d in config.masking.detectors]
        self.cache: dict[tuple, Masker] = {}

    def masker(self, entities: tuple[str, ...], style: str, paths: tuple[str, ...]) -> Masker:
        key = (entities, style, paths)
        if key not in self.cache:
            custom = self.custom if entities != (PROBE[0],) else [PROBE]
            self.cache[key] = Masker(
                list(entities), style=style, hash_key=self.hash_key, custom=custom,
                paths=list(paths),
            )  # fmt: skip
        return self.cache[key]

    def json(self, rule: RuleConfig, paths: tuple[str, ...]) -> JsonMasking:
        return JsonMasking(
            self.masker(rule.mask, rule.mask_style, paths),
            self.masker((PROBE[0],), "tag", paths),
        )

    def rule(self, index: int, rule: RuleConfig) -> RuleMasking:
        if rule.mask_style == "hash" and self.hash_key is None:
            raise ConfigError(
                self.config.path, f"rules[{index}].mask_style", "hash needs [masking] hash_key"
            )
        response_paths = rule.mask_paths or tuple(_all_paths(RESPONSE_PATHS_BY_FORMAT))
        try:
            return RuleMasking(
                self.json(rule, response_paths),
                self.json(rule, tuple(_all_paths(REQUEST_PATHS_BY_FORMAT)))
                if rule.mask_request
                else None,
            )
        except ValueError as exc:
            raise ConfigError(self.config.path, f"rules[{index}].mask", str(exc)) from None


def compile_masking(config: Config) -> dict[str, RuleMasking]:
    """One RuleMasking per rule that masks, built at policy load (bad settings refuse it)."""
    compiler = _Compiler(config, _hash_key(config))
    return {
        rule.id: compiler.rule(index, rule) for index, rule in enumerate(config.rules) if rule.mask
    }


def _hash_key(config: Config) -> bytes | None:
    path = config.masking.hash_key
    if path is None:
        return None
    from gateway.audit import KeyFileError, read_secret_key

    try:
        return read_secret_key(Path(path))
    except KeyFileError as exc:
        raise ConfigError(config.path, "masking.hash_key", str(exc)) from None
