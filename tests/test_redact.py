"""Credential redaction (gateway.redact): complete, chunk-invariant, bounded hold-back."""

from __future__ import annotations

import base64
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.redact import Redactor

SECRETS = st.sampled_from(
    [
        b"sk-upstream-connection-secret",
        b"aaaaaaaaaa",
        b"k/+9ZzQ0-_x",
        b"abcabcabcab",
        b"\xc3\xa9t\xc3\xa9-key-1",
    ]
)


@st.composite
def texts(draw, secret: bytes) -> bytes:
    """Noise with the secret, its prefixes and its base64 (behind 0-5 other bytes) mixed in."""
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["noise", "secret", "prefix", "b64", "b64url"]))
        if kind == "noise":
            parts.append(draw(st.binary(max_size=12)))
        elif kind == "secret":
            parts.append(secret)
        elif kind == "prefix":
            parts.append(secret[: draw(st.integers(1, len(secret) - 1))])
        else:
            around = draw(st.binary(max_size=5)), draw(st.binary(max_size=5))
            encoded = base64.b64encode(around[0] + secret + around[1])
            parts.append(
                encoded if kind == "b64" else encoded.replace(b"+", b"-").replace(b"/", b"_")
            )
    return b"".join(parts)


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(st.data(), SECRETS, st.lists(st.integers(0, 400), max_size=10))
def test_stream_equals_whole_and_holds_back_less_than_the_secret(data, secret, cuts) -> None:
    redactor = Redactor.for_secrets((secret,))
    text = data.draw(texts(secret))
    whole, count = redactor.redact(text)
    stream = redactor.stream()
    out = b""
    for piece in _pieces(text, cuts):
        out += stream.push(piece)
        assert len(stream.pending) <= len(secret) - 1
    out += stream.finish()
    assert (out, stream.count) == (whole, count)
    assert len(whole) == len(text)
    assert secret not in whole


@settings(max_examples=300, deadline=None)
@given(SECRETS, st.binary(max_size=5), st.binary(max_size=5), st.booleans())
def test_no_base64_alignment_survives(secret, before, after, urlsafe) -> None:
    encoded = base64.b64encode(before + secret + after)
    if urlsafe:
        encoded = encoded.replace(b"+", b"-").replace(b"/", b"_")
    redacted, count = Redactor.for_secrets((secret,)).redact(b"x " + encoded + b" y")
    assert count >= 1
    # Every base64 character whose 6 bits all come from the secret is overwritten.
    first, last = 8 * len(before), 8 * (len(before) + len(secret))
    pure = [i for i in range(len(encoded)) if first <= 6 * i and 6 * i + 6 <= last]
    assert pure and all(redacted[2 + i : 3 + i] == b"*" for i in pure)


@given(SECRETS, st.binary(max_size=200))
def test_text_without_the_secret_is_unchanged(secret, noise) -> None:
    redacted, count = Redactor.for_secrets((secret,)).redact(noise)
    assert (redacted == noise) == (count == 0)


def test_headers_are_redacted_and_counted() -> None:
    stream = Redactor.for_secrets((b"sk-upstream-connection-secret",)).stream()
    headers = stream.headers(
        [(b"www-authenticate", b'Bearer error="sk-upstream-connection-secret"')]
    )
    assert headers == [(b"www-authenticate", b'Bearer error="' + b"*" * 29 + b'"')]
    assert stream.count == 1
