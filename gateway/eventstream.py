"""AWS event stream framing (`application/vnd.amazon.eventstream`), as Bedrock streams answers.

A message is: total length (4 bytes, big-endian), headers length (4), CRC32 of those 8 bytes
(4), the headers, the payload, and the CRC32 of everything before it (4). A header is its name
length (1), name, value type (1) and value. Both CRCs are checked on the way in and computed on
the way out; anything malformed raises ValueError, so a stream that cannot be read is refused.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

MEDIA_TYPE = "application/vnd.amazon.eventstream"
PRELUDE = struct.Struct(">III")  # total length, headers length, prelude CRC
CRC = struct.Struct(">I")
OVERHEAD = PRELUDE.size + CRC.size
MAX_MESSAGE = 16 * 1024 * 1024  # AWS's own limit on one message
STRING = 7
# Value type -> fixed size in bytes; None: a 2-byte length then that many bytes.
VALUE_SIZES: dict[int, int | None] = {
    0: 0,  # true
    1: 0,  # false
    2: 1,  # byte
    3: 2,  # short
    4: 4,  # integer
    5: 8,  # long
    6: None,  # byte array
    STRING: None,  # string
    8: 8,  # timestamp
    9: 16,  # uuid
}


@dataclass(frozen=True, slots=True)
class Message:
    raw_headers: bytes  # re-sent as they came
    strings: dict[str, str]  # the string-valued headers, e.g. ":event-type"
    payload: bytes


def _string_headers(raw: bytes) -> dict[str, str]:
    """Walk every header (to check the block is well formed); keep the string ones."""
    out: dict[str, str] = {}
    i = 0
    while i < len(raw):
        size = raw[i]
        name = raw[i + 1 : i + 1 + size]
        i += 1 + size
        if size == 0 or len(name) < size or i >= len(raw):
            raise ValueError("event stream header truncated")
        kind = raw[i]
        i += 1
        if kind not in VALUE_SIZES:
            raise ValueError(f"event stream header of unknown type {kind}")
        fixed = VALUE_SIZES[kind]
        if fixed is None:
            if i + 2 > len(raw):
                raise ValueError("event stream header truncated")
            (fixed,) = struct.unpack_from(">H", raw, i)
            i += 2
        value = raw[i : i + fixed]
        if len(value) < fixed:
            raise ValueError("event stream header truncated")
        i += fixed
        if kind == STRING:
            out[name.decode("utf-8")] = value.decode("utf-8")
    return out


def string_header(name: str, value: str) -> bytes:
    encoded_name, encoded = name.encode(), value.encode()
    return (
        bytes([len(encoded_name)])
        + encoded_name
        + bytes([STRING])
        + struct.pack(">H", len(encoded))
        + encoded
    )


def encode(raw_headers: bytes, payload: bytes) -> bytes:
    """One message with correct lengths and CRCs."""
    total = OVERHEAD + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += CRC.pack(zlib.crc32(prelude))
    body = prelude + raw_headers + payload
    return body + CRC.pack(zlib.crc32(body))


class Decoder:
    """Bytes in, whole messages out, however the bytes were cut."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def push(self, chunk: bytes) -> Iterator[Message]:
        """The whole messages now buffered, one at a time: those before a malformed one are
        yielded before it raises."""
        self.buffer += chunk
        while len(self.buffer) >= PRELUDE.size:
            total, headers_length, prelude_crc = PRELUDE.unpack_from(self.buffer)
            if zlib.crc32(self.buffer[:8]) != prelude_crc:
                raise ValueError("event stream prelude CRC mismatch")
            if not OVERHEAD <= total <= MAX_MESSAGE:
                raise ValueError(f"event stream message length {total} out of range")
            if headers_length > total - OVERHEAD:
                raise ValueError("event stream headers longer than the message")
            if len(self.buffer) < total:
                break
            frame = bytes(self.buffer[:total])
            del self.buffer[:total]
            (message_crc,) = CRC.unpack_from(frame, total - CRC.size)
            if zlib.crc32(frame[: total - CRC.size]) != message_crc:
                raise ValueError("event stream message CRC mismatch")
            raw_headers = frame[PRELUDE.size : PRELUDE.size + headers_length]
            payload = frame[PRELUDE.size + headers_length : total - CRC.size]
            yield Message(raw_headers, _string_headers(raw_headers), payload)

    def finish(self) -> None:
        if self.buffer:
            raise ValueError("event stream ended inside a message")
