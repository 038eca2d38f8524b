"""Figures counted from entries, each keeping the seqs it counted, per log.

A `Measure` is a figure an auditor can trace: for entry-derived figures the seqs of every entry
counted, per log origin; for configuration-derived figures the items (rules, upstreams) named.
The predicates here are shared by the headline figures, the charts and the controls, so one
kind of event is counted one way everywhere.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.config import Config
from gateway.evidence.collect import Log, Period, entry_time, seq_array

Entry = dict[str, Any]
Predicate = Callable[[Entry], bool]

SERIES_BUCKETS = 24  # chart resolution: a day in hours, a month in ~30 h steps


@dataclass(frozen=True)
class Measure:
    """A figure: `seqs` (origin -> entry seqs) when counted from logs, else config `items`."""

    name: str
    description: str
    seqs: dict[str, array] | dict[str, list[int]] | None = None
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


def same_test(a: Callable[..., bool], b: Callable[..., bool]) -> bool:
    """True when two predicates are one test: the same function, or closures of the same code
    over equal values (is_type("decision") made twice)."""
    if a is b:
        return True
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    if code_a is None or code_a is not code_b:
        return False
    cells = [tuple(c.cell_contents for c in f.__closure__ or ()) for f in (a, b)]
    return cells[0] == cells[1]


Watcher = Callable[["Log", "LogState", Entry, bool], None]  # (log, state, entry, in period)


@dataclass
class LogState:
    """What the pass remembers of a log's earlier entries, so checks that look back (at an
    exchange's decision, the previous time stamp, the policy loaded before) need no random
    access. Bounded: decisions are forgotten once their exchange is seen."""

    until: datetime
    previous: Entry | None = None  # the entry before the current one
    previous_in_period: bool = False
    decisions: dict[int, tuple[Entry, bool]] = field(default_factory=dict)  # awaiting exchange
    last_policy: Entry | None = None  # the latest policy.loaded so far
    in_force: Entry | None = None  # the latest policy.loaded before the period ended
    required: dict[Any, int] = field(default_factory=dict)  # approval id -> min_approvals
    last_stop: int = -1  # seq of the latest gateway.stopped

    def decision(self, seq: Any) -> Entry | None:
        """The decision entry `seq` if it is one still awaiting its exchange."""
        found = self.decisions.get(seq) if isinstance(seq, int) else None
        return found[0] if found else None

    def after(self, e: Entry, in_period: bool) -> None:
        kind = e.get("type")
        if kind == "decision":
            self.decisions[e["seq"]] = (e, in_period)
        elif kind == "inference":
            self.decisions.pop(e.get("decision_seq"), None)  # type: ignore[arg-type]
        elif kind == "policy.loaded":
            self.last_policy = e
            if (ts := entry_time(e)) is not None and ts < self.until:
                self.in_force = e
        elif kind == "approval.requested":
            self.required[e.get("approval_id")] = e.get("min_approvals", 1)
        elif kind == "gateway.stopped":
            self.last_stop = e["seq"]
        self.previous, self.previous_in_period = e, in_period


@dataclass
class _Probe:
    name: str
    seqs: dict[str, array]
    predicate: Callable[..., bool]
    whole_log: bool
    with_state: bool


class Scope:
    """Every log, the period and the configuration: what controls are computed from.

    `given_config` is None for a report made from the logs alone (`evidence --store` without
    `-c`): reading `config` then raises ConfigNotGiven, and the control is not assessed.

    Figures are declared first (`measure`, `measure_in_log`, `watch`), then filled in one pass
    over each log's entries (`feed`, in seq order); read them only after the pass.
    """

    def __init__(self, config: Config | None, period: Period, logs: list[Log]) -> None:
        self.given_config = config
        self.period = period
        self.logs = logs
        self.states = {log.origin: LogState(period.until) for log in logs}
        self._probes: list[_Probe] = []
        self._watchers: list[Watcher] = []

    @property
    def config(self) -> Config:
        if self.given_config is None:
            raise ConfigNotGiven
        return self.given_config

    def measure(
        self, name: str, description: str, predicate: Predicate, *, whole_log: bool = False
    ) -> Measure:
        """Entries matching `predicate`: in the period, or in the whole signed log."""
        return Measure(name, description, self._probe(name, predicate, whole_log, False))

    def measure_in_log(
        self, name: str, description: str, predicate: Callable[[LogState, Entry], bool]
    ) -> Measure:
        """A measure whose test also needs what came before the entry in its log."""
        return Measure(name, description, self._probe(name, predicate, False, True))

    def _probe(
        self, name: str, predicate: Callable[..., bool], whole_log: bool, with_state: bool
    ) -> dict[str, array]:
        """The seqs a probe fills; several controls measuring the same thing share them."""
        for probe in self._probes:
            if (probe.name, probe.whole_log, probe.with_state) == (
                name, whole_log, with_state
            ) and same_test(probe.predicate, predicate):  # fmt: skip
                return probe.seqs
        seqs = self.new_seqs()
        self._probes.append(_Probe(name, seqs, predicate, whole_log, with_state))
        return seqs

    def watch(self, watcher: Watcher) -> None:
        """Call `watcher(log, state, entry, in_period)` for every signed entry."""
        self._watchers.append(watcher)

    def new_seqs(self) -> dict[str, array]:
        return {log.origin: seq_array(log) for log in self.logs}

    def feed(self, log: Log, seq: int, e: Entry) -> None:
        """One entry of `log`, in seq order; entries past its checkpoint count as unsigned."""
        ts = entry_time(e)
        in_period = ts is not None and self.period.contains(ts)
        if ts is not None and ts < self.period.until:
            log.written = seq + 1
        if seq >= log.latest.size:
            if in_period:
                log.unsigned.append(seq)
            return
        state, origin = self.states[log.origin], log.origin
        if in_period:
            log.period_seqs.append(seq)
        for probe in self._probes:
            if (in_period or probe.whole_log) and (
                probe.predicate(state, e) if probe.with_state else probe.predicate(e)
            ):
                probe.seqs[origin].append(seq)
        for watcher in self._watchers:
            watcher(log, state, e, in_period)
        state.after(e, in_period)

    @property
    def has_entries(self) -> bool:
        return any(log.period_seqs for log in self.logs)


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
    """Values masked per entity type, summed over masked answers (filled by the pass)."""
    out: dict[str, int] = {}

    def add(log: Log, state: LogState, e: Entry, in_period: bool) -> None:
        if in_period and is_masked(e):
            for entity, n in e["masked"].items():
                out[entity] = out.get(entity, 0) + n

    scope.watch(add)
    return out


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
    """Counts over time for the charts (filled by the pass)."""
    period = scope.period
    width = (period.until - period.since) / buckets
    starts = [period.since + i * width for i in range(buckets)]
    lines = {name: {log.origin: [0] * buckets for log in scope.logs} for name in SERIES}

    def add(log: Log, state: LogState, e: Entry, in_period: bool) -> None:
        if not in_period:
            return
        ts = entry_time(e) or period.since  # in-period entries always have a valid ts
        slot = min(int((ts - period.since) / width), buckets - 1)
        for name, predicate in SERIES.items():
            if predicate(e):
                lines[name][log.origin][slot] += 1

    scope.watch(add)
    return Series(starts, width, lines)
