"""Replay: send a recorded request to its upstream again and compare the answers.

The audit log has one writer, the running gateway, so replay runs inside it (see
`POST /_gateway/audit/replay/{seq}` in ops.py). An investigator names an `inference` or
`decision` entry; the gateway unseals the original request the decision sealed, sends it through
the connection's normal upstream pool with the connection's own credential, masks the new
answer with the rule that governed the original, and records a `replay` entry naming the
investigator and sealing the new unmasked answer. The investigator sees masked text only.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import headers as hdr
from gateway.audit import AuditLog, AuditUnavailable, KeyFileError, SealError, unseal
from gateway.auditing import Auditor, unavailable
from gateway.encoding import DecodedBody, ask_identity, coding
from gateway.errors import GatewayError
from gateway.identity import Identity
from gateway.masking import RuleMasking
from gateway.media import media_type
from gateway.proxy import split_route
from gateway.runtime import Route, Runtime
from gateway.upstream import BodyReader

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the log holds about one allowed exchange."""

    decision: dict[str, Any]  # the entry that sealed the request
    request: bytes
    inference_seq: int | None  # the entry that sealed the recorded response, if it completed
    response: bytes | None


@dataclass(frozen=True, slots=True)
class Investigator:
    """Who asked for the replay, and the request that asked (for the audit entry)."""

    identity: Identity
    request_id: str
    client: str


async def replay(
    runtime: Runtime,
    auditor: Auditor,
    sealing_key: Path,
    seq: int,
    investigator: Investigator,
    connection: str | None = None,
) -> dict[str, Any]:
    """Replay entry `seq` and record it; returns the result served to the investigator.

    Raises:
        GatewayError: 404 no such entry or connection, 409 the entry cannot be replayed,
            502/504 upstream or masking failed (recorded first), 503 the log cannot be written.
    """
    log = auditor.log
    if log is None:
        raise GatewayError(404, "not_found", "this gateway has no audit log configured")
    # Reading entries and unsealing is file I/O (a decision's exchange may be far behind it).
    recorded = await asyncio.to_thread(load, log, seq, sealing_key)
    decision = recorded.decision
    name = connection or decision["connection"]
    route = runtime.routes.get(name)
    if route is None:
        raise GatewayError(404, "unknown_connection", f"no connection named {name!r}")
    if not log.available:
        raise unavailable(AuditUnavailable("audit log cannot be written"))  # fail closed
    identity = investigator.identity
    entry: dict[str, Any] = {
        "type": "replay",
        "replayed_seq": seq,
        "decision_seq": decision["seq"],
        "recorded_seq": recorded.inference_seq,
        "request_id": investigator.request_id,
        "client": investigator.client,
        "subject": identity.subject,
        "groups": sorted(identity.groups),
        "connection": name,
        "method": decision["method"],
        "path": decision["path"],
        "model": decision.get("model"),
        "rule": decision.get("rule"),
        "request_sha256": hashlib.sha256(recorded.request).hexdigest(),
    }
    # Like any request: on the record (durable) before anything reaches the upstream.
    replay_seq = await auditor.append(entry)
    result: dict[str, Any] = {
        "type": "replay.result",
        "replay_seq": replay_seq,
        "replayed_seq": seq,
        "request_id": investigator.request_id,
        "subject": identity.subject,
        "connection": name,
    }
    masking = runtime.masking.get(decision.get("rule", ""))
    body, shown, recorded_shown, status, failure = b"", b"", None, 0, None
    try:
        status, kind, body = await _send(route, decision, recorded.request, investigator)
        result.update(
            status=status,
            bytes_upstream=len(body),
            response_sha256=hashlib.sha256(body).hexdigest(),
        )
        shown, result["masked"] = mask(masking, kind, body)
        if recorded.response is not None:
            recorded_shown, _ = mask(masking, kind, recorded.response)
    except GatewayError as exc:
        failure = exc
        result.update(error=exc.message, code=exc.code)
    result_seq = await auditor.append(result, {"response": body})
    if failure is not None:
        raise failure
    return {
        "replay_seq": replay_seq,
        "result_seq": result_seq,
        "replayed_seq": seq,
        "recorded_seq": recorded.inference_seq,
        "connection": name,
        "status": status,
        "response": shown.decode("utf-8", "replace"),
        "recorded": None if recorded_shown is None else recorded_shown.decode("utf-8", "replace"),
    }


