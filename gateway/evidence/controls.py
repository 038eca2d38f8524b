"""NIST SP 800-53 controls: one table of definitions, each with a pure evaluation function.

Every status is computed from the configuration and the verified entries of the period, never
asserted: a control is `satisfied` when its checks found no gap, `not-satisfied` when they found
one (each gap is listed, with the measure holding the entries or config items behind it), and
`not-assessed` when the period holds nothing the control could be judged on.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config import Config, is_loopback
from gateway.evidence.collect import Log
from gateway.evidence.facts import (
    ConfigNotGiven,
    Entry,
    LogState,
    Measure,
    Scope,
    is_approved_decision,
    is_default_deny,
    is_denied,
    is_exchange,
    is_failed,
    is_masked,
    is_request,
    is_type,
)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
TS_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")  # RFC 3339, UTC, µs
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class Status(StrEnum):
    SATISFIED = "satisfied"
    NOT_SATISFIED = "not-satisfied"
    NOT_ASSESSED = "not-assessed"


@dataclass(frozen=True)
class Outcome:
    """A control's status, why, the measures behind it and every gap found."""

    status: Status
    reason: str
    measures: list[Measure]
    gaps: list[str]


@dataclass(frozen=True)
class Control:
    id: str  # as NIST writes it: AC-3, AU-9(3), AU-2/AU-3
    oscal_ids: tuple[str, ...]  # OSCAL control ids: ac-3, au-9.3
    title: str
    asks: str  # what the control requires, in a sentence
    how: str  # how the gateway meets it
    evaluate: Callable[[Scope], Pending]  # declares its measures; the result judges them


Pending = Callable[[], Outcome]  # a control's judgement, run once the pass is done


def judge(
    measures: list[Measure],
    gaps: list[str | None],
    satisfied: str,
    *,
    unassessed: str | None = None,
) -> Outcome:
    """not-assessed if `unassessed` gives a reason, else not-satisfied on any gap."""
    found = [g for g in gaps if g]
    if unassessed:
        return Outcome(Status.NOT_ASSESSED, unassessed, measures, found)
    if found:
        return Outcome(Status.NOT_SATISFIED, "; ".join(found), measures, found)
    return Outcome(Status.SATISFIED, satisfied, measures, found)


def gap(measure: Measure, text: str) -> str | None:
    """A gap naming how many entries (or items) of `measure` show it, or None if none do."""
    return f"{measure.total} {text} (see {measure.name})" if measure.total else None


NO_REQUESTS = "no requests in the period"
NO_ENTRIES = "no audit entries in the period"


# -- shared checks ----------------------------------------------------------------------------


def _anonymous(s: Scope) -> Measure:
    return s.measure(
        "allowed_without_identity",
        "decision or inference entries without an authenticated subject",
        lambda e: is_type("decision", "inference")(e) and not e.get("subject"),
    )


def _requests(s: Scope, description: str = "requests recorded") -> Measure:
    return s.measure("requests", description, is_request)


def _request_sealed(decision: Entry | None) -> bool:
    decision = decision or {}
    return "request" in decision.get("sealed", {}) or (
        decision.get("request_sha256") == EMPTY_SHA256
    )


def _sealed_exchanges(s: Scope) -> tuple[Measure, Measure]:
    """Completed exchanges whose original request and response are sealed, and those not."""

    def sealed(state: LogState, e: Entry) -> bool:
        return _request_sealed(state.decision(e.get("decision_seq"))) and (
            "response" in e.get("sealed", {})
        )

    completed = lambda e: is_exchange(e) and not is_failed(e)  # noqa: E731
    return (
        s.measure_in_log(
            "exchanges_sealed",
            "completed exchanges whose original request and response are sealed "
            "(AES-256-GCM blobs whose SHA-256 verification matched)",
            lambda state, e: completed(e) and sealed(state, e),
        ),
        s.measure_in_log(
            "exchanges_unsealed",
            "completed exchanges missing a sealed original request or response",
            lambda state, e: completed(e) and not sealed(state, e),
        ),
    )


def _checkpoints(s: Scope) -> Measure:
    """Per-log checkpoint facts; read after the pass (the period-end checkpoint is chosen then)."""
    return Measure(
        "checkpoints",
        "signed checkpoints verified per log, each a prefix of the next (consistent)",
        items=tuple(
            f"{log.origin}: {log.report.checkpoints if log.report else 0} checkpoints; at the "
            f"period end size {log.checkpoint.size if log.checkpoint else 0}, root "
            f"{log.checkpoint.root.hex() if log.checkpoint else ''}; latest size "
            f"{log.latest.size}"
            for log in s.logs
        ),
    )


