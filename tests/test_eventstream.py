"""AWS event stream framing and its masking, against frames built by the cloud peer's own
encoder and read back by botocore's parser (neither shares code with the gateway's)."""

from __future__ import annotations

import base64
import itertools
import struct

import cloud_peer
import orjson
import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import eventstream
from gateway._masker import Masker
from gateway.demo import pii
from gateway.eventstream_masking import EventStreamMasking

MASKER = Masker(["all"])
MASKED_TEXT, FINDINGS = MASKER.mask_text(pii.TEXT)
STREAMS = {
    "invoke": cloud_peer.invoke_stream(pii.TEXT),
    "converse": cloud_peer.converse_stream(pii.TEXT),
}


def botocore_messages(data: bytes) -> list:
    """Decoded by botocore, which checks both CRCs of every message."""
    parser = EventStreamBuffer()
    parser.add_data(data)
    return list(parser)


def streamed_text(data: bytes) -> str:
    """The model text a Bedrock client would assemble from the stream."""
    text = []
    for message in botocore_messages(data):
        payload = orjson.loads(message.payload)
        chunk = orjson.loads(base64.b64decode(payload["bytes"])) if "bytes" in payload else payload
        delta = chunk.get("delta", {})
        text.append(delta.get("text", "") if isinstance(delta, dict) else "")
    return "".join(text)


def mask_all(data: bytes, cuts: list[int]) -> bytes:
    masking = EventStreamMasking(MASKER)
    bounds = [0, *sorted(set(cuts)), len(data)]
    out = b"".join(masking.push(data[a:b]) for a, b in itertools.pairwise(bounds))
    return out + masking.finish()


def test_gateway_frames_are_read_by_botocore_and_peer_frames_by_the_gateway() -> None:
    headers = eventstream.string_header(":event-type", "chunk")
    frame = eventstream.encode(headers, b'{"a":1}')
    (message,) = botocore_messages(frame)
    assert message.headers == {":event-type": "chunk"} and message.payload == b'{"a":1}'
    decoded = list(eventstream.Decoder().push(b"".join(STREAMS["converse"])))
    assert [m.strings[":event-type"] for m in decoded][:2] == ["messageStart", "contentBlockDelta"]
    assert b"".join(eventstream.encode(m.raw_headers, m.payload) for m in decoded) == b"".join(
        STREAMS["converse"]
    )


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_masked_stream_carries_the_masked_text_in_valid_frames(kind: str) -> None:
    masking = EventStreamMasking(MASKER)
    out = masking.push(b"".join(STREAMS[kind])) + masking.finish()
    assert streamed_text(out) == MASKED_TEXT
    assert masking.counts() == {e: sum(1 for f in FINDINGS if f[0] == e) for e, _, _ in FINDINGS}
    decoded = b"".join(
        base64.b64decode(orjson.loads(m.payload).get("bytes", "")) + m.payload
        for m in botocore_messages(out)
    )
    for value in pii.VALUES.values():
        assert value.encode() not in decoded


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(STREAMS)),
    st.lists(st.integers(min_value=1, max_value=4000), max_size=40),
)
def test_masking_is_the_same_however_the_bytes_are_cut(kind: str, cuts: list[int]) -> None:
    data = b"".join(STREAMS[kind])
    whole = mask_all(data, [])
    assert mask_all(data, [c for c in cuts if c < len(data)]) == whole


def test_every_byte_boundary_of_a_frame() -> None:
    """A prelude, header or CRC cut anywhere decodes the same."""
    data = b"".join(STREAMS["converse"][:3])
    whole = mask_all(data, [])
    for cut in range(1, 120):
        assert mask_all(data, [cut]) == whole


def corrupt(frame: bytes, index: int) -> bytes:
    damaged = bytearray(frame)
    damaged[index] ^= 0x01
    return bytes(damaged)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (corrupt(STREAMS["converse"][1], -1), "message CRC"),
        (corrupt(STREAMS["converse"][1], 3), "prelude CRC"),
        (cloud_peer.frame({":event-type": "chunk"}, b"not json"), "not JSON"),
        (cloud_peer.frame({":event-type": "chunk"}, b'{"bytes":"%%%"}'), "base64"),
        (struct.pack(">II", 8, 0) + struct.pack(">I", 0), "prelude CRC"),
    ],
)
def test_what_cannot_be_read_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        EventStreamMasking(MASKER).push(data)


def test_a_stream_cut_inside_a_message_is_refused_at_the_end() -> None:
    masking = EventStreamMasking(MASKER)
    masking.push(STREAMS["converse"][0][:-3])
    with pytest.raises(ValueError, match="ended inside a message"):
        masking.finish()


def test_held_back_text_is_released_before_the_block_ends() -> None:
    """The rest of a block goes out before contentBlockStop, not after the stream's end."""
    masking = EventStreamMasking(MASKER)
    out = masking.push(b"".join(STREAMS["converse"]))
    kinds = [m.headers[":event-type"] for m in botocore_messages(out)]
    last_delta = max(i for i, k in enumerate(kinds) if k == "contentBlockDelta")
    assert kinds[last_delta + 1] == "contentBlockStop"
    assert masking.finish() == b""
    assert streamed_text(out) == MASKED_TEXT
