"""The audit log's and the access log's timestamps read exactly as `datetime` writes them."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.audit.log import now_rfc3339
from gateway.timestamps import Timestamps

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


def test_the_audit_logs_clock_is_now() -> None:
    before = datetime.now(UTC)
    written = datetime.strptime(now_rfc3339(), "%Y-%m-%dT%H:%M:%S.%f%z")
    assert before <= written <= datetime.now(UTC)
