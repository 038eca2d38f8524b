"""assessment-results.json: the report as an OSCAL 1.2.3 Assessment Results document.

One result for the period; per control an observation carrying the measured evidence (and
links into evidence.json for the entries and proofs) and, once it was judged, one finding per
OSCAL control id. OSCAL's objective states are only satisfied / not-satisfied and a finding must
carry one, so a not-assessed control has its observation (prop `assessment-status`
not-assessed, and why) but no finding: claiming either state would be untrue. UUIDs are
version 5, derived from the logs' signed roots and the period, so the same evidence gives the
same document. tests/ validates it against NIST's OSCAL 1.2.3 JSON schema.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.evidence.controls import Status
from gateway.evidence.render_json import JSON_FILE, time

if TYPE_CHECKING:
    from gateway.evidence.report import Assessed, Report

OSCAL_FILE = "assessment-results.json"
OSCAL_VERSION = "1.2.3"  # the NIST schema release the document is validated against
# Namespace of our own property names: an identifier, never fetched (.invalid is reserved, so it
# can never clash with a real one; OSCAL models want an http(s) URI here).
NS = "https://inference-gateway.invalid/ns/evidence"
NAMESPACE = uuid.UUID("9d8c1a52-6a0e-4f55-9a34-57c1f3b0e0a4")  # for uuid5; never change


def render_oscal(report: Report) -> dict[str, Any]:
    scope = report.scope
    config = scope.given_config  # None: made from the logs alone
    seed = "|".join(
        [time(scope.period.since), time(scope.period.until), config.sha256 if config else ""]
        + [f"{log.origin}:{log.checkpoint.size}:{log.checkpoint.root.hex()}" for log in scope.logs]
    )

    def uid(*parts: str) -> str:
        return str(uuid.uuid5(NAMESPACE, "|".join([seed, *parts])))

    sample_index = {ref: i for i, ref in enumerate(report.samples)}
    observations, findings = [], []
    for i, assessed in enumerate(report.controls):
        obs_uuid = uid("observation", assessed.control.id)
        observations.append(_observation(assessed, i, obs_uuid, sample_index, report))
        if assessed.outcome.status is not Status.NOT_ASSESSED:
            findings.extend(
                _finding(assessed, oscal_id, uid("finding", oscal_id), obs_uuid)
                for oscal_id in assessed.control.oscal_ids
            )
    since, until = time(scope.period.since), time(scope.period.until)
    unjudged = [
        f"{a.control.id} ({a.outcome.reason})"
        for a in report.controls
        if a.outcome.status is Status.NOT_ASSESSED
    ]
    return {
        "assessment-results": {
            "uuid": uid("assessment-results"),
            "metadata": {
                "title": f"NIST SP 800-53 evidence from the inference gateway, {since} to {until}",
                "last-modified": time(report.generated),
                "version": __version__,
                "oscal-version": OSCAL_VERSION,
                "remarks": "Computed by `gateway evidence` from verified audit logs"
                + (" and the gateway configuration" if config else " alone (no configuration)")
                + "; see docs/evidence.md.",
            },
            "import-ap": {
                "href": f"{JSON_FILE}#/controls",
                "remarks": "The assessment plan is fixed: the control table in evidence.json "
                "(what each control asks, how the gateway meets it, what is measured).",
            },
            "results": [
                {
                    "uuid": uid("result"),
                    "title": "Audit log evidence for the period",
                    "description": f"Period {since} to {until} (end excluded): "
                    f"{scope.period.describe()}. Logs verified: "
                    + "; ".join(log.report.summary() for log in scope.logs),
                    "start": since,
                    "end": until,
                    "props": [
                        *([_prop("config-sha256", config.sha256)] if config else []),
                        *(_prop("log-origin", log.origin) for log in scope.logs),
                    ],
                    "reviewed-controls": {
                        "control-selections": [
                            {
                                "include-controls": [
                                    {"control-id": oscal_id}
                                    for a in report.controls
                                    for oscal_id in a.control.oscal_ids
                                ]
                            }
                        ]
                    },
                    "observations": observations,
                    "findings": findings,
                    **(
                        {"remarks": "Not assessed, so without a finding: " + "; ".join(unjudged)}
                        if unjudged
                        else {}
                    ),
                }
            ],
        }
    }


def _prop(name: str, value: str) -> dict[str, str]:
    return {"name": name, "ns": NS, "value": value}


def _observation(
    assessed: Assessed,
    index: int,
    obs_uuid: str,
    sample_index: dict[tuple[str, int], int],
    report: Report,
) -> dict[str, Any]:
    control, outcome = assessed.control, assessed.outcome
    lines = [f"{control.id} {control.title}: {outcome.status}. {outcome.reason}."]
    for m in outcome.measures:
        per_log = ", ".join(f"{o}: {len(s)}" for o, s in (m.seqs or {}).items())
        detail = f" ({per_log})" if per_log else ("; " + "; ".join(m.items) if m.items else "")
        lines.append(f"{m.name} = {m.total}: {m.description}{detail}")
    evidence = [
        {
            "href": f"{JSON_FILE}#/controls/{index}",
            "description": f"{control.id} measures with the seqs of every entry counted, per log",
        }
    ]
    evidence += [
        {
            "href": f"{JSON_FILE}#/samples/{sample_index[ref]}",
            "description": f"entry {ref[1]} of {ref[0]} with its inclusion proof",
        }
        for ref in assessed.samples
    ]
    return {
        "uuid": obs_uuid,
        "title": f"{control.id} {control.title}",
        "description": "\n".join(lines),
        "props": [_prop("assessment-status", str(outcome.status))],
        "methods": ["TEST", "EXAMINE"],
        "types": ["control-objective"],
        "collected": time(report.generated),
        "relevant-evidence": evidence,
        **({"remarks": "Gaps: " + "; ".join(outcome.gaps)} if outcome.gaps else {}),
    }


def _finding(assessed: Assessed, oscal_id: str, uid: str, obs_uuid: str) -> dict[str, Any]:
    outcome = assessed.outcome
    satisfied = outcome.status is Status.SATISFIED
    target = {
        "type": "statement-id",
        "target-id": f"{oscal_id}_smt",
        "status": {"state": str(outcome.status), "reason": "pass" if satisfied else "fail"},
    }
    return {
        "uuid": uid,
        "title": f"{assessed.control.id}: {outcome.status}",
        "description": outcome.reason,
        "props": [_prop("assessment-status", str(outcome.status))],
        "target": target,
        "related-observations": [{"observation-uuid": obs_uuid}],
    }
