"""Typed stub for the Rust extension `gateway._masker` (crate `masker`, feature `python`).

Hand-kept: update together with masker-rs/src/python.rs.
"""

__version__: str
DETECTORS: list[str]
"""Ids of every built-in detector, in priority order."""
DEFAULT_RESPONSE_PATHS: list[str]
"""JSONPath expressions covering model text in OpenAI-style responses (incl. tool calls)."""
DEFAULT_REQUEST_PATHS: list[str]
"""JSONPath expressions covering user text in OpenAI-style requests."""
HOLD_BACK: int
"""Upper bound, in bytes, on the text a stream holds back."""
DEFAULT_PHONE_REGIONS: list[str]
"""Regions tried for phone numbers without a country code when ``phone_regions`` is empty."""
CONTEXT_BEFORE: int
"""Bytes before a candidate searched for context words (bare phone digit runs)."""

def repeats_a_name(body: bytes) -> bool:
    """Does this JSON text repeat a member name in some object (names compared decoded)?

    Raises ValueError if it is not UTF-8 JSON or nests 128 levels or deeper.
    """

class Masker:
    """Detectors, style and JSONPath expressions compiled once (build one per policy rule).

    Args:
        entities: detector ids (built-in or custom names), or ``["all"]``; ``"ssn"`` is an
            alias of ``"us_ssn"``.
        style: ``"tag"`` (``[EMAIL]``), ``"partial"`` (cards, IBANs, phones keep their last 4
            characters), ``"hash"`` (``[EMAIL:3f9a1c2b]``, needs ``hash_key``), ``"redact"``.
        hash_key: HMAC-SHA256 key for style ``"hash"``.
        custom: ``(name, regex, validator)`` with validator ``None``, ``"luhn"`` or ``"mod97"``.
        paths: RFC 9535 JSONPath expressions for :meth:`mask_json` and :meth:`sse_stream`.
        phone_regions: ISO 3166 region ids tried for phone numbers written without a country
            code (empty: ``DEFAULT_PHONE_REGIONS``); international numbers are always checked
            against their own country's libphonenumber metadata.

    Raises:
        ValueError: a bad argument; the message names it and never includes secrets.
    """

    def __init__(
        self,
        entities: list[str],
        *,
        style: str = "tag",
        hash_key: bytes | None = None,
        custom: list[tuple[str, str, str | None]] = ...,
        paths: list[str] = ...,
        phone_regions: list[str] = ...,
    ) -> None: ...
    @property
    def entities(self) -> list[str]: ...
    @property
    def paths(self) -> list[str]: ...
    def mask_text(self, text: str) -> tuple[str, list[tuple[str, int, int]]]:
        """Masked text and findings ``(entity, start, end)``: UTF-8 byte offsets in the
        original text. Never the values."""
    def mask_json(self, body: bytes) -> tuple[bytes, dict[str, int]]:
        """Mask the string values selected by ``paths``; returns the body and counts by entity.

        A selected value that itself holds JSON (first non-whitespace char ``{`` or ``[``, as
        tool-call ``arguments`` do) is masked string by string like :meth:`mask_json_strings`,
        so it stays valid JSON.

        Raises:
            ValueError: malformed JSON or invalid UTF-8 (the message echoes no content).
        """
    def mask_json_with_selection(self, body: bytes) -> tuple[bytes, dict[str, int], bool]:
        """:meth:`mask_json`, and whether the paths selected a non-empty string that does not
        hold JSON (text the masker read, found in it or not)."""
    def mask_json_strings(self, body: bytes) -> tuple[bytes, dict[str, int]]:
        """Mask every string (member names and values) of a JSON text, whatever ``paths``
        say: each is decoded (escapes resolved), masked as text and re-encoded; bytes outside
        strings are kept. Valid JSON in, valid JSON out. Text that is not JSON only has its
        double-quoted parts masked (never an error for that).

        Raises:
            ValueError: invalid UTF-8.
        """
    def json_stream(self) -> TextStream:
        """A stream doing :meth:`mask_json_strings` chunk by chunk (cuts anywhere, even inside
        an escape or a UTF-8 sequence, give the same output as the whole text)."""
    def text_stream(self) -> TextStream: ...
    def sse_stream(self) -> SseStream: ...

class TextStream:
    """Text masked as one stream: output equals ``mask_text`` of the whole input (from
    :meth:`Masker.text_stream`) or ``mask_json_strings`` of it (from :meth:`Masker.json_stream`)."""

    def push(self, chunk: bytes) -> bytes:
        """Feed bytes (UTF-8 may be split anywhere); returns the releasable masked text.

        Raises:
            ValueError: invalid UTF-8 or the hold-back cap was exceeded.
        """
    def finish(self) -> bytes:
        """Release the held tail. Raises ValueError on a truncated UTF-8 sequence."""
    @property
    def counts(self) -> dict[str, int]: ...

class SseStream:
    """``text/event-stream`` bytes in, masked ``text/event-stream`` bytes out."""

    def push(self, chunk: bytes) -> bytes:
        """Feed raw bytes; returns whole, re-emitted events only.

        Raises:
            ValueError: event data that is not JSON (other than ``[DONE]``), invalid UTF-8.
        """
    def finish(self) -> bytes:
        """Flush every open location. Raises ValueError on an incomplete trailing event."""
    def take_released(self) -> bytes:
        """After ``push`` or ``finish`` raised: the events masked before the failing one."""
    @property
    def counts(self) -> dict[str, int]: ...
    @property
    def model(self) -> str | None:
        """The first top-level ``"model"`` string seen in an event's JSON."""