def _unsigned(s: Scope) -> tuple[Measure, Measure]:
    signed = s.measure("entries_signed", "in-period entries covered by the checkpoint", bool)
    unsigned = Measure(
        "entries_unsigned",
        "in-period entries written after the verified checkpoint (not yet signed)",
        {log.origin: log.unsigned for log in s.logs},
    )
    return signed, unsigned


UNSIGNED = "in-period entries are not yet covered by a signed checkpoint"


# -- the controls -----------------------------------------------------------------------------
# Each declares its measures on the scope and returns the function that judges them once the
# pass over the logs has filled them in.


def _ac3(s: Scope) -> Pending:
    requests = _requests(s)
    allowed = s.measure("allowed", "requests allowed by a named rule", is_type("decision"))
    not_allow = s.measure(
        "decisions_without_grant",
        "decision entries naming no rule, or neither allow nor approve with its approvers",
        lambda e: is_type("decision")(e) and not (e.get("rule") and _granted(e)),
    )
    orphans = s.measure_in_log(
        "exchanges_without_decision",
        "exchanges whose decision_seq is not an allowing decision entry of the same log still "
        "awaiting its exchange",
        lambda state, e: is_exchange(e) and state.decision(e.get("decision_seq")) is None,
    )
    measures = [
        allowed,
        s.measure("denied_403", "requests refused by policy (403)", is_denied(403)),
        s.measure("denied_default", "of those, refused because no rule matched", is_default_deny),
        s.measure("exchanges", "exchanges forwarded to a model", is_exchange),
        not_allow,
        orphans,
    ]
    return lambda: judge(
        measures,
        [
            gap(not_allow, "decisions not allowed by a rule"),
            gap(orphans, "exchanges without a decision"),
        ],
        "every forwarded exchange follows an allow decision naming its rule; refusals recorded",
        unassessed=None if requests.total else NO_REQUESTS,
    )


def _granted(decision: Entry) -> bool:
    if decision.get("decision") == "approve":
        return bool(decision.get("approval_id") and decision.get("approved_by"))
    return decision.get("decision") == "allow"


def _ac5(s: Scope) -> Pending:
    decided = s.measure("approvals_decided", "approver decisions", is_type("approval.decided"))
    refused = s.measure(
        "decisions_refused",
        "approval decisions the gateway refused (approver deciding their own request, not in "
        "the approver groups, or deciding twice): separation of duties enforced",
        is_type("approval.refused"),
    )
    refused_self = s.measure(
        "self_decisions_refused",
        "of those, attempts by the requester to decide their own request",
        lambda e: is_type("approval.refused")(e) and e.get("approver") == e.get("requester"),
    )
    selfish = s.measure(
        "self_decisions",
        "approver decisions on the approver's own request",
        lambda e: is_type("approval.decided")(e) and e.get("approver") == e.get("requester"),
    )
    forwarded = s.measure("forwarded_approved", "approved requests forwarded", is_approved_decision)
    self_forwarded = s.measure(
        "forwarded_self_approved",
        "approved requests forwarded with the requester among their approvers",
        lambda e: is_approved_decision(e) and e.get("subject") in e.get("approved_by", []),
    )
    short = s.measure_in_log(
        "forwarded_short_of_approvers",
        "approved requests forwarded with fewer distinct approvers than their rule requires",
        lambda state, e: (
            is_approved_decision(e)
            and len(set(e.get("approved_by", []))) < state.required.get(e.get("approval_id"), 1)
        ),
    )
    rules = Measure(
        "approval_rules",
        "rules that require an approver from named groups",
        items=tuple(
            f"{r.id}: approvers {', '.join(r.approvers)}"
            for r in s.config.rules
            if r.action == "approve"
        ),
    )
    requested = s.measure(
        "approvals_requested", "requests held for approval", is_type("approval.requested")
    )
    measures = [rules, requested, decided, refused, refused_self, forwarded, selfish]
    return lambda: judge(
        [*measures, self_forwarded, short],
        [
            gap(selfish, "decisions by the requester themselves"),
            gap(self_forwarded, "requests forwarded on their requester's own approval"),
            gap(short, "requests forwarded short of the approvers required"),
        ],
        "nobody decided on their own request (attempts were refused); each approved request "
        "had its distinct approvers",
        unassessed=None
        if decided.total or refused.total or forwarded.total
        else "no approval decisions or refused attempts in the period",
    )


