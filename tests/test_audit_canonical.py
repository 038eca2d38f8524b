"""Canonical JSON for entries: sorted keys, no whitespace, and no number JSON cannot carry."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.canonical import CanonicalError, canonical

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(map(finite, value.values()))
    if isinstance(value, list):
        return all(map(finite, value))
    return True


@given(st.dictionaries(st.text(), values, max_size=6))
def test_an_entry_is_refused_exactly_when_it_holds_a_non_finite_number(entry: dict) -> None:
    """Anywhere in it, beside nulls or not (orjson alone would write NaN as null)."""
    if finite(entry):
        data = canonical(entry)
        assert data == orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS)
    else:
        with pytest.raises(CanonicalError, match="non-finite number"):
            canonical(entry)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_number_deep_inside_is_refused(bad: float) -> None:
    with pytest.raises(CanonicalError):
        canonical({"type": "x", "usage": [{"tokens": 3, "rate": bad}], "note": "null"})


def test_a_root_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(CanonicalError, match="JSON object"):
        canonical([1, 2])  # type: ignore[arg-type]
