"""One strict reading of a JSON body, so the gateway and the upstream read the same document.

Lenient parsers (Python's `json`, most model servers) accept a UTF-8 BOM, UTF-16 and UTF-32,
`NaN` and `Infinity`, and pick one of two duplicate keys by their own rule. If the gateway read
such a body differently from the upstream, the policy would decide on one model while the
upstream runs another. So a request body that looks like JSON must parse with orjson (strict
RFC 8259) and hold no duplicate object key at any depth, or it is refused before any rule is
applied; the bytes that pass are forwarded unchanged.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

import orjson

from gateway._masker import repeats_a_name
from gateway.errors import GatewayError
from gateway.media import is_json

ASCII_SPACE = b" \t\n\r\x0b\x0c"
TEXT_SPACE_AND_BOM = " \t\n\r\x0b\x0c\ufeff"
BOMS = (
    codecs.BOM_UTF8,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF16_BE,
    codecs.BOM_UTF16_LE,
)
WIDE_ENCODINGS = frozenset({"utf-16", "utf-16-be", "utf-16-le", "utf-32", "utf-32-be", "utf-32-le"})


def _opens_structure(body: bytes) -> bool:
    """After ASCII whitespace and UTF-8 BOMs, does the body open an object or an array?"""
    rest = body.lstrip(ASCII_SPACE)
    while rest.startswith(codecs.BOM_UTF8):
        rest = rest[len(codecs.BOM_UTF8) :].lstrip(ASCII_SPACE)
    return rest[:1] in (b"{", b"[")


def looks_like_json(body: bytes, kind: str) -> bool:
    """A JSON media type, an object or array after whitespace or a BOM, or UTF-16/32 JSON.

    UTF-16/32 is detected as `json.loads` detects it (RFC 4627 §3: a BOM, or NUL bytes among
    the first four), then decoded: a binary upload that merely starts with a NUL byte (an MP4,
    raw audio) does not decode to `{` or `[` and is left alone.
    """
    if is_json(kind) or _opens_structure(body):
        return True
    encoding = json.detect_encoding(body)
    if encoding not in WIDE_ENCODINGS:
        return False
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        return False
    return text.lstrip(TEXT_SPACE_AND_BOM)[:1] in ("{", "[")


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise _DuplicateKey
    return document


# One decoder for every call: `json.loads` with a hook builds a new one each time.
_PAIRS = json.JSONDecoder(object_pairs_hook=_refuse_duplicates)


def has_duplicate_key(body: bytes) -> bool:
    """Does any object in this body (one orjson accepted) name a key twice?

    orjson silently keeps the last of two equal keys. The masker's Rust check answers for a
    body `serde_json` reads (nested fewer than 128 levels); anything it will not read is left to
    `json` with a pairs hook, which sees every pair (its C scanner, one Python call per object).

    Raises:
        ValueError, RecursionError: the body nests deeper or has a longer integer than Python
            reads; callers refuse it too.
    """
    try:
        return repeats_a_name(body)
    except ValueError:
        return pairs_repeat_a_key(body)


def pairs_repeat_a_key(body: bytes) -> bool:
    """`has_duplicate_key` as Python's `json` reads the body (its answer for any depth)."""
    try:
        _PAIRS.decode(body.decode("utf-8"))
    except _DuplicateKey:
        return True
    return False


def _not_strict(why: str) -> GatewayError:
    return GatewayError(400, "invalid_json", f"request body is not strict JSON: {why}")


def parse_request(body: bytes, kind: str) -> Any:
    """The document of a request body that looks like JSON; None for one that does not.

    Args:
        body: the request body as received (and as it will be forwarded).
        kind: its media type (`gateway.media.media_type`), "" when it has none.

    Raises:
        GatewayError: 400 `invalid_json` (not UTF-8, a BOM, NaN or Infinity, a lone surrogate,
            trailing data, too deep) or 400 `duplicate_json_key`.
    """
    if not body or not looks_like_json(body, kind):
        return None
    if body.startswith(BOMS):
        raise _not_strict("it starts with a byte order mark; send UTF-8 without one")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names a category and a position, never the content.
        raise _not_strict(str(exc)) from None
    try:
        duplicate = has_duplicate_key(body)
    except (ValueError, RecursionError):
        raise _not_strict("nested too deeply or a number too long") from None
    if duplicate:
        raise GatewayError(
            400,
            "duplicate_json_key",
            "request body has an object with a duplicate key; parsers disagree on which wins",
        )
    return document


def request_model(document: Any) -> str | None:
    """The top-level `model` of a parsed request; 400 `invalid_model` if it is not a string."""
    if not isinstance(document, dict) or "model" not in document:
        return None
    model = document["model"]
    if not isinstance(model, str):
        raise GatewayError(400, "invalid_model", "the request's 'model' must be a string")
    return model