def _ac6(s: Scope) -> Pending:
    grants = [r for r in s.config.rules if r.action in ("allow", "approve")]
    unscoped = Measure(
        "unscoped_grants",
        "allowing rules that name neither connections nor models (any model anywhere)",
        items=tuple(r.id for r in grants if not r.connections and not r.models),
    )
    measures = [
        Measure(
            "grants",
            "rules that grant access: group or subject to connections and models",
            items=tuple(
                f"{r.id}: {r.action} {', '.join([*r.groups, *r.subjects])} -> "
                f"{', '.join(r.connections) or 'any connection'}; "
                f"{', '.join(r.models) or 'any model'}"
                for r in grants
            ),
        ),
        unscoped,
        Measure(
            "masking_grants",
            "allowing rules that mask PII in answers",
            items=tuple(f"{r.id}: {', '.join(r.mask)} ({r.mask_style})" for r in grants if r.mask),
        ),
        s.measure(
            "denied_default", "refused because no rule matched (default deny)", is_default_deny
        ),
        s.measure("masked", "answers in which PII was masked", is_masked),
    ]
    return lambda: judge(
        measures,
        [gap(unscoped, "allowing rules scoped to no connection or model")],
        "every grant names its groups and the connections or models it covers; the rest is denied",
    )


def _ac17(s: Scope) -> Pending:
    requests = _requests(s)
    anonymous = _anonymous(s)
    measures = [
        s.measure(
            "requests_with_client",
            "requests recorded with the remote client's address and an identity decision",
            lambda e: is_request(e) and bool(e.get("client")),
        ),
        s.measure(
            "denied_401", "remote requests refused without a valid token (401)", is_denied(401)
        ),
        anonymous,
    ]
    return lambda: judge(
        measures,
        [gap(anonymous, "exchanges allowed without an identity")],
        "every remote call reached models only through the gateway with a verified identity",
        unassessed=None if requests.total else NO_REQUESTS,
    )


REQUEST_FIELDS = ("request_id", "received", "client", "method", "path", "request_sha256")
ALLOWED_FIELDS = (*REQUEST_FIELDS, "subject", "groups", "connection", "decision", "rule")
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "decision": ALLOWED_FIELDS,
    "inference": (*ALLOWED_FIELDS, "decision_seq", "status", "bytes_in", "bytes_out", "total_ms"),
    "policy.loaded": ("config_sha256", "rules"),
    "gateway.started": ("config_sha256", "version"),
    "gateway.stopped": ("config_sha256",),
    "replay": ("replayed_seq", "request_id", "subject", "connection", "request_sha256"),
    "replay.result": ("replay_seq", "replayed_seq", "subject"),
    "approval.requested": (*REQUEST_FIELDS, "subject", "rule", "approval_id", "approvers"),
    "approval.decided": ("approval_id", "approver", "requester", "decision"),
    "approval.used": ("approval_id", "subject", "approved_by"),
    "approval.expired": ("approval_id", "requester"),
}


def missing_fields(e: Entry) -> list[str]:
    """AU-3 content an entry of its type must carry (what, when, where, who, outcome)."""
    kind = e.get("type")
    need: tuple[str, ...] = ("ts", *REQUIRED_FIELDS.get(kind, ()))
    if kind == "denied":
        need += ("client", "status", "code", "reason")
        if "request_id" in e:
            need += REQUEST_FIELDS + (() if e.get("status") == 401 else ("subject",))
    return [f for f in need if f not in e]


def _au2(s: Scope) -> Pending:
    by_kind: dict[str, dict[str, array]] = {}

    def count(log: Log, state: LogState, e: Entry, in_period: bool) -> None:
        if in_period:
            kind = str(e.get("type", "?"))
            by_kind.setdefault(kind, s.new_seqs())[log.origin].append(e["seq"])

    s.watch(count)
    incomplete = s.measure(
        "entries_incomplete",
        "entries missing content their type must carry",
        lambda e: bool(missing_fields(e)),
    )

    def outcome() -> Outcome:
        events = [Measure(f"events:{k}", f"{k} entries", by_kind[k]) for k in sorted(by_kind)]
        return judge(
            [*events, incomplete],
            [gap(incomplete, "entries missing required content")],
            "every event type the gateway logs is present with the content AU-3 requires",
            unassessed=None if s.has_entries else NO_ENTRIES,
        )

    return outcome


