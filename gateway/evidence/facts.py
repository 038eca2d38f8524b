"""Figures counted from entries, each keeping the seqs it counted, per log.

A `Measure` is a figure an auditor can trace: for entry-derived figures the seqs of every entry
counted, per log origin; for configuration-derived figures the items (rules, upstreams) named.
The predicates here are shared by the headline figures, the charts and the controls, so one
kind of event is counted one way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.config import Config
from gateway.evidence.collect import Log, Period, entry_time

Entry = dict[str, Any]
Predicate = Callable[[Entry], bool]

SERIES_BUCKETS = 24  # chart resolution: a day in hours, a month in ~30 h steps


@dataclass(frozen=True)
class Measure:
    """A figure: `seqs` (origin -> entry seqs) when counted from logs, else config `items`."""

    name: str
    description: str
    seqs: dict[str, list[int]] | None = None
    items: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        if self.seqs is None:
            return len(self.items)
        return sum(len(s) for s in self.seqs.values())


# -- what an entry is -------------------------------------------------------------------------


def is_type(*types: str) -> Predicate:
    return lambda e: e.get("type") in types


def is_request(e: Entry) -> bool:
    """A parsed request's outcome: allowed (decision) or refused (denied with request fields)."""
    return e.get("type") == "decision" or (e.get("type") == "denied" and "request_id" in e)


def is_denied(status: int | None = None) -> Predicate:
    """Request-level refusals, optionally of one HTTP status."""
    return lambda e: (
        e.get("type") == "denied"
        and "request_id" in e
        and (status is None or e.get("status") == status)
    )


def is_refused_unparsed(e: Entry) -> bool:
    """Refused by the HTTP layer before it was a request (malformed, too large, slow)."""
    return e.get("type") == "denied" and "request_id" not in e


def is_default_deny(e: Entry) -> bool:
    return is_denied(403)(e) and "rule" not in e


def is_exchange(e: Entry) -> bool:
    return e.get("type") == "inference"


def is_failed(e: Entry) -> bool:
    return is_exchange(e) and "error" in e


def is_masked(e: Entry) -> bool:
    """An answer in which the masker replaced at least one value (exchange or replay)."""
    return is_type("inference", "replay.result")(e) and any((e.get("masked") or {}).values())


def is_approval_decided(decision: str) -> Predicate:
    """An approver's decision: "approve" or "deny"."""
    return lambda e: e.get("type") == "approval.decided" and e.get("decision") == decision


def is_approved_decision(e: Entry) -> bool:
    """A request forwarded under an approve rule, once its approval was granted."""
    return e.get("type") == "decision" and e.get("decision") == "approve"


class ConfigNotGiven(Exception):
    """A control judged from the configuration, in a report made without one (`--store`)."""


@dataclass
class Scope:
    """Every verified log, the period and the configuration: what controls are computed from.

    `given_config` is None for a report made from the logs alone (`evidence --store` without
    `-c`): reading `config` then raises ConfigNotGiven, and the control is not assessed.
    """

    given_config: Config | None
    period: Period
    logs: list[Log]

    @property
    def config(self) -> Config:
        if self.given_config is None:
            raise ConfigNotGiven
        return self.given_config

    def select(self, predicate: Predicate, *, whole_log: bool = False) -> dict[str, list[int]]:
        """Seqs of matching entries per log: in the period, or in the whole signed log."""
        return {
            log.origin: [
                e["seq"] for e in (log.entries if whole_log else log.period) if predicate(e)
            ]
            for log in self.logs
        }

    def measure(self, name: str, description: str, predicate: Predicate) -> Measure:
        return Measure(name, description, self.select(predicate))

    def measure_in_log(
        self, name: str, description: str, predicate: Callable[[Log, Entry], bool]
    ) -> Measure:
        """A measure whose test also needs the entry's log (its neighbours, what it links to)."""
        matching = ((log, e) for log, e in self.pairs() if predicate(log, e))
        return Measure(name, description, seqs_of(matching, self.logs))

    def pairs(self) -> Iterable[tuple[Log, Entry]]:
        """(log, entry) for every in-period entry of every log."""
        for log in self.logs:
            for e in log.period:
                yield log, e

    def entry(self, log: Log, seq: Any) -> Entry | None:
        """Entry `seq` of a log, if it is a signed entry (seq may come from an entry's field)."""
        if isinstance(seq, int) and 0 <= seq < len(log.entries):
            return log.entries[seq]
        return None

    @property
    def has_entries(self) -> bool:
        return any(log.period for log in self.logs)


