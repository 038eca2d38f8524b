"""Header rules for a proxy: what never crosses from one leg to the other.

h11 hands us header names already lower-cased, so every comparison here is on lower-case bytes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import h11

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 connection-specific fields, plus the long-standing extras proxies drop.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# The caller's credentials belong to the gateway, never to the model server.
CALLER_SECRETS = frozenset({b"authorization", b"cookie"})
# Recomputed by h11 for the leg it is sent on.
FRAMING = frozenset({b"content-length", b"host"})
# Set by the gateway itself on the way out.
GATEWAY_OWNED = frozenset({b"x-request-id"})
# Read and consumed by the gateway (approval flows, 100-continue), on every rule: the upstream
# has no use for them, and x-approval-reason is the caller's free text.
GATEWAY_CONSUMED = frozenset({b"expect", b"prefer", b"x-approval-id", b"x-approval-reason"})
# Ask some frameworks to run another method or path than the request line's: the policy decided
# on the request line, so the upstream gets only that.
OVERRIDES = frozenset(
    {
        b"x-http-method",
        b"x-http-method-override",
        b"x-method-override",
        b"x-original-url",
        b"x-rewrite-url",
    }
)
# Read once by the gateway: with two copies, the gateway and the upstream (or two parts of the
# gateway) could each act on a different one, so a second copy is refused.
SINGLETONS = frozenset(
    {b"authorization", b"content-type", b"x-approval-id", b"x-approval-reason", b"x-request-id"}
)


# RFC 9110 §5.1 field names (tokens) and §5.5 values as h11 checks them (h11/_abnf.py: a value
# is empty, or runs of bytes other than NUL and whitespace parted by spaces and tabs). Joined
# with NUL, which neither may hold, all the headers of a message are checked in one match each.
_NAMES = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+(?:\x00[-!#$%&'*+.^_`|~0-9a-zA-Z]+)*")
_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"
_VALUES = re.compile(_VALUE + rb"(?:\x00" + _VALUE + rb")*")


def checked(headers: Headers) -> Headers:
    """`headers`, if h11 would send every name and value; events built from them skip h11's own
    check of each header (`_parsed=True`), which costs a regex call per name and per value.

    Raises:
        h11.LocalProtocolError: a name or value h11 would refuse (the message names neither).
    """
    if not headers:
        return headers
    names = b"\x00".join([n for n, _ in headers])
    values = b"\x00".join([v for _, v in headers])
    parts = len(headers) - 1  # NULs the joins put in: one more means a name or value held one
    if (
        _NAMES.fullmatch(names) is None
        or _VALUES.fullmatch(values) is None
        or names.count(0) != parts
        or values.count(0) != parts
    ):
        raise h11.LocalProtocolError("illegal header name or value")
    return headers


def connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Names listed in `Connection:` are hop-by-hop too (RFC 9110 §7.6.1)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names)


# What never crosses, whatever `Connection:` lists besides (computed once, not per request).
NOT_TO_UPSTREAM = (
    HOP_BY_HOP | CALLER_SECRETS | FRAMING | GATEWAY_OWNED | GATEWAY_CONSUMED | OVERRIDES
)
NOT_TO_CLIENT = HOP_BY_HOP | GATEWAY_OWNED
NOT_TO_CLIENT_REFRAMED = NOT_TO_CLIENT | {b"content-length"}


def request_headers_for_upstream(
    headers: Headers, host: bytes, request_id: bytes, body_length: int
) -> Headers:
    """The caller's headers minus hop-by-hop, framing and caller secrets, plus ours.

    The body was read whole, so it always goes upstream with a Content-Length. The connection's
    credential is added after this (gateway.upstream_auth), replacing any copy the caller sent.
    """
    listed = connection_listed(headers)
    drop = NOT_TO_UPSTREAM | listed if listed else NOT_TO_UPSTREAM
    out: Headers = [(b"host", host)]
    out.extend((n, v) for n, v in headers if n not in drop)
    out.append((b"x-request-id", request_id))
    if body_length:
        out.append((b"content-length", str(body_length).encode()))
    return out


def response_headers_for_client(headers: Headers, *, keep_length: bool) -> Headers:
    """The upstream's headers minus hop-by-hop; Content-Length only if the body is unchanged.

    Only the first Content-Type goes on: it is the one the gateway read (to mask by), so the
    client must not read a later one. The server adds the gateway's own `x-request-id`.
    """
    drop = NOT_TO_CLIENT if keep_length else NOT_TO_CLIENT_REFRAMED
    listed = connection_listed(headers)
    if listed:
        drop = drop | listed
    out = [(n, v) for n, v in headers if n not in drop]
    first_type = next((i for i, (n, _) in enumerate(out) if n == b"content-type"), len(out))
    return [h for i, h in enumerate(out) if i <= first_type or h[0] != b"content-type"]


# The canonical 8-4-4-4-12 form: some model servers (llama-cpp-python's) refuse any other id.
UUID_FORM = re.compile(rb"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}", re.IGNORECASE)


def request_id(value: bytes | None) -> str:
    """The client's `x-request-id` value if it is a UUID (kept end to end), else a new UUID."""
    if value is not None and UUID_FORM.fullmatch(value):
        return value.decode("ascii")
    return new_uuid4()


class _RandomIds:
    """Random (version 4) UUIDs from a pool of os.urandom bytes refilled 256 ids at a time:
    `str(uuid.uuid4())` costs a getrandom call and a UUID object per request. Emptied in a
    forked child, so workers never share ids."""

    POOL = 256

    def __init__(self) -> None:
        self.pool = b""
        self.used = 0
        os.register_at_fork(after_in_child=self.empty)

    def empty(self) -> None:
        self.pool, self.used = b"", 0

    def next(self) -> str:
        if self.used >= len(self.pool):
            self.pool, self.used = os.urandom(16 * self.POOL), 0
        raw = bytearray(self.pool[self.used : self.used + 16])
        self.used += 16
        raw[6] = raw[6] & 0x0F | 0x40  # version 4
        raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


new_uuid4 = _RandomIds().next


def duplicated(headers: Headers) -> bytes | None:
    """The name of the first SINGLETONS header that appears more than once, if any."""
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in SINGLETONS:
            if name in seen:
                return name
            seen.add(name)
    return None


def joined(headers: Headers, name: bytes) -> bytes | None:
    """Every line of a list-valued field as one value (RFC 9110 §5.3), None if absent."""
    values = [v for n, v in headers if n == name]
    return b", ".join(values) if values else None


def without(headers: Headers, names: frozenset[bytes] | set[bytes]) -> Headers:
    return [(n, v) for n, v in headers if n not in names]


def listed(headers: h11.Headers) -> Headers:
    """h11's parsed headers as (lower-case name, value) pairs, read straight from the triples h11
    keeps: iterating its `Headers` goes through `Sequence.__iter__` and a `__getitem__` call per
    header, which cost more than the rest of reading a request head's fields."""
    return [(name, value) for _, name, value in headers._full_items]


def get(headers: Headers, name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None
