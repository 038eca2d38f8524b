"""Validate OSCAL documents against NIST's own OSCAL 1.2.3 JSON schema (draft-07).

The schema's patterns use Unicode classes (\\p{L}) that Python's `re` rejects, so `pattern` is
checked with the `regex` package; every other keyword is jsonschema's Draft 7 validator.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import orjson
import regex
from jsonschema import Draft7Validator, ValidationError, validators

SCHEMA = Path(__file__).parent / "vectors" / "oscal" / "oscal_complete_schema.json"
SCHEMA_VERSION = "1.2.3"


def _pattern(validator, pattern: str, instance, schema):
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _compiled(pattern: str) -> regex.Pattern:
    return regex.compile(pattern)


@cache
def _validator() -> Draft7Validator:
    cls = validators.extend(Draft7Validator, {"pattern": _pattern})
    return cls(orjson.loads(SCHEMA.read_bytes()), format_checker=Draft7Validator.FORMAT_CHECKER)


def oscal_errors(path: Path) -> list[str]:
    """Every schema violation of the OSCAL document at `path`, as `json/path: message`."""
    document = orjson.loads(path.read_bytes())
    found = [leaf for e in _validator().iter_errors(document) for leaf in _leaves(e)]
    return sorted({f"{e.json_path}: {e.message[:300]}" for e in found})


def _leaves(error: ValidationError) -> list[ValidationError]:
    """The errors inside a failed oneOf/anyOf that reached into the document, else the error.

    The schema's root is a oneOf over the OSCAL models; its own message names no field.
    """
    inner = [leaf for e in error.context or [] for leaf in _leaves(e)]
    deep = [e for e in inner if len(e.absolute_path) > len(error.absolute_path)]
    return deep or [error]
