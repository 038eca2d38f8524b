"""One issuer's JWTs: signature by the issuer's own keys, then audience, expiry and claims."""

from __future__ import annotations

from typing import Any

import jwt

from gateway.config import IdentityConfig
from gateway.identity.claims import claim_at, groups_from, shown
from gateway.identity.jwks import JwksCache, SigningKey
from gateway.identity.model import AuthError, Identity


class NoKeyVerifies(AuthError):
    """No cached key verifies the token: a JWKS refresh might find the one that does."""


class JwtVerifier:
    """Checks a JWT whose `iss` named this issuer; only this issuer's keys are tried."""

    def __init__(self, config: IdentityConfig, jwks: JwksCache) -> None:
        self.config = config
        self.jwks = jwks
        self.algorithms = frozenset(config.algorithms)

    async def verify(self, token: str, header: dict[str, Any]) -> Identity:
        claims, key = await self.claims(token, header)
        return identity_from(self.config, claims, float(claims["exp"]), key.fingerprint)

    async def claims(self, token: str, header: dict[str, Any]) -> tuple[dict[str, Any], SigningKey]:
        """The verified claims and the key that verified them; AuthError if none does."""
        alg = header.get("alg")
        if alg not in self.algorithms:
            named = alg if alg in jwt.algorithms.get_default_algorithms() else "unrecognised"
            raise AuthError(f"token algorithm {named} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed token (kid is not a string)")
        try:
            return self._check(token, alg, kid)
        except NoKeyVerifies:
            # The IdP may have rotated since the last fetch: look once more, rate-limited.
            if not await self.jwks.refresh_if_due():
                raise
            return self._check(token, alg, kid)

    def _check(self, token: str, alg: str, kid: str | None) -> tuple[dict[str, Any], SigningKey]:
        """The claims and the key that verified them, from the keys cached now."""
        candidates = self.jwks.candidates(kid)
        if not candidates:
            raise NoKeyVerifies("unknown signing key (kid not in the issuer's JWKS)")
        fitting = [key for key in candidates if key.fits(alg)]
        if not fitting:
            raise AuthError(f"token algorithm {alg} does not match the signing key")
        for key in fitting:
            try:
                claims = jwt.decode(
                    token,
                    key=key.key,
                    algorithms=[alg],
                    audience=self.config.audience,
                    issuer=self.config.issuer,
                    leeway=self.config.leeway_s,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue  # without a kid, another key of the issuer may be the signer
            except jwt.PyJWTError as exc:
                raise AuthError(_reason(exc)) from None
            return claims, key
        raise NoKeyVerifies("bad signature")


def identity_from(
    config: IdentityConfig, claims: dict[str, Any], expires_at: float, key: bytes | None
) -> Identity:
    """Subject (with the issuer's prefix) and groups from verified claims."""
    subject = claim_at(claims, config.subject_claim)
    if not isinstance(subject, str) or not subject:
        raise AuthError(f"token has no {shown(config.subject_claim)!r} claim")
    groups = groups_from(claim_at(claims, config.groups_claim))
    return Identity(config.subject_prefix + subject, groups, expires_at, config.name, key)


def _reason(exc: jwt.PyJWTError) -> str:
    """A short, token-free reason for a verification failure."""
    reasons: list[tuple[type[jwt.PyJWTError], str]] = [
        (jwt.ExpiredSignatureError, "token expired"),
        (jwt.ImmatureSignatureError, "token not yet valid (nbf/iat in the future)"),
        (jwt.InvalidAudienceError, "wrong audience"),
        (jwt.InvalidIssuerError, "wrong issuer"),
        (jwt.InvalidSignatureError, "bad signature"),
        (jwt.InvalidAlgorithmError, "token algorithm is not allowed"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has no {exc.claim!r} claim"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    return "invalid token"
