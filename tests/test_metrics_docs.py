"""The metrics table in docs/operations.md lists exactly what a running gateway exports."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

DOCS = Path(__file__).parent.parent / "docs" / "operations.md"


def documented() -> set[str]:
    """Metric names in the first column of the table under `## Metrics`."""
    section = DOCS.read_text().split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(gateway_[a-z_]+)` \|", section, flags=re.MULTILINE))


def exported(text: str) -> set[str]:
    """Families a Prometheus text page declares (counters' `_created` companions aside)."""
    declared = re.findall(r"^# TYPE (\S+) \S+$", text, flags=re.MULTILINE)
    return {name for name in declared if not name.endswith("_created")}


def test_metrics_table_matches_what_the_gateway_exports(gateway) -> None:
    page = httpx.get(f"{gateway.url}/_gateway/metrics", timeout=10)
    assert page.status_code == 200
    names = {n for n in exported(page.text) if n.startswith("gateway_")}
    assert "gateway_masked_entities_total" in names
    assert documented() == names
