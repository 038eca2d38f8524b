"""Epoch names: the UTC day, ISO week or month a log covers, and where that period ends.

Names sort as their periods do within one kind: `2026-12-01` (daily), `2026-W49` (ISO week,
Monday to Sunday; the ISO year may differ from the calendar year near 1 January), `2026-12`
(monthly). A directory whose name is not one of these is not an epoch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

KINDS = ("daily", "weekly", "monthly")
_NAME = re.compile(r"(\d{4})-(?:(\d{2})-(\d{2})|W(\d{2})|(\d{2}))")


@dataclass(frozen=True)
class Epoch:
    """One period: its name and the half-open interval [start, end) in UTC."""

    name: str
    start: datetime
    end: datetime

    @classmethod
    def at(cls, kind: str, moment: datetime) -> Epoch:
        """The epoch of `kind` that holds `moment`.

        Raises:
            ValueError: `kind` is not daily, weekly or monthly.
        """
        moment = moment.astimezone(UTC)
        if kind == "daily":
            return cls.parse(moment.strftime("%Y-%m-%d"))  # type: ignore[return-value]
        if kind == "weekly":
            year, week, _ = moment.isocalendar()
            return cls.parse(f"{year}-W{week:02d}")  # type: ignore[return-value]
        if kind == "monthly":
            return cls.parse(moment.strftime("%Y-%m"))  # type: ignore[return-value]
        raise ValueError(f"epoch must be one of {', '.join(KINDS)}, not {kind!r}")

    @classmethod
    def parse(cls, name: str) -> Epoch | None:
        """The epoch a directory name stands for; None when it names none."""
        m = _NAME.fullmatch(name)
        if m is None:
            return None
        year, month, day, week, only_month = m.groups()
        try:
            if day is not None:
                start = datetime(int(year), int(month), int(day), tzinfo=UTC)
                return cls(name, start, start + timedelta(days=1))
            if week is not None:
                start = datetime.fromisocalendar(int(year), int(week), 1).replace(tzinfo=UTC)
                return cls(name, start, start + timedelta(days=7))
            start = datetime(int(year), int(only_month), 1, tzinfo=UTC)
        except ValueError:  # 2026-13, 2026-02-30, 2026-W54
            return None
        following = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
        return cls(name, start, following)
