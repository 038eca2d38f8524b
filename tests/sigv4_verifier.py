"""AWS Signature Version 4 verification written from AWS's specification, the way a service
checks a request it received. Independent of the gateway's signer (botocore): it shares no code.

Spec: "Create a canonical request for Signature Version 4" and "Create a string to sign" in the
AWS IAM User Guide (docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;\-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
MAX_SKEW = datetime.timedelta(minutes=15)


class SignatureError(ValueError):
    """Why a request's signature does not verify."""


@dataclass(frozen=True)
class Secret:
    access_key: str
    secret_key: str
    session_token: str | None = None


def _uri_encode(text: str, safe: str) -> str:
    """RFC 3986 unreserved characters stay; every other byte of the UTF-8 is %XX (upper case)."""
    return quote(text, safe="-_.~" + safe)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, and empty segments collapsed, as AWS services other than S3 do."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    normalized = "/" + "/".join(out)
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return normalized


def canonical_uri(path: str) -> str:
    return _uri_encode(_remove_dot_segments(path or "/"), safe="/")


def canonical_query(query: str) -> str:
    """Each name and value decoded, then URI-encoded; sorted by name, then value."""
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((_uri_encode(unquote(name), ""), _uri_encode(unquote(value), "")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _trim(value: str) -> str:
    return " ".join(value.split())


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    signed: list[str],
    body: bytes,
) -> str:
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(_trim(value))
    missing = [name for name in signed if name not in by_name]
    if missing:
        raise SignatureError(f"signed header {missing[0]} is not in the request")
    lines = "".join(f"{name}:{','.join(by_name[name])}\n" for name in signed)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            lines,
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def string_to_sign(timestamp: str, scope: str, request: str) -> str:
    return "\n".join([ALGORITHM, timestamp, scope, hashlib.sha256(request.encode()).hexdigest()])


def verify(
    secret: Secret,
    region: str,
    service: str,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    now: datetime.datetime | None = None,
) -> None:
    """Raise SignatureError unless the request carries a valid signature by `secret`."""
    values = {name.lower(): value for name, value in headers}
    match = AUTHORIZATION.match(values.get("authorization", ""))
    if match is None:
        raise SignatureError("no AWS4-HMAC-SHA256 Authorization header")
    if match["key"] != secret.access_key:
        raise SignatureError("unknown access key")
    if (match["region"], match["service"]) != (region, service):
        raise SignatureError("credential scope names another region or service")
    timestamp = values.get("x-amz-date", "")
    if timestamp[:8] != match["date"]:
        raise SignatureError("x-amz-date does not match the credential scope")
    signed = match["signed"].split(";")
    if signed != sorted(signed) or "host" not in signed or "x-amz-date" not in signed:
        raise SignatureError("signed headers must be sorted and include host and x-amz-date")
    if secret.session_token is not None:
        if values.get("x-amz-security-token") != secret.session_token:
            raise SignatureError("missing or wrong x-amz-security-token")
        if "x-amz-security-token" not in signed:
            raise SignatureError("x-amz-security-token is not signed")
    if now is not None:
        when = datetime.datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        if abs(now - when) > MAX_SKEW:
            raise SignatureError("request time too skewed")
    path, _, query = target.partition("?")
    request = canonical_request(method, path, query, headers, signed, body)
    scope = f"{match['date']}/{region}/{service}/aws4_request"
    key = signing_key(secret.secret_key, match["date"], region, service)
    expected = hmac.new(key, string_to_sign(timestamp, scope, request).encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), match["signature"]):
        raise SignatureError("signature does not match")