def _au6(s: Scope) -> Pending:
    audit = s.config.audit
    readers = Measure(
        "readers",
        "groups allowed to fetch checkpoints and proofs and to replay exchanges",
        items=audit.readers if audit else (),
    )
    replays = s.measure("replays", "exchanges replayed by an investigator", is_type("replay"))
    no_readers = None
    if not readers.items:
        no_readers = "no [audit] readers group: logs can be reviewed only with file access"

    def outcome() -> Outcome:
        verified = Measure(
            "logs_verified",
            "logs verified end to end for this report",
            items=tuple(log.report.summary() for log in s.logs if log.report),
        )
        return judge(
            [verified, readers, replays],
            [no_readers],
            "logs verified and reported for the period; reviewers have their own group",
        )

    return outcome


def _au8(s: Scope) -> Pending:
    malformed = s.measure(
        "timestamps_malformed",
        "entries in the whole signed log whose ts is not RFC 3339 UTC with microseconds",
        lambda e: not TS_FORMAT.match(str(e.get("ts", ""))),
        whole_log=True,
    )
    backwards = s.measure_in_log(
        "timestamps_backwards",
        "in-period entries time-stamped earlier than the entry before them",
        lambda state, e: (
            state.previous is not None and str(e.get("ts", "")) < str(state.previous.get("ts", ""))
        ),
    )
    stamped = s.measure("timestamped", "in-period entries with a UTC time stamp", bool)
    return lambda: judge(
        [stamped, malformed, backwards],
        [gap(malformed, "malformed time stamps"), gap(backwards, "time stamps out of order")],
        "every entry carries a UTC time stamp with microseconds, in log order",
        unassessed=None if s.has_entries else NO_ENTRIES,
    )


def _sealed_blobs(s: Scope, description: str) -> Measure:
    return Measure(
        "sealed_blobs_verified",
        description,
        items=tuple(
            f"{log.origin}: {log.report.sealed_blobs} blobs" for log in s.logs if log.report
        ),
    )


def _au9_3(s: Scope) -> Pending:
    signed, unsigned = _unsigned(s)
    return lambda: judge(
        [
            _checkpoints(s),
            signed,
            unsigned,
            _sealed_blobs(s, "sealed blobs whose SHA-256 matches the hash in their (signed) entry"),
        ],
        [gap(unsigned, UNSIGNED)],
        "every in-period entry is under a verified Ed25519-signed Merkle checkpoint",
        unassessed=None if signed.total or unsigned.total else NO_ENTRIES,
    )


def _au10(s: Scope) -> Pending:
    keys = Measure(
        "verifier_keys",
        "Ed25519 keys the checkpoints were verified with, and where each came from",
        items=tuple(
            f"{log.origin}: {log.verifier.encode()} "
            f"({'pinned with --verifier' if log.pinned else 'read from the log directory'})"
            for log in s.logs
        ),
    )
    attributed = s.measure(
        "actions_attributed",
        "in-period entries binding an action to an authenticated subject",
        lambda e: bool(e.get("subject")),
    )
    unpinned = [log.origin for log in s.logs if not log.pinned]
    reason = None
    if unpinned:
        reason = (
            f"the verifier key of {', '.join(unpinned)} was read from the log directory, which "
            "whoever could rewrite the log could also replace; pass --verifier with the key "
            "obtained out of band"
        )
    return lambda: judge(
        [keys, _checkpoints(s), attributed],
        [],
        "actions are bound to subjects in entries under checkpoints signed by a pinned key",
        unassessed=reason or (None if s.has_entries else NO_ENTRIES),
    )


def _au11(s: Scope) -> Pending:
    """Retention: records kept in chained epochs, originals shredded per epoch after it."""
    audit = s.config.audit
    policy = Measure(
        "retention_policy",
        "[audit] epoch and retention_days as configured",
        items=(
            f"epoch = {audit.epoch or 'none (one log for ever)'}",
            f"retention_days = {audit.retention_days or 'none (originals kept for ever)'}",
        )
        if audit
        else (),
    )
    epochs = Measure(
        "logs_verified",
        "logs (epochs) verified for this report; each epoch chains to the one before",
        items=tuple(log.origin for log in s.logs),
    )
    shredded = s.measure(
        "epochs_shredded",
        "epoch.shredded entries: epochs whose sealed originals are unreadable for good "
        "(entries, tree and proofs kept and verified)",
        is_type("epoch.shredded"),
        whole_log=True,
    )
    gaps = []
    if audit is not None and audit.retention_days is None:
        gaps.append("no [audit] retention_days: sealed originals are kept without limit")
    return lambda: judge(
        [policy, epochs, shredded],
        gaps,
        "records are kept in verifiable epochs and each epoch's originals are crypto-shredded "
        "after retention_days",
        unassessed=None if audit else "no [audit] section: nothing is retained",
    )


