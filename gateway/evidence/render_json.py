"""evidence.json: the machine-readable report, every figure traceable to entries per log.

Seq lists are written as inclusive ranges, [[first, last], ...], so a figure over a long run of
entries stays small while naming every entry it counted. docs/evidence.md explains each field.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import orjson

from gateway.audit.central import witnessed
from gateway.evidence.facts import Measure

if TYPE_CHECKING:
    from gateway.evidence.report import Report

JSON_FILE = "evidence.json"
FORMAT = "inference-gateway/evidence/1"


def dump(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def time(value) -> str:
    """RFC 3339 UTC with microseconds, like the log's own `ts`."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ranges(seqs: list[int]) -> list[list[int]]:
    """Sorted seqs as inclusive [first, last] runs."""
    out: list[list[int]] = []
    for seq in sorted(seqs):
        if out and out[-1][1] + 1 == seq:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def measure(m: Measure) -> dict[str, Any]:
    body: dict[str, Any] = {"name": m.name, "description": m.description, "total": m.total}
    if m.seqs is None:
        body["items"] = list(m.items)
    else:
        body["by_log"] = {
            origin: {"count": len(seqs), "seqs": ranges(seqs)} for origin, seqs in m.seqs.items()
        }
    return body


def render_json(report: Report) -> dict[str, Any]:
    scope = report.scope
    config = scope.given_config  # None: made from the logs alone
    return {
        "format": FORMAT,
        "generated": time(report.generated),
        "period": {
            "since": time(scope.period.since),
            "until": time(scope.period.until),
            "since_given": scope.period.since_given,
            "until_given": scope.period.until_given,
            "chosen": scope.period.describe(),
        },
        "config": {"path": config.path, "sha256": config.sha256} if config else None,
        "logs": [_log(log) for log in scope.logs],
        "figures": [measure(m) for m in report.headline],
        "masked_by_entity": report.masked_by_entity,
        "usage": [
            {
                "issuer": row.issuer,
                "subject": row.subject,
                "connection": row.connection,
                "model": row.model,
                "served_models": sorted(row.served_models),
                "requests": row.requests,
                "allowed": row.allowed,
                "denied": row.denied,
                "held": row.held,
                "exchanges": row.exchanges,
                "tokens_in": row.tokens_in,
                "tokens_out": row.tokens_out,
                "first_seen": row.first_seen,
                "last_seen": row.last_seen,
                "by_log": {o: ranges(seqs) for o, seqs in row.seqs.items()},
            }
            for row in report.usage
        ],
        "series": {
            "bucket_seconds": report.series.width.total_seconds(),
            "starts": [time(t) for t in report.series.starts],
            "lines": {
                name: {"total": report.series.totals(name), "by_log": by_log}
                for name, by_log in report.series.lines.items()
            },
        },
        "controls": [
            {
                "id": a.control.id,
                "oscal_ids": list(a.control.oscal_ids),
                "title": a.control.title,
                "asks": a.control.asks,
                "how": a.control.how,
                "status": str(a.outcome.status),
                "reason": a.outcome.reason,
                "gaps": a.outcome.gaps,
                "measures": [measure(m) for m in a.outcome.measures],
                "samples": [{"log": origin, "seq": seq} for origin, seq in a.samples],
            }
            for a in report.controls
        ],
        "samples": list(report.samples.values()),
    }


def _log(log) -> dict[str, Any]:
    cp = log.checkpoint
    return {
        "origin": log.origin,
        "directory": str(log.directory),
        "verification": log.report.summary(),
        "warnings": log.report.warnings,
        "entries": log.report.size,
        "period_seqs": ranges([e["seq"] for e in log.period]),
        "unsigned_period_seqs": ranges(log.unsigned),
        "checkpoint": {
            "size": cp.size,
            "root": cp.root.hex(),
            "root_base64": base64.b64encode(cp.root).decode(),
            "note": log.note,
        },
        "latest_checkpoint": {"size": log.latest.size, "root": log.latest.root.hex()},
        "checkpoints_verified": log.report.checkpoints,
        "sealed_blobs_verified": log.report.sealed_blobs,
        "verifier": {"key": log.verifier.encode(), "pinned": log.pinned},
        "witnessed": witnessed(log.directory),  # None: not read from a central store
    }
