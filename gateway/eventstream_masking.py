"""Masking Bedrock's event streams: decode each message, mask its JSON payload, re-frame it.

Bedrock wraps model output in event stream messages whose payload is JSON; in
InvokeModelWithResponseStream that JSON carries `bytes`, the base64 of the model's own JSON
chunk, which is decoded and masked inside. Text that a model streams in pieces (the fields in
STREAMED, e.g. Converse's `delta.text` or Anthropic's `delta.text`) is masked as one text per
content block, so a value split across messages is still caught: text that might be the start
of a value is held back and travels in the next message of that block. A message that carries
no streamed text (contentBlockStop, messageStop, metadata, ...) first closes every open block:
its held-back rest goes out in a copy of the block's last message. Every other string of every
payload is masked on its own. A payload that is not JSON, or a frame that does not check out,
raises ValueError: the stream is refused, never passed on unmasked.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import eventstream
from gateway._masker import Masker, TextStream

# Paths (in the decoded chunk or the Converse payload) of text a model streams in pieces;
# "*" is every index of an array.
STREAMED: tuple[tuple[str, ...], ...] = (
    ("delta", "text"),  # Converse contentBlockDelta; Anthropic content_block_delta
    ("delta", "reasoningContent", "text"),  # Converse reasoning
    ("delta", "toolUse", "input"),  # Converse tool input (JSON in pieces)
    ("delta", "partial_json"),  # Anthropic tool input
    ("delta", "thinking"),  # Anthropic extended thinking
    ("completion",),  # Anthropic text completions
    ("outputText",),  # Amazon Titan
    ("generation",),  # Meta Llama
    ("outputs", "*", "text"),  # Mistral
    ("text",),  # Cohere Command
    ("generations", "*", "text"),  # Cohere
    ("choices", "*", "delta", "content"),  # OpenAI-compatible models
    ("choices", "*", "text"),
)
# Ends a stream whose rest could not be masked: AWS's generic event stream error (for errors
# outside a service's model), which AWS SDKs raise.
MASKING_FAILED_MESSAGE = eventstream.encode(
    eventstream.string_header(":message-type", "error")
    + eventstream.string_header(":error-code", "MaskingFailed")
    + eventstream.string_header(
        ":error-message", "the rest of this response could not be masked, so it was withheld"
    ),
    b"",
)

Path = tuple[str | int, ...]


@dataclass(slots=True)
class _Payload:
    """A message's JSON, with Bedrock's base64 `bytes` chunk decoded in place."""

    document: Any
    chunk: Any  # the decoded chunk, or the document itself when there is none
    wrapped: bool

    @classmethod
    def parse(cls, payload: bytes) -> _Payload:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise ValueError("event stream payload is not JSON") from None
        if isinstance(document, dict) and isinstance(document.get("bytes"), str):
            try:
                chunk = orjson.loads(base64.b64decode(document["bytes"], validate=True))
            except (binascii.Error, orjson.JSONDecodeError):
                raise ValueError("event stream `bytes` is not base64 of JSON") from None
            return cls(document, chunk, True)
        return cls(document, document, False)

    def encode(self) -> bytes:
        if self.wrapped:
            self.document["bytes"] = base64.b64encode(orjson.dumps(self.chunk)).decode()
        return orjson.dumps(self.document)

    def copy(self) -> _Payload:
        document = orjson.loads(orjson.dumps(self.document))
        chunk = orjson.loads(orjson.dumps(self.chunk)) if self.wrapped else document
        return _Payload(document, chunk, self.wrapped)


def _locate(node: Any, path: tuple[str, ...], at: Path = ()) -> Iterator[Path]:
    """Concrete paths of the strings `path` selects in `node`."""
    if not path:
        if isinstance(node, str):
            yield at
        return
    step, rest = path[0], path[1:]
    if step == "*" and isinstance(node, list):
        for i, item in enumerate(node):
            yield from _locate(item, rest, (*at, i))
    elif isinstance(node, dict) and step in node:
        yield from _locate(node[step], rest, (*at, step))


def _get(node: Any, path: Path) -> Any:
    for step in path:
        node = node[step]
    return node


def _set(node: Any, path: Path, value: str) -> None:
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


@dataclass(slots=True)
class _Block:
    """One streamed text: its masking stream and the last message that carried it."""

    stream: TextStream
    raw_headers: bytes
    template: _Payload
    path: Path
    siblings: list[Path]  # the template's other streamed texts, blanked in a copy


class EventStreamMasking:
    """Push event stream bytes, get masked event stream bytes; output depends only on the
    messages, never on how the bytes were cut."""

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self.decoder = eventstream.Decoder()
        self.blocks: dict[tuple[Any, ...], _Block] = {}
        self.retired: Counter[str] = Counter()
        self.released = b""  # after a failure: the messages masked before the failing one

    def push(self, chunk: bytes) -> bytes:
        """On a malformed message, `take_released` then has the messages masked before it, so
        what is sent does not depend on how the bytes were cut."""
        out = bytearray()
        try:
            for message in self.decoder.push(chunk):
                out += self._message(message)
        except ValueError:
            self.released = bytes(out)
            raise
        return bytes(out)

    def take_released(self) -> bytes:
        released, self.released = self.released, b""
        return released

    def finish(self) -> bytes:
        self.decoder.finish()
        return self._close_blocks()

    def counts(self) -> dict[str, int]:
        total = Counter(self.retired)
        for block in self.blocks.values():
            total.update(block.stream.counts)
        return dict(total)

    def _message(self, message: eventstream.Message) -> bytes:
        if not message.payload:
            return eventstream.encode(message.raw_headers, message.payload)
        payload = _Payload.parse(message.payload)
        streamed = [p for path in STREAMED for p in _locate(payload.chunk, path)]
        out = b"" if streamed else self._close_blocks()
        self._mask_strings(payload.chunk, set(streamed))
        if payload.wrapped:
            self._mask_strings(payload.document, {("bytes",)})
        index = _block_index(payload.chunk)
        for path in streamed:
            key = (message.strings.get(":event-type"), index, path)
            block = self.blocks.get(key)
            if block is None:
                block = _Block(self.masker.text_stream(), message.raw_headers, payload, path, [])
                self.blocks[key] = block
            released = block.stream.push(_get(payload.chunk, path).encode())
            _set(payload.chunk, path, released.decode())
            block.raw_headers, block.template = message.raw_headers, payload
            block.siblings = [p for p in streamed if p != path]
        return out + eventstream.encode(message.raw_headers, payload.encode())

    def _mask_strings(self, node: Any, skip: set[Path], at: Path = ()) -> None:
        """Mask every string not in `skip`, each on its own."""
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            path = (*at, key)
            if path in skip:
                continue
            if isinstance(value, str):
                masked, findings = self.masker.mask_text(value)
                if findings:
                    node[key] = masked
                    self.retired.update(entity for entity, _, _ in findings)
            elif isinstance(value, dict | list):
                self._mask_strings(value, skip, path)

    def _close_blocks(self) -> bytes:
        """Release every open block's held-back text, each in a copy of its last message."""
        out = []
        for block in self.blocks.values():
            rest = block.stream.finish()
            self.retired.update(block.stream.counts)
            if rest:
                payload = block.template.copy()
                for sibling in block.siblings:
                    _set(payload.chunk, sibling, "")
                _set(payload.chunk, block.path, rest.decode())
                out.append(eventstream.encode(block.raw_headers, payload.encode()))
        self.blocks.clear()
        return b"".join(out)


def _block_index(chunk: Any) -> Any:
    """Which content block a message belongs to (Converse and Anthropic number them)."""
    if isinstance(chunk, dict):
        for name in ("contentBlockIndex", "index"):
            if isinstance(chunk.get(name), int):
                return chunk[name]
    return None
