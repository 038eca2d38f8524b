"""Caller identity: bearer tokens from one or more issuers, verified and cached.

`verifier` is the entry point (picks the issuer, caches); `jwt_check` verifies one issuer's
JWTs with the keys `jwks` keeps; `introspection` asks an issuer about opaque tokens (RFC 7662);
`claims` reads subjects and groups; `model` holds the verified identity and the 401 it is
refused with.
"""

from gateway.identity.model import AuthError, Identity, bearer_token
from gateway.identity.verifier import TokenVerifier

__all__ = ["AuthError", "Identity", "TokenVerifier", "bearer_token"]
