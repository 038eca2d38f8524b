"""PII masking per policy rule, on top of the Rust masker (`gateway._masker`).

Maskers are compiled once per rule when a policy loads. For a response the body's media type
picks the method: JSON is masked whole at the rule's JSONPath expressions (a Vertex AI array
of stream chunks as the stream it stands for), `text/event-stream` event by event (values split
across events are still caught), AWS event streams message by message (eventstream_masking),
other `text/*` as one stream. Bodies of other types are not text the masker can read; they pass
unchanged and the audit entry says so. Anything the masker cannot parse fails closed: the caller
gets a 502, never the body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway import chunk_arrays, eventstream
from gateway._masker import DEFAULT_REQUEST_PATHS, DEFAULT_RESPONSE_PATHS, Masker
from gateway.config import Config, ConfigError, RuleConfig
from gateway.errors import GatewayError
from gateway.eventstream_masking import MASKING_FAILED_MESSAGE, EventStreamMasking
from gateway.media import is_json

# Ends an event stream whose rest could not be masked, in the OpenAI error shape SDKs raise on.
MASKING_FAILED_EVENT = (
    b'data: {"error":{"message":"the rest of this response could not be masked, so it was '
    b'withheld","type":"gateway_error","code":"masking_failed"}}\n\n'
)


# Where cloud model APIs put model text, masked (with the masker's OpenAI-style defaults) when a
# rule names no mask_paths. Streams of these shapes (Vertex AI SSE) use the same paths.
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


def masking_failed(what: str) -> GatewayError:
    return GatewayError(502, "masking_failed", f"{what} could not be masked, so it was withheld")


@dataclass(slots=True)
class StreamTransform:
    """A masking stream for one response: push chunks, then finish."""

    push: Callable[[bytes], bytes]
    finish: Callable[[], bytes]
    counts: Callable[[], dict[str, int]]
    model: Callable[[], str | None] = lambda: None
    # Ends the response in-band when masking fails mid-stream (an error event the client's SDK
    # raises); None: the format has no such signal, so the connection is cut.
    failed_tail: bytes | None = None


@dataclass(slots=True)
class RuleMasking:
    rule_id: str
    response: Masker
    request: Masker | None = None
    entities: tuple[str, ...] = field(default_factory=tuple)

    def mask_request(self, body: bytes) -> tuple[bytes, dict[str, int]]:
        """The request as the upstream will see it (`mask_request = true`)."""
        if self.request is None or not body:
            return body, {}
        try:
            return self.request.mask_json(body)
        except ValueError:
            raise GatewayError(
                400, "masking_failed", "request body is not JSON, so it could not be masked"
            ) from None

    def stream_for(self, kind: str) -> StreamTransform | None:
        """A stream masker for a response of media type `kind`; None when it is not text."""
        if kind == "text/event-stream":
            sse = self.response.sse_stream()
            return StreamTransform(
                sse.push, sse.finish, lambda: sse.counts, lambda: sse.model, MASKING_FAILED_EVENT
            )
        if kind == eventstream.MEDIA_TYPE:
            frames = EventStreamMasking(self.response)
            return StreamTransform(
                frames.push, frames.finish, frames.counts, failed_tail=MASKING_FAILED_MESSAGE
            )
        if kind.startswith("text/"):
            text = self.response.text_stream()
            return StreamTransform(text.push, text.finish, lambda: text.counts)
        return None

    def mask_body(self, kind: str, body: bytes) -> tuple[bytes, dict[str, int]]:
        """A whole response body masked at once. Raises GatewayError 502 if it cannot be."""
        try:
            if is_json(kind):
                items = chunk_arrays.chunks(body)
                if items is not None:
                    return chunk_arrays.mask(self.response, items)
                return self.response.mask_json(body)
            stream = self.stream_for(kind)
            if stream is None:
                return body, {}
            return stream.push(body) + stream.finish(), stream.counts()
        except ValueError:
            raise masking_failed("the upstream response") from None


def compile_masking(config: Config) -> dict[str, RuleMasking]:
    """One RuleMasking per rule that masks, built at policy load (bad settings refuse it)."""
    hash_key = _hash_key(config)
    out = {}
    for index, rule in enumerate(config.rules):
        if rule.mask:
            out[rule.id] = _compile_rule(config, index, rule, hash_key)
    return out


def _compile_rule(config: Config, index: int, rule: RuleConfig, key: bytes | None) -> RuleMasking:
    if rule.mask_style == "hash" and key is None:
        raise ConfigError(
            config.path, f"rules[{index}].mask_style", "hash needs [masking] hash_key"
        )
    custom = [(d.name, d.regex, d.validator) for d in config.masking.detectors]
    common = {"style": rule.mask_style, "hash_key": key, "custom": custom}
    try:
        response_paths = rule.mask_paths or (*DEFAULT_RESPONSE_PATHS, *CLOUD_RESPONSE_PATHS)
        response = Masker(list(rule.mask), paths=list(response_paths), **common)
        request = (
            Masker(list(rule.mask), paths=[*DEFAULT_REQUEST_PATHS, *CLOUD_REQUEST_PATHS], **common)
            if rule.mask_request
            else None
        )
    except ValueError as exc:
        raise ConfigError(config.path, f"rules[{index}].mask", str(exc)) from None
    return RuleMasking(rule.id, response, request, rule.mask)


def _hash_key(config: Config) -> bytes | None:
    path = config.masking.hash_key
    if path is None:
        return None
    from gateway.audit import KeyFileError, read_secret_key

    try:
        return read_secret_key(Path(path))
    except KeyFileError as exc:
        raise ConfigError(config.path, "masking.hash_key", str(exc)) from None
