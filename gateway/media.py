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


# Streams of JSON documents one per line (Ollama; JSON Lines).
NDJSON = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
# Text the text masker can read although its type is not text/*.
TEXT_LIKE = frozenset(
    {
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/x-www-form-urlencoded",
        "application/graphql",
        "application/sql",
    }
)
# Types that say nothing about the bytes: the masker looks at the bytes themselves.
UNDECLARED = frozenset({"", "application/octet-stream"})


def is_text(kind: str) -> bool:
    return kind.startswith("text/") or kind in TEXT_LIKE or kind.endswith("+xml")
