"""Headers the gateway sends are checked in one match per message, exactly as h11 checks them.

`headers.checked` stands in for h11's per-header check on both legs (events are then built
with `_parsed=True`), so it must refuse what h11 refuses and pass what h11 passes: compared
here with h11 itself on names and values made of the bytes that matter (NUL, CR, LF, other
controls, spaces and tabs at either end, separators, obs-text).
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.headers import checked, listed

BYTES = st.sampled_from([bytes([c]) for c in b'aZ0-!~:"(\x00 \t\r\n\x01\x0b\x0c\x7f\xe9\xff'])
PIECE = st.lists(BYTES, max_size=6).map(b"".join)
# Names h11 gives a meaning of its own (framing, Host) are left out: its verdict on them is not
# about the bytes.
NAME = PIECE.filter(lambda n: n.lower() not in (b"host", b"content-length", b"transfer-encoding"))


def h11_accepts(headers: list[tuple[bytes, bytes]]) -> bool:
    try:
        h11.Request(method=b"GET", target=b"/", headers=[(b"host", b"h"), *headers])
    except h11.LocalProtocolError:
        return False
    return True


def gateway_accepts(headers: list[tuple[bytes, bytes]]) -> bool:
    try:
        assert checked(headers) is headers
    except h11.LocalProtocolError as exc:
        assert "\x00" not in str(exc) and "b'" not in str(exc)  # never quotes the bytes
        return False
    return True


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(NAME, PIECE), max_size=4))
@example([(b"x-a", b"ok"), (b"x-b", b"in\x00side")])  # a NUL posing as the separator
@example([(b"x-a\x00x-b", b"v")])
@example([(b"x-a", b"v\r\nx-injected: 1")])
@example([(b"", b"")])
@example([(b"x-a", b" lead")])
@example([])
def test_checked_agrees_with_h11(headers: list[tuple[bytes, bytes]]) -> None:
    assert gateway_accepts(headers) == h11_accepts(headers)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-request-id", b"8c0e1d2a-6a8e-4f0e-9d7c-1b2c3d4e5f60")],
        [(b"authorization", b"Bearer sk-1"), (b"x-empty", b""), (b"x-tab", b"a\tb")],
    ],
)
def test_ordinary_headers_pass(headers: list[tuple[bytes, bytes]]) -> None:
    assert gateway_accepts(headers) and h11_accepts(headers)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"X-A", b"x-b", b"Content-Type", b"ETag"]), PIECE)))
def test_listed_reads_what_iterating_h11_headers_gives(headers: list[tuple[bytes, bytes]]) -> None:
    """`listed` reads h11's private triples: it must give what h11's public iteration gives."""
    try:
        request = h11.Request(method=b"GET", target=b"/", headers=[(b"host", b"h"), *headers])
    except h11.LocalProtocolError:
        return
    assert listed(request.headers) == list(request.headers)