def _au12(s: Scope) -> Pending:
    measures = [
        _requests(s, "requests recorded (decision + request-level denied)"),
        s.measure("exchanges", "exchanges recorded (inference entries)", is_exchange),
        s.measure("exchanges_failed", "of those, broken off and recorded with an error", is_failed),
    ]

    def outcome() -> Outcome:
        # Decisions still awaiting their exchange once every entry was read.
        lost, interrupted = s.new_seqs(), s.new_seqs()
        for log in s.logs:
            state = s.states[log.origin]
            for seq, (_, in_period) in sorted(state.decisions.items()):
                if in_period:
                    (lost if seq < state.last_stop else interrupted)[log.origin].append(seq)
        lost_m = Measure(
            "decisions_unrecorded_exchange",
            "decisions with no exchange entry although the gateway stopped cleanly after them",
            lost,
        )
        interrupted_m = Measure(
            "decisions_interrupted",
            "decisions with no exchange entry, followed by no clean stop (a crash, or in flight)",
            interrupted,
        )
        return judge(
            [*measures, lost_m, interrupted_m],
            [gap(lost_m, "allowed requests whose exchange was never recorded")],
            "every request produced its entries: a decision or refusal, then its exchange",
            unassessed=None if s.has_entries else NO_ENTRIES,
        )

    return outcome


def _ca7(s: Scope) -> Pending:
    signed, unsigned = _unsigned(s)
    measures = [
        signed,
        unsigned,
        s.measure("starts", "gateway starts", is_type("gateway.started")),
        s.measure("stops", "clean gateway stops", is_type("gateway.stopped")),
        s.measure(
            "recoveries",
            "starts that repaired the log after a crash (a torn tail, lost committed bytes)",
            is_type("gateway.recovered"),
        ),
        s.measure("denials", "refusals of any kind (trend in the charts)", is_type("denied")),
    ]
    return lambda: judge(
        [_checkpoints(s), *measures],
        [gap(unsigned, UNSIGNED)],
        "the period's activity is in a continuously signed log, charted over time",
        unassessed=None if s.has_entries else NO_ENTRIES,
    )


def _cm3(s: Scope) -> Pending:
    loads = s.measure("policy_loads", "policies loaded in the period", is_type("policy.loaded"))
    malformed = s.measure(
        "policy_loads_incomplete",
        "policy.loaded entries without a SHA-256 of the file or its rule list",
        lambda e: (
            is_type("policy.loaded")(e)
            and not (
                SHA256_HEX.match(str(e.get("config_sha256"))) and isinstance(e.get("rules"), list)
            )
        ),
    )
    changes = s.measure_in_log(
        "policy_changes",
        "policy.loaded entries whose file hash differs from the previous load",
        lambda state, e: (
            is_type("policy.loaded")(e)
            and state.last_policy is not None
            and state.last_policy.get("config_sha256") != e.get("config_sha256")
        ),
    )
    unloaded = s.new_seqs()

    def follows_start(log: Log, state: LogState, e: Entry, in_period: bool) -> None:
        """A start must be directly followed by its policy.loaded (checked at the next entry)."""
        if _pending_start(state) is not None and e.get("type") != "policy.loaded":
            unloaded[log.origin].append(_pending_start(state))

    s.watch(follows_start)
    assessed = s.config

    def outcome() -> Outcome:
        for log in s.logs:  # a start that is the last signed entry has no policy record yet
            if (seq := _pending_start(s.states[log.origin])) is not None:
                unloaded[log.origin].append(seq)
        starts = Measure(
            "starts_without_policy_record",
            "gateway starts not directly followed by a policy.loaded entry",
            unloaded,
        )
        in_force = {log.origin: s.states[log.origin].in_force for log in s.logs}
        force = Measure(
            "policy_in_force",
            "per log, the policy in force at the end of the period (its last policy.loaded)",
            items=tuple(
                f"{origin}: sha256 {e.get('config_sha256')} (seq {e['seq']}), "
                + (
                    "the file assessed"
                    if e.get("config_sha256") == assessed.sha256
                    else "another file"
                )
                if e
                else f"{origin}: none recorded"
                for origin, e in in_force.items()
            ),
        )
        # Replicas have files of their own (each names its own [audit] origin), so what must
        # match is the policy: the rule ids in order and the connections.
        differs = [
            f"the policy in force in {origin} (seq {e['seq']}) has other rules or connections "
            f"than the configuration assessed ({assessed.path}): config-derived findings may "
            "not describe that log"
            for origin, e in in_force.items()
            if e and (e.get("rules"), e.get("connections")) != _policy(assessed)
        ]
        return judge(
            [
                Measure(
                    "config_assessed",
                    "the configuration file given to this report",
                    items=(f"{assessed.path}: sha256 {assessed.sha256}",),
                ),
                force,
                loads,
                changes,
                malformed,
                starts,
            ],
            [
                gap(malformed, "policy loads recorded without file hash or rules"),
                gap(starts, "starts without a policy record"),
                *differs,
            ],
            "every policy in force is recorded with its file's SHA-256; the one assessed is in "
            "force",
            unassessed=None
            if any(in_force.values())
            else "no policy.loaded entry up to the period end",
        )

    return outcome


