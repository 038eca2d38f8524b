"""Reading subjects and groups out of claims, wherever an IdP puts them."""

from __future__ import annotations

from typing import Any

from gateway.config import ClaimPath


def claim_at(claims: dict[str, Any], path: ClaimPath) -> Any:
    """A claim by name, dotted path (`realm_access.roles`) or list of keys.

    For a dotted string a literal key with dots wins; a list of keys reaches names that
    contain dots themselves (Kubernetes' `kubernetes.io`).
    """
    if isinstance(path, str):
        if path in claims:
            return claims[path]
        path = tuple(path.split("."))
    value: Any = claims
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def groups_from(value: Any) -> frozenset[str]:
    """Groups as a list of strings or one space-separated string; anything else is none."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def shown(path: ClaimPath) -> str:
    """A claim path as an operator wrote it, for error messages."""
    return path if isinstance(path, str) else ".".join(path)
