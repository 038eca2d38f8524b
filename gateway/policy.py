"""The policy engine: ordered rules, first match wins, no match is a deny.

Pure and table-like: rules are compiled once at load (globs to one regex each, lists to sets) so
a decision is a handful of set and regex look-ups, with no I/O.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from gateway.config import RuleConfig

ANY_GROUP = "*"
DEFAULT_DENY_REASON = "no rule allows this call (default deny)"


@dataclass(frozen=True, slots=True)
class Request:
    """What policy may look at: who, where, which model."""

    subject: str
    groups: frozenset[str]
    connection: str
    model: str | None
    path: str
    method: str


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # allow | deny
    rule: RuleConfig | None
    reason: str

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    @property
    def rule_id(self) -> str | None:
        return self.rule.id if self.rule else None


def _glob(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One anchored regex for a list of shell globs; None means 'no constraint'."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.DOTALL)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    config: RuleConfig
    any_group: bool
    groups: frozenset[str]
    subjects: frozenset[str]
    connections: frozenset[str]
    methods: frozenset[str]
    models: re.Pattern[str] | None
    paths: re.Pattern[str] | None

    @classmethod
    def compile(cls, rule: RuleConfig) -> CompiledRule:
        return cls(
            config=rule,
            any_group=ANY_GROUP in rule.groups,
            groups=frozenset(rule.groups),
            subjects=frozenset(rule.subjects),
            connections=frozenset(rule.connections),
            methods=frozenset(rule.methods),
            models=_glob(rule.models),
            paths=_glob(rule.paths),
        )

    def matches(self, req: Request) -> bool:
        # Identity: the caller must be named by subject, or be in one of the groups.
        if self.subjects and req.subject not in self.subjects:
            return False
        if self.groups and not self.any_group and self.groups.isdisjoint(req.groups):
            return False
        if self.connections and req.connection not in self.connections:
            return False
        if self.methods and req.method not in self.methods:
            return False
        if self.paths is not None and not self.paths.match(req.path):
            return False
        if self.models is not None:
            # A request that names no model matches only rules that do not constrain models.
            return req.model is not None and self.models.match(req.model) is not None
        return True


class Policy:
    """An ordered rule list; `decide` returns the first match or a default deny."""

    def __init__(self, rules: tuple[RuleConfig, ...]) -> None:
        self.rules = tuple(CompiledRule.compile(r) for r in rules)

    def decide(self, req: Request) -> Decision:
        for rule in self.rules:
            if rule.matches(req):
                action = rule.config.action
                return Decision(action, rule.config, f"{action} by rule {rule.config.id!r}")
        return Decision("deny", None, DEFAULT_DENY_REASON)