def _pending_start(state: LogState) -> int | None:
    """The seq of the entry just read if it was an in-period gateway.started."""
    previous = state.previous
    if previous and previous.get("type") == "gateway.started" and state.previous_in_period:
        return previous["seq"]
    return None


def _policy(config: Config) -> tuple[list[str], list[str]]:
    """What policy.loaded records of a config besides its hash."""
    return [r.id for r in config.rules], [c.name for c in config.connections]


def _ia2(s: Scope) -> Pending:
    issuers = s.config.issuers
    requests = _requests(s)
    anonymous = _anonymous(s)
    subjects: set[str] = set()

    def identified(log: Log, state: LogState, e: Entry, in_period: bool) -> None:
        if in_period and is_request(e) and e.get("subject"):
            subjects.add(e["subject"])

    s.watch(identified)
    plain = [
        i.name
        for i in issuers
        if urlsplit(i.issuer).scheme != "https"
        and not is_loopback(urlsplit(i.issuer).hostname or "")
    ]
    provider = Measure(
        "identity_provider",
        "OIDC issuers, audiences and accepted signature algorithms",
        items=tuple(
            f"{i.name}: issuer {i.issuer}, audience {i.audience}, "
            f"algorithms {', '.join(i.algorithms)}"
            for i in issuers
        ),
    )
    authenticated = s.measure(
        "requests_authenticated",
        "requests carrying a verified subject",
        lambda e: is_request(e) and bool(e.get("subject")),
    )
    refused = s.measure("denied_401", "refused: no or invalid token", is_denied(401))
    return lambda: judge(
        [
            provider,
            authenticated,
            Measure("subjects", "distinct subjects identified", items=tuple(sorted(subjects))),
            refused,
            anonymous,
        ],
        [
            gap(anonymous, "exchanges without an identified subject"),
            f"identity provider {', '.join(plain)} reached over plain HTTP" if plain else None,
        ],
        "every allowed call was made by a subject authenticated with a JWT the issuer signed",
        unassessed=None if requests.total else NO_REQUESTS,
    )


def _ir4(s: Scope) -> Pending:
    sealed, unsealed = _sealed_exchanges(s)
    measures = [
        sealed,
        unsealed,
        s.measure("replays", "exchanges replayed from their sealed originals", is_type("replay")),
        s.measure(
            "exchanges_failed", "exchanges broken off (upstream failure, timeout)", is_failed
        ),
        s.measure(
            "upstream_errors",
            "exchanges the model answered with a 5xx status",
            lambda e: is_exchange(e) and int(e.get("status") or 0) >= 500,
        ),
    ]
    return lambda: judge(
        measures,
        [gap(unsealed, "exchanges that cannot be reconstructed")],
        "every completed exchange can be reconstructed from sealed originals and replayed",
        unassessed=None if sealed.total or unsealed.total else "no completed exchanges",
    )


