"""Content codings, where the gateway must read a response before the caller does.

A masked or redacted body has to be read as the upstream's plain bytes: compressed, the masker
would fail on it (a 502 for every client that accepts gzip) and an echoed credential would hide
in it. So when a response will be transformed the upstream is asked for `identity`; one that
compresses anyway is decoded here (gzip and deflate, streamed, in bounded pieces so a small
bomb cannot fill memory), and any other coding is refused rather than relayed unread.
"""

from __future__ import annotations

import zlib

from gateway.errors import GatewayError
from gateway.headers import Headers
from gateway.upstream import BodyReader

# Each read returns at most this much decoded output (the rest waits in zlib's input buffer).
PIECE = 256 * 1024
# wbits for zlib.decompressobj: gzip or zlib container, detected from the header (RFC 1950/1952).
ANY_CONTAINER = zlib.MAX_WBITS | 32
RAW_DEFLATE = -zlib.MAX_WBITS  # "deflate" sent without the zlib wrapper, as some servers do
DECODABLE = frozenset({b"gzip", b"x-gzip", b"deflate"})


def ask_identity(headers: Headers) -> Headers:
    """The request's headers with `Accept-Encoding: identity` in place of the caller's."""
    return [(n, v) for n, v in headers if n != b"accept-encoding"] + [
        (b"accept-encoding", b"identity")
    ]


def coding(headers: Headers) -> bytes | None:
    """The response's content coding, lower-case; None for none or `identity`."""
    values = [v.strip().lower() for n, v in headers if n == b"content-encoding"]
    value = b",".join(values)
    return None if value in (b"", b"identity") else value


def unsupported(value: bytes) -> GatewayError:
    named = value.decode("latin-1") if value.isascii() and len(value) <= 32 else "an unknown one"
    return GatewayError(
        502,
        "unsupported_encoding",
        f"the upstream compressed its answer with {named!r}, which the gateway cannot decode "
        "to mask or redact it (gzip and deflate it can), so it was withheld",
    )


def compressed_request() -> GatewayError:
    """A compressed request body: the policy could not read its model, an upstream could."""
    return GatewayError(
        415,
        "unsupported_encoding",
        "the request body has a Content-Encoding; send it uncompressed so the policy can read it",
    )


def _corrupt() -> GatewayError:
    return GatewayError(502, "upstream_error", "the upstream's compressed body is corrupt")


def _zlib_header(head: bytes) -> bool:
    """Do two bytes open a zlib stream (RFC 1950 §2.2: deflate method, header check)?"""
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


class DecodedBody:
    """A gzip or deflate body read as plain bytes, piece by piece."""

    def __init__(self, source: BodyReader, value: bytes) -> None:
        if value not in DECODABLE:
            raise unsupported(value)
        self.source = source
        # "deflate" is the zlib format, but some servers send raw deflate: its first two bytes
        # tell which, so they wait until both are here.
        self.head: bytes | None = b"" if value == b"deflate" else None
        self.inflater = zlib.decompressobj(ANY_CONTAINER)
        self.seen = False
        self.done = False

    async def read(self) -> bytes | None:
        while not self.done:
            if self.inflater.unconsumed_tail:
                data = self.inflater.unconsumed_tail
            else:
                data = await self.source.read()
                if data is None:
                    return self._end()
                self.seen = self.seen or bool(data)
                if self.head is not None:
                    data = self._choose(data)
            if data and (out := self._inflate(data)):
                return out
        return None

    def _choose(self, data: bytes) -> bytes:
        """Hold the first bytes of a deflate body until they show zlib or raw deflate."""
        head = self.head + data
        if len(head) < 2:
            self.head = head
            return b""
        self.head = None
        if not _zlib_header(head):
            self.inflater = zlib.decompressobj(RAW_DEFLATE)
        return head

    def _inflate(self, data: bytes) -> bytes:
        try:
            out = self.inflater.decompress(data, PIECE)
        except zlib.error:
            raise _corrupt() from None
        if self.inflater.unused_data:
            raise _corrupt()  # bytes after the end of the compressed stream
        return out

    def _end(self) -> bytes | None:
        self.done = True
        if not self.seen:
            return None  # no body at all (HEAD, 204)
        if self.head:  # one byte of deflate: no stream is that short
            raise _corrupt()
        if not self.inflater.eof:
            raise _corrupt()  # cut short
        return None
