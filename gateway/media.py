"""Media types of bodies, as the request path and the masker classify them."""

from __future__ import annotations


def media_type(content_type: bytes | None) -> str:
    """`Application/JSON; charset=utf-8` -> `application/json`; "" when there is none."""
    if not content_type:
        return ""
    return content_type.split(b";", 1)[0].strip().lower().decode("latin-1")


def is_json(kind: str) -> bool:
    """`application/json` or any `+json` structured suffix (RFC 6839)."""
    return kind == "application/json" or kind.endswith("+json")