def _sc8(s: Scope) -> Pending:
    config = s.config
    plain = [c for c in config.connections if c.scheme != "https"]
    plain_names = {c.name for c in plain}
    listener = config.server.host
    gaps = [
        f"connection {c.name} reaches its model over plain HTTP ({c.upstream}"
        f"{', loopback: traffic stays on this host' if is_loopback(c.host) else ''})"
        for c in plain
    ]
    if not config.server.tls and not is_loopback(listener):
        gaps.append(
            f"the gateway listens on {listener} over plain HTTP: clients' tokens and prompts "
            "are protected only if a TLS terminator fronts it, which this report cannot see"
        )
    measures = [
        Measure(
            "upstreams_tls",
            "connections reached over HTTPS",
            items=tuple(
                f"{c.name}: {c.upstream}" for c in config.connections if c.name not in plain_names
            ),
        ),
        Measure(
            "upstreams_plain_http",
            "connections reached over plain HTTP",
            items=tuple(f"{c.name}: {c.upstream}" for c in plain),
        ),
        s.measure(
            "exchanges_plain_http",
            "in-period exchanges sent over plain HTTP",
            lambda e: is_exchange(e) and e.get("connection") in plain_names,
        ),
        Measure(
            "listener",
            "where clients reach the gateway",
            items=(f"{listener}:{config.server.port} ({_listener_transport(config)})",),
        ),
    ]
    satisfied = "every upstream is reached over TLS; the listener is HTTPS or local"
    return lambda: judge(measures, gaps, satisfied)


def _listener_transport(config: Config) -> str:
    server = config.server
    if not server.tls:
        return "plain HTTP"
    if server.tls_client_ca is None:
        return "HTTPS, TLS 1.2 or later"
    return f"HTTPS, TLS 1.2 or later, client certificates {server.tls_client_auth}"


def _sc28(s: Scope) -> Pending:
    sealed, unsealed = _sealed_exchanges(s)
    audit = s.config.audit
    keys: list[str] = []
    inside: list[str] = []
    if audit:
        root = Path(audit.dir).resolve()
        for name, path in (("signing", audit.signing_key), ("sealing", audit.sealing_key)):
            within = Path(path).resolve().is_relative_to(root)
            keys.append(f"{name} key {path}: {'inside' if within else 'outside'} {audit.dir}")
            if within:
                inside.append(f"the {name} key is stored inside the audit directory")
    return lambda: judge(
        [
            sealed,
            unsealed,
            _sealed_blobs(s, "AES-256-GCM blobs whose SHA-256 matches their entry"),
            Measure("key_locations", "where the keys are kept", items=tuple(keys)),
        ],
        [
            gap(unsealed, "exchanges whose originals are not sealed"),
            *inside,
            None if audit else "no [audit] section: key locations unknown",
        ],
        "originals are stored only encrypted, keys outside the audit directory",
        unassessed=None if sealed.total or unsealed.total else "no completed exchanges",
    )


