"""The connection's own credential, redacted from everything the upstream sends back.

An upstream that rejects a key often quotes it (`invalid key Bearer sk-...`), in the body or in
a header; a caller of the gateway must never see the credential the gateway holds for them. We
know the exact secret, so we look for it and for the three base64 encodings it can take inside a
longer base64 text (one per alignment of its first byte in a 3-byte group, as in a Basic
`user:secret` header), and overwrite every byte an occurrence covers with `*`. The replacement
has the same length, so framing (Content-Length, chunk sizes) never changes.

A connection may hold more than one secret at a time (an AWS session token, a bearer token
being refreshed); each is looked for. A base64 form is longer than the secret, so it is
recognised by its first len(secret) characters (a trigger) and then followed byte by byte as it
arrives (its continuation): a stream holds back at most len(secret) - 1 bytes (the longest
secret's), the longest proper prefix of a trigger that ends a chunk. The output depends only on
the bytes, never on where the chunks were cut.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.headers import Headers

MASK = b"*"
# A base64 form shorter than this would match innocent text too often to be worth masking.
MIN_FORM = 8


def _base64_forms(secret: bytes) -> list[bytes]:
    """The characters of base64(x * a + secret + y) that depend on the secret alone, a = 0..2."""
    forms = []
    for align in range(3):
        encoded = base64.b64encode(b"\0" * align + secret).rstrip(b"=")
        head = (0, 2, 3)[align]  # characters that mix in the bytes before the secret
        tail = 1 if (align + len(secret)) % 3 else 0  # a last partial group mixes in what follows
        forms.append(encoded[head : len(encoded) - tail])
    urlsafe = [f.replace(b"+", b"-").replace(b"/", b"_") for f in forms]
    return list(dict.fromkeys(forms + urlsafe))


def _common_prefix(data: bytes, pattern: bytes) -> int:
    n = min(len(data), len(pattern))
    if data[:n] == pattern[:n]:
        return n
    k = 0
    while data[k] == pattern[k]:
        k += 1
    return k


@dataclass(frozen=True, slots=True)
class Redactor:
    """What to look for, built once per connection from its secret."""

    triggers: tuple[tuple[bytes, bytes], ...]  # (first bytes found by search, continuation)
    hold: int  # the most a stream holds back: len(longest trigger) - 1
    starts: bytes  # first bytes of the triggers, for the hold-back probe

    @classmethod
    def for_secrets(cls, secrets: tuple[bytes, ...]) -> Redactor:
        triggers = []
        for secret in secrets:
            triggers.append((secret, b""))
            forms = [f for f in _base64_forms(secret) if len(f) >= MIN_FORM]
            triggers += [(f[: len(secret)], f[len(secret) :]) for f in forms]
        unique = tuple(dict.fromkeys(triggers))
        starts = bytes(sorted({t[0] for t, _ in unique}))
        return cls(unique, max(len(t) for t, _ in unique) - 1, starts)

    def stream(self) -> RedactingStream:
        return RedactingStream(self)

    def redact(self, data: bytes) -> tuple[bytes, int]:
        """Whole bytes redacted, and how many occurrences were found."""
        stream = self.stream()
        out = stream.push(data) + stream.finish()
        return out, stream.count


@dataclass(slots=True)
class RedactingStream:
    """Push chunks, get redacted bytes; `finish` releases the held tail."""

    redactor: Redactor
    count: int = 0
    pending: bytes = b""  # held back: it could be the start of a trigger
    covered: list[tuple[int, int]] = field(default_factory=list)  # spans of `pending` to mask
    open: list[bytes] = field(default_factory=list)  # continuations still matching at the end

    def push(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        old = len(self.pending)
        data = self.pending + chunk
        spans = self.covered
        still_open = []
        for rest in self.open:
            k = _common_prefix(data[old:], rest)
            spans.append((old, old + k))
            if old + k == len(data) and k < len(rest):
                still_open.append(rest[k:])
        for trigger, continuation in self.redactor.triggers:
            # Occurrences inside `pending` alone were found by the previous push.
            at = data.find(trigger, max(0, old - len(trigger) + 1))
            while at >= 0:
                self.count += 1
                end = at + len(trigger)
                k = _common_prefix(data[end:], continuation) if continuation else 0
                spans.append((at, end + k))
                if end + k == len(data) and k < len(continuation):
                    still_open.append(continuation[k:])
                at = data.find(trigger, at + 1)
        self.open = still_open
        cut = self._cut(data)
        out = _mask(data[:cut], spans)
        self.pending = data[cut:]
        self.covered = [(max(a, cut) - cut, b - cut) for a, b in spans if b > cut]
        return out

    def headers(self, headers: Headers) -> Headers:
        """Header values redacted, counted with the body (names are tokens, not echoes)."""
        out = []
        for name, value in headers:
            redacted, found = self.redactor.redact(value)
            out.append((name, redacted))
            self.count += found
        return out

    def finish(self) -> bytes:
        out = _mask(self.pending, self.covered)
        self.pending, self.covered, self.open = b"", [], []
        return out

    def _cut(self, data: bytes) -> int:
        """Where to stop releasing: the earliest start of a trigger's proper prefix at the end."""
        redactor = self.redactor
        first = max(0, len(data) - redactor.hold)
        cut = len(data)
        for byte in redactor.starts:
            at = data.find(byte, first, cut)
            while at >= 0:
                tail = data[at:]
                if any(t.startswith(tail) for t, _ in redactor.triggers if len(t) > len(tail)):
                    cut = at
                    break
                at = data.find(byte, at + 1, cut)
        return cut


def _mask(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    if not spans:
        return data
    out = bytearray(data)
    for start, end in spans:
        end = min(end, len(out))
        if start < end:
            out[start:end] = MASK * (end - start)
    return bytes(out)


class RedactorCache:
    """The redactor for a connection's secrets of the moment (tokens are refreshed): rebuilt
    only when they change, so an exchange pays one tuple comparison."""

    def __init__(self) -> None:
        self.secrets: tuple[bytes, ...] = ()
        self.redactor: Redactor | None = None

    def get(self, secrets: tuple[bytes, ...]) -> Redactor | None:
        """None when there is no secret: nothing to look for, nothing to pay."""
        if secrets != self.secrets:
            self.secrets = secrets
            self.redactor = Redactor.for_secrets(secrets) if secrets else None
        return self.redactor


class RedactedBody:
    """A body reader whose chunks come out redacted; the held tail comes out at the end."""

    def __init__(self, read: Callable[[], Awaitable[bytes | None]], stream: RedactingStream):
        self._read, self.stream, self.done = read, stream, False

    async def read(self) -> bytes | None:
        while not self.done:
            chunk = await self._read()
            if chunk is None:
                self.done = True
                return self.stream.finish() or None
            if out := self.stream.push(chunk):
                return out
        return None
