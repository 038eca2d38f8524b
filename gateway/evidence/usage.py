"""Who ran which model, when, and what came back: one row per issuer, subject, connection and
requested model, counted from the same entries (and predicates) as the headline figures.

`requests` = `allowed` + `denied` (each parsed request ends as one decision or refusal, like the
headline `requests`); `held` counts `approval.requested` entries, so a held request that was then
approved shows in both `held` and `allowed`. Tokens are summed from the `tokens_in`/`tokens_out`
the upstream reported in its `usage`; None when no exchange of the row reported any.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from gateway.evidence.collect import Log, seq_array
from gateway.evidence.facts import Entry, LogState, is_denied, is_exchange, is_type

Key = tuple[str | None, str | None, str | None, str | None]  # issuer, subject, connection, model


@dataclass
class UsageRow:
    issuer: str | None
    subject: str | None  # None: refused before anyone was identified (401)
    connection: str | None
    model: str | None  # as requested (the body's `model`)
    served_models: set[str] = field(default_factory=set)  # as the upstream answered
    requests: int = 0
    allowed: int = 0
    denied: int = 0
    held: int = 0
    exchanges: int = 0
    tokens_in: int | None = None
    tokens_out: int | None = None
    first_seen: str = ""
    last_seen: str = ""
    seqs: dict[str, array] = field(default_factory=dict)  # origin -> entries counted

    def add(self, log: Log, e: Entry) -> None:
        kind = e.get("type")
        if kind == "decision":
            self.allowed += 1
        elif is_denied()(e):
            self.denied += 1
        elif kind == "approval.requested":
            self.held += 1
        else:  # an exchange: what came back
            self.exchanges += 1
            if e.get("served_model"):
                self.served_models.add(e["served_model"])
            self.tokens_in = _plus(self.tokens_in, e.get("tokens_in"))
            self.tokens_out = _plus(self.tokens_out, e.get("tokens_out"))
        self.requests = self.allowed + self.denied
        ts = str(e.get("ts", ""))
        self.first_seen = min(self.first_seen, ts) if self.first_seen else ts
        self.last_seen = max(self.last_seen, ts)
        self.seqs.setdefault(log.origin, seq_array(log)).append(e["seq"])


def _plus(total: int | None, n: Any) -> int | None:
    if not isinstance(n, int):
        return total
    return (total or 0) + n


def counted(e: Entry) -> bool:
    """Entries a usage row counts: decisions, request-level refusals, holds and exchanges."""
    return is_type("decision", "approval.requested")(e) or is_denied()(e) or is_exchange(e)


class Usage:
    """Usage rows built from entries as they are read, in one pass."""

    def __init__(self, default_issuer: str | None) -> None:
        self.default_issuer = default_issuer  # entries from before `issuer` was recorded
        self._rows: dict[Key, UsageRow] = {}

    def watch(self, log: Log, state: LogState, e: Entry, in_period: bool) -> None:
        """A Scope watcher: count in-period entries."""
        if in_period:
            self.add(log, e)

    def add(self, log: Log, e: Entry) -> None:
        if not counted(e):
            return
        subject = e.get("subject")
        issuer = e.get("issuer") or (self.default_issuer if subject else None)
        key = (issuer, subject, e.get("connection"), e.get("model"))
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = UsageRow(*key)
        row.add(log, e)

    def rows(self) -> list[UsageRow]:
        return sorted(self._rows.values(), key=lambda r: tuple(v or "" for v in _key(r)))


def _key(row: UsageRow) -> Key:
    return row.issuer, row.subject, row.connection, row.model