CONTROLS: tuple[Control, ...] = (
    Control(
        "AC-3",
        ("ac-3",),
        "Access Enforcement",
        "Enforce approved authorizations for access to resources.",
        "Each call is decided by the first matching policy rule (default deny) before "
        "anything is sent upstream; the decision and its rule are logged first.",
        _ac3,
    ),
    Control(
        "AC-5",
        ("ac-5",),
        "Separation of Duties",
        "Separate duties so no individual both requests and approves a sensitive action.",
        "Rules with action approve hold the call until an approver from the named groups "
        "decides; the gateway refuses an approver deciding their own request.",
        _ac5,
    ),
    Control(
        "AC-6",
        ("ac-6",),
        "Least Privilege",
        "Allow only the accesses users need for their tasks.",
        "Rules grant groups specific connections and model globs, everything else is denied; "
        "rules can mask PII so callers see only what they need.",
        _ac6,
    ),
    Control(
        "AC-17",
        ("ac-17",),
        "Remote Access",
        "Authorize, monitor and control each type of remote access. (Some guidance cites "
        "AC-18, which concerns wireless access.)",
        "Models are reachable only through the gateway, which authenticates every remote "
        "call and records its client address and outcome.",
        _ac17,
    ),
    Control(
        "AU-2/AU-3",
        ("au-2", "au-3"),
        "Event Logging; Content of Audit Records",
        "Log the events that matter, each with what, when, where, source, outcome and identity.",
        "Decisions, refusals, exchanges, approvals, policy loads and lifecycle events are "
        "entries with time, client, subject, rule, status and body hashes.",
        _au2,
    ),
    Control(
        "AU-6",
        ("au-6",),
        "Audit Record Review, Analysis, and Reporting",
        "Review and analyze audit records and report findings.",
        "Readers fetch checkpoints and proofs, replay exchanges, and this report is "
        "computed from the verified log.",
        _au6,
    ),
    Control(
        "AU-8",
        ("au-8",),
        "Time Stamps",
        "Use internal clocks to time-stamp audit records in UTC with sufficient granularity.",
        "The log stamps each entry in RFC 3339 UTC with microseconds as it accepts it.",
        _au8,
    ),
    Control(
        "AU-9(3)",
        ("au-9.3",),
        "Protection of Audit Information: Cryptographic Protection",
        "Protect the integrity of audit information with cryptographic mechanisms.",
        "Entries are leaves of an RFC 9162 Merkle tree whose roots are signed (Ed25519) "
        "checkpoints; sealed blobs are hashed into their entries.",
        _au9_3,
    ),
    Control(
        "AU-10",
        ("au-10",),
        "Non-repudiation",
        "Provide irrefutable evidence that an individual performed an action.",
        "Entries bind each action to an authenticated subject, under checkpoints anyone "
        "can verify with the public key.",
        _au10,
    ),
    Control(
        "AU-11",
        ("au-11",),
        "Audit Record Retention",
        "Retain audit records for a defined period to support after-the-fact investigations.",
        "Entries, tree and signed checkpoints are kept; each epoch's sealed originals are "
        "crypto-shredded (its key deleted, recorded as epoch.shredded) after retention_days.",
        _au11,
    ),
    Control(
        "AU-12",
        ("au-12",),
        "Audit Record Generation",
        "Generate audit records for the defined events.",
        "The request path writes its entry before acting (fail closed: 503 if it cannot) "
        "and an exchange entry before the answer's last byte is released.",
        _au12,
    ),
    Control(
        "CA-7",
        ("ca-7",),
        "Continuous Monitoring",
        "Monitor controls on an ongoing basis.",
        "Every batch of entries is signed at once; checkpoints can be polled and trends "
        "charted at any time.",
        _ca7,
    ),
    Control(
        "CM-3/CM-5",
        ("cm-3", "cm-5"),
        "Configuration Change Control; Access Restrictions for Change",
        "Control and record changes to the system's configuration.",
        "Each policy load, at start or reload, is an entry with the file's SHA-256 and "
        "rule list; a bad file is refused and the previous policy stays.",
        _cm3,
    ),
    Control(
        "IA-2",
        ("ia-2",),
        "Identification and Authentication (Organizational Users)",
        "Uniquely identify and authenticate users.",
        "Each call needs a JWT signed by the OIDC issuer, verified against its keys (asymmetric "
        "algorithms only); the subject and groups are recorded.",
        _ia2,
    ),
    Control(
        "IR-4",
        ("ir-4",),
        "Incident Handling",
        "Support incident handling: detection, analysis, containment and recovery.",
        "Original request and response bodies are sealed so an investigator can unseal or "
        "replay an exchange; replays are themselves logged.",
        _ir4,
    ),
    Control(
        "SC-8",
        ("sc-8",),
        "Transmission Confidentiality and Integrity",
        "Protect the confidentiality and integrity of transmitted information.",
        "The listener speaks HTTPS (TLS 1.2 or later, optional client certificates) and "
        "upstreams may be reached over HTTPS (verified against a CA); plain-HTTP upstreams "
        "and a plain-HTTP listener on a network address are reported here as gaps.",
        _sc8,
    ),
    Control(
        "SC-28",
        ("sc-28",),
        "Protection of Information at Rest",
        "Protect information at rest.",
        "Original bodies are stored only AES-256-GCM encrypted (keys outside the log); "
        "entries hold hashes and masked counts, never raw values.",
        _sc28,
    ),
)


NO_CONFIG = (
    "judged from the gateway's configuration, which was not given (no -c): run "
    "`gateway evidence` with the replicas' gateway.toml to assess it"
)


def declare(scope: Scope) -> list[tuple[Control, Pending]]:
    """Every control's measures, declared on `scope` before the pass that fills them."""
    return [(control, _declared(control, scope)) for control in CONTROLS]


def _declared(control: Control, scope: Scope) -> Pending:
    """A control that reads the configuration is not assessed in a report made without one
    (it may read it when declaring its measures or when judging them)."""
    not_assessed = Outcome(Status.NOT_ASSESSED, NO_CONFIG, [], [])
    try:
        pending = control.evaluate(scope)
    except ConfigNotGiven:
        return lambda: not_assessed

    def judged() -> Outcome:
        try:
            return pending()
        except ConfigNotGiven:
            return not_assessed

    return judged
