"""What a verified caller is, and how a refusal to authenticate looks on the wire."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified caller; `subject` carries its issuer's `subject_prefix` already."""

    subject: str
    groups: frozenset[str]
    expires_at: float
    issuer: str  # the issuer's configured name, recorded in audit entries and the access log
    key: bytes | None = None  # fingerprint of the JWKS key that verified it; None: introspected


class AuthError(GatewayError):
    """401 with an RFC 6750 challenge; the reason names what failed, never the token."""

    def __init__(self, reason: str, *, invalid_token: bool = True) -> None:
        challenge = b'Bearer realm="gateway"'
        if invalid_token:
            challenge += b', error="invalid_token", error_description="' + reason.encode() + b'"'
        super().__init__(401, "unauthenticated", reason, [(b"www-authenticate", challenge)])


def bearer_token(authorization: bytes | None) -> str:
    if authorization is None:
        raise AuthError("missing bearer token", invalid_token=False)
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'", invalid_token=False)
    return token.strip()