def seqs_of(pairs: Iterable[tuple[Log, Entry]], logs: list[Log]) -> dict[str, list[int]]:
    """Group (log, entry) pairs into the per-origin seq lists of a Measure."""
    out: dict[str, list[int]] = {log.origin: [] for log in logs}
    for log, e in pairs:
        out[log.origin].append(e["seq"])
    return out


def headline(scope: Scope) -> list[Measure]:
    """The traffic figures at the top of the report."""
    m = scope.measure
    return [
        m("requests", "requests parsed and decided (decision + request-level denied)", is_request),
        m("allowed", "requests a rule allowed (decision entries)", is_type("decision")),
        m("denied_401", "refused: no or invalid token (denied, status 401)", is_denied(401)),
        m("denied_403", "refused by policy (denied, status 403)", is_denied(403)),
        m("denied_default", "of those, no rule matched: default deny", is_default_deny),
        m(
            "denied_other",
            "refused as 400 or 404 (bad path, unknown connection)",
            lambda e: is_denied()(e) and e.get("status") not in (401, 403),
        ),
        m(
            "refused_unparsed",
            "refused before parsing (malformed, too large, slow)",
            is_refused_unparsed,
        ),
        m("exchanges", "exchanges with the model recorded (inference entries)", is_exchange),
        m(
            "exchanges_failed",
            "of those, broken off (upstream failed, timed out, client left)",
            is_failed,
        ),
        m("masked", "answers in which PII was masked (inference or replay.result)", is_masked),
        m(
            "approvals_requested",
            "requests held for approval (approval.requested)",
            is_type("approval.requested"),
        ),
        m("approvals_approved", "approver decisions to approve", is_approval_decided("approve")),
        m("approvals_denied", "approver decisions to deny", is_approval_decided("deny")),
        m(
            "approvals_used",
            "approved requests forwarded (decision with approve)",
            is_approved_decision,
        ),
        m("replays", "exchanges replayed by an investigator", is_type("replay")),
        m("policy_loads", "policies loaded (policy.loaded entries)", is_type("policy.loaded")),
    ]


def masked_by_entity(scope: Scope) -> dict[str, int]:
    """Values masked per entity type, summed over masked answers."""
    out: dict[str, int] = {}
    for _, e in scope.pairs():
        if is_masked(e):
            for entity, n in e["masked"].items():
                out[entity] = out.get(entity, 0) + n
    return dict(sorted(out.items()))


SERIES: dict[str, Predicate] = {
    "requests": is_request,
    "denials": is_denied(),
    "approvals": is_type("approval.decided"),
    "maskings": is_masked,
}


@dataclass(frozen=True)
class Series:
    """Counts per equal time bucket of the period, per line, per log."""

    starts: list[datetime]
    width: timedelta
    lines: dict[str, dict[str, list[int]]]  # line -> origin -> count per bucket

    def totals(self, line: str) -> list[int]:
        return [sum(col) for col in zip(*self.lines[line].values(), strict=True)]


def series(scope: Scope, buckets: int = SERIES_BUCKETS) -> Series:
    period = scope.period
    width = (period.until - period.since) / buckets
    starts = [period.since + i * width for i in range(buckets)]
    lines = {name: {log.origin: [0] * buckets for log in scope.logs} for name in SERIES}
    for log, e in scope.pairs():
        ts = entry_time(e) or period.since  # in-period entries always have a valid ts
        slot = min(int((ts - period.since) / width), buckets - 1)
        for name, predicate in SERIES.items():
            if predicate(e):
                lines[name][log.origin][slot] += 1
    return Series(starts, width, lines)
