"""Canonical JSON for audit entries: the exact bytes that are hashed into the tree.

UTF-8 (non-ASCII kept, not escaped), object keys sorted by code point, no insignificant
whitespace. orjson with OPT_SORT_KEYS produces exactly that; we only add the checks it
does not make (it silently writes NaN/Infinity as null and accepts non-dict roots).
"""

from __future__ import annotations

import math
from typing import Any

import orjson


class CanonicalError(ValueError):
    """The value cannot be represented as a canonical audit entry."""


def _check(value: Any) -> None:
    """Reject floats that JSON cannot carry; orjson would turn them into null."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalError(f"non-finite number {value!r} has no JSON form")
    elif isinstance(value, dict):
        for item in value.values():
            _check(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check(item)


def canonical(entry: dict[str, Any]) -> bytes:
    """Serialize an entry to canonical JSON bytes.

    Raises:
        CanonicalError: not a dict, a non-string key, a non-finite float or an unsupported type.
    """
    if not isinstance(entry, dict):
        raise CanonicalError("an audit entry must be a JSON object")
    try:
        data = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise CanonicalError(str(exc)) from None
    if b"null" in data:  # orjson writes NaN and Infinity as null: only then walk the entry
        _check(entry)
    return data


def is_canonical(data: bytes, parsed: Any) -> bool:
    """True when `data` is the canonical encoding of the value it parses to."""
    return isinstance(parsed, dict) and orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS) == data
