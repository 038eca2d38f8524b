"""NDJSON masking (gateway.ndjson): the same output however the stream is cut."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from test_masking_shapes import ollama_lines

from gateway._masker import Masker
from gateway.masking import RESPONSE_PATHS_BY_FORMAT
from gateway.ndjson import NdjsonStream

MASKER = Masker(["all"], paths=list(RESPONSE_PATHS_BY_FORMAT["ollama"]))


def _mask_ndjson(chunks: list[bytes]) -> bytes:
    stream = NdjsonStream(MASKER.sse_stream())
    return b"".join(stream.push(c) for c in chunks) + stream.finish()


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(["mail ", "bob@", "example", ".com", " or ", "+1 415", " 555 0132", "x"]),
        min_size=1,
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    crlf=st.booleans(),
)
def test_ndjson_masking_is_chunk_invariant(pieces, cuts, crlf) -> None:
    body = "".join(ollama_lines(pieces)).encode()
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    whole = _mask_ndjson([body])
    bounds = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    assert _mask_ndjson([body[a:b] for a, b in itertools.pairwise(bounds)]) == whole
    text = "".join(orjson.loads(line)["message"]["content"] for line in whole.splitlines())
    # The answer's text is masked as if it had arrived in one piece.
    assert text == MASKER.mask_text("".join(pieces))[0]