def load(log: AuditLog, seq: int, sealing_key: Path) -> Recorded:
    """The decision behind entry `seq`, its unsealed request and the recorded response."""
    entry = _read(log, seq)
    if entry["type"] == "inference" and "decision_seq" in entry:
        decision, inference = _read(log, entry["decision_seq"]), entry
    elif entry["type"] == "decision":
        decision, inference = entry, _inference_of(log, seq)
    else:
        raise GatewayError(
            409,
            "not_replayable",
            f"entry {seq} is a {entry['type']!r} entry; only allowed exchanges "
            "(decision or inference entries) can be replayed",
        )
    request = _unseal(log, decision, "request", sealing_key)
    if request is None:
        raise GatewayError(409, "not_replayable", f"entry {decision['seq']} has no sealed request")
    response = _unseal(log, inference, "response", sealing_key) if inference else None
    return Recorded(decision, request, inference["seq"] if inference else None, response)


def mask(masking: RuleMasking | None, kind: str, body: bytes) -> tuple[bytes, dict[str, int]]:
    """A body as the rule's caller would see it (GatewayError 502 if it cannot be masked)."""
    return (body, {}) if masking is None else masking.mask_body(kind, body)


async def _send(
    route: Route, decision: dict[str, Any], body: bytes, investigator: Investigator
) -> tuple[int, str, bytes]:
    """The request again, as the proxy would send it; the whole answer read."""
    target = route.connection.base_path + split_route(decision["path"])[1]
    # Entries keep no request headers; the model APIs behind the gateway take JSON bodies.
    sent = [(b"content-type", b"application/json")] if body else []
    headers = hdr.request_headers_for_upstream(
        sent, route.pool.host_header, investigator.request_id.encode(), len(body)
    )
    headers = await route.auth.apply(
        decision["method"], route.url(target), ask_identity(headers), body
    )
    response = await route.pool.request(decision["method"], target, headers, body)
    try:
        compressed = coding(response.headers)
        reader: BodyReader = response if compressed is None else DecodedBody(response, compressed)
        chunks = bytearray()
        while (chunk := await reader.read()) is not None:
            chunks += chunk
    finally:
        response.discard()  # no-op once the body was read to the end
    kind = media_type(hdr.get(response.headers, b"content-type"))
    redactor = route.redactors.get(route.auth.secrets())
    if redactor is not None:  # an echo of the credential is neither shown nor sealed
        return response.status, kind, redactor.redact(bytes(chunks))[0]
    return response.status, kind, bytes(chunks)


def _read(log: AuditLog, seq: int) -> dict[str, Any]:
    try:
        return log.read_entry(seq)
    except IndexError:
        message = f"no entry {seq}; the log has {log.committed}"
        raise GatewayError(404, "not_found", message) from None


def _inference_of(log: AuditLog, decision_seq: int) -> dict[str, Any] | None:
    """The exchange entry of a decision: written after it, usually within a few entries."""
    for seq in range(decision_seq + 1, log.committed):
        entry = log.read_entry(seq)
        if entry["type"] == "inference" and entry.get("decision_seq") == decision_seq:
            return entry
    return None


def _unseal(log: AuditLog, entry: dict[str, Any], name: str, key: Path) -> bytes | None:
    """A sealed body; b"" when an empty body was not sealed; None when none was recorded."""
    if name not in entry.get("sealed", {}):
        return b"" if entry.get(f"{name}_sha256") == EMPTY_SHA256 else None
    try:
        return unseal(log.directory, entry, name, key)
    except (SealError, KeyFileError, OSError) as exc:
        raise GatewayError(
            500, "seal_error", f"cannot unseal entry {entry['seq']}: {exc}"
        ) from None
