"""The audit log's and the access log's timestamps read exactly as `datetime` writes them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.logs import JsonFormatter
from gateway.timestamps import ISO, ZULU, Timestamps

INSTANTS = st.floats(0, 4_000_000_000, allow_nan=False, allow_infinity=False)


@given(st.lists(INSTANTS, min_size=1, max_size=20))
@example([1_767_225_599.9999996, 1_767_225_599.0000004, 0.5e-6, 1.5e-6])  # rounding at the edges
def test_as_datetime_writes_them_whatever_second_came_before(instants: list[float]) -> None:
    """The date and time of day are kept from one call to the next: an instant of another
    second (later or, after a clock step, earlier) must not reuse them, and microseconds round
    as datetime rounds them (half to even, into the next second)."""
    iso, audit = Timestamps("+00:00"), Timestamps("Z")
    for posix in instants:
        moment = datetime.fromtimestamp(posix, UTC)
        assert iso.at(posix) == moment.isoformat(timespec="microseconds")
        assert audit.at(posix) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_log_line_is_stamped_as_datetime_isoformat_writes_its_record_time() -> None:
    record = logging.makeLogRecord({"msg": "x", "created": 1_767_225_599.1234567})
    line = orjson.loads(JsonFormatter().format(record))
    assert line["ts"] == "2025-12-31T23:59:59.123457+00:00" == ISO.at(record.created)
    assert ZULU.at(record.created) == "2025-12-31T23:59:59.123457Z"
