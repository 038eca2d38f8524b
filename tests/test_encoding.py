"""Decoding compressed answers (gateway.encoding): same bytes however cut, bounded pieces."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.encoding import PIECE, DecodedBody
from gateway.errors import GatewayError


class Chunks:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def read(self) -> bytes | None:
        return self.chunks.pop(0) if self.chunks else None


def decode(chunks: list[bytes], coding: bytes) -> list[bytes]:
    async def run() -> list[bytes]:
        body, out = DecodedBody(Chunks(chunks), coding), []
        while (piece := await body.read()) is not None:
            out.append(piece)
        return out

    return asyncio.run(run())


COMPRESS = {
    b"gzip": gzip.compress,
    b"deflate": zlib.compress,
    b"raw": lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS),
}


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=3000),
    st.sampled_from(sorted(COMPRESS)),
    st.lists(st.integers(0, 4000), max_size=8),
)
def test_decoded_bytes_do_not_depend_on_cuts(data, kind, cuts) -> None:
    packed = COMPRESS[kind](data)
    bounds = sorted({0, len(packed), *(c % (len(packed) + 1) for c in cuts)})
    coding = b"deflate" if kind == b"raw" else kind
    assert b"".join(decode([packed[a:b] for a, b in itertools.pairwise(bounds)], coding)) == data


def test_a_bomb_comes_out_in_bounded_pieces() -> None:
    pieces = decode([gzip.compress(bytes(40 * PIECE))], b"gzip")
    assert sum(map(len, pieces)) == 40 * PIECE and max(map(len, pieces)) <= PIECE


@pytest.mark.parametrize(
    "chunks", [[gzip.compress(b"x" * 100)[:-4]], [gzip.compress(b"x") + b"junk"], [b"not gzip"]]
)
def test_corrupt_or_short_is_refused(chunks) -> None:
    with pytest.raises(GatewayError) as refusal:
        decode(chunks, b"gzip")
    assert refusal.value.status == 502


def test_empty_body_is_empty() -> None:
    assert decode([], b"gzip") == []
