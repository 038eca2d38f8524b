"""Demo OIDC issuer: discovery, JWKS, and tokens minted for whoever asks.

    python -m gateway.demo.issuer --host 127.0.0.1 --port 0

NOT a real identity provider: `POST /_demo/token` signs any subject, groups and claims it is
given, and its login page (`/authorize`, for the approvals page's sign-in) offers the demo
identities without a password. It exists so `gateway demo` and the tests can hand the gateway
real RS256, ES256 and EdDSA tokens, and so the tests can stage what a real IdP does to a
gateway: key rotation (`/_demo/rotate`), outages (`/_demo/outage`), expired, early, foreign and
wrongly-keyed tokens (`/_demo/token` options), and the public key for key-confusion forgeries.
Keys live only in memory and die with the process.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.demo._serve import base_parser, error_body, error_response, serve, start_app
from gateway.demo.signin import DemoSignIn

ALGORITHMS = ("RS256", "ES256", "EdDSA")
DEFAULT_AUDIENCE = "inference-gateway"
DEFAULT_TTL_S = 3600
GROUPS_CLAIM = "groups"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_GENERATORS = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}
# RFC 7638: the members a JWK thumbprint covers, per key type.
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint, used as the kid so a kid names exactly one public key."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(orjson.dumps(members, option=orjson.OPT_SORT_KEYS)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key and the public JWK the issuer publishes for it."""

    alg: str
    private: PrivateKey
    jwk: dict[str, Any]

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    @classmethod
    def generate(cls, alg: str) -> SigningKey:
        if alg not in _GENERATORS:
            raise ValueError(f"unsupported alg {alg!r}; use one of {', '.join(ALGORITHMS)}")
        private = _GENERATORS[alg]()
        public = jwt.get_algorithm_by_name(alg).to_jwk(private.public_key(), as_dict=True)
        return cls(alg, private, {**public, "kid": thumbprint(public), "alg": alg, "use": "sig"})


class DemoIssuer:
    """Signing keys (one current key per algorithm), token minting and the HTTP handlers."""

    def __init__(self, url: str = "") -> None:
        # The base URL is the `iss` claim; start_issuer sets it once the port is known.
        self.url = url
        self.down = False
        self.counts = {"jwks_fetches": 0, "discovery_fetches": 0}
        self._keys = [SigningKey.generate(alg) for alg in ALGORITHMS]

    def current(self, alg: str) -> SigningKey:
        """The newest key for `alg`, the one new tokens are signed with."""
        for key in reversed(self._keys):
            if key.alg == alg:
                return key
        raise ValueError(f"no key for alg {alg!r}; use one of {', '.join(ALGORITHMS)}")

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk for key in self._keys]}

    def rotate(self, alg: str = "RS256", *, keep_old: bool = False) -> tuple[str, str | None]:
        """Publish a new key for `alg` and sign with it; drop the previous one unless keep_old.

        Returns the new kid and the removed kid (None when the old key was kept).
        """
        old = self.current(alg)
        new = SigningKey.generate(alg)
        if not keep_old:
            self._keys.remove(old)
        self._keys.append(new)
        return new.kid, None if keep_old else old.kid

    def mint(
        self,
        sub: str,
        groups: list[str] | str,
        /,
        *,
        audience: str | list[str] = DEFAULT_AUDIENCE,
        ttl_s: int = DEFAULT_TTL_S,
        alg: str = "RS256",
        kid: str | None = None,
        omit_kid: bool = False,
        **claims: Any,
    ) -> str:
        """Sign a token for `sub` in `groups`; `claims` add to or override the standard ones.

        A negative ttl_s mints an already-expired token; `kid` overrides the header's kid
        (e.g. to one the JWKS does not have) while still signing with the current key;
        `omit_kid` leaves the kid out, as some IdPs do.
        """
        key = self.current(alg)
        now = int(time.time())
        payload = {
            "iss": self.url,
            "sub": sub,
            "aud": audience,
            "iat": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
            GROUPS_CLAIM: groups,
            **claims,
        }
        headers = {} if omit_kid else {"kid": kid or key.kid}
        return jwt.encode(payload, key.private, algorithm=alg, headers=headers)

    def public_key_pem(self, alg: str = "RS256") -> str:
        public = self.current(alg).private.public_key()
        return public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def discovery(self) -> dict[str, Any]:
        """OIDC discovery metadata; only endpoints that exist are listed."""
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks",
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": list(ALGORITHMS),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "claims_supported": [
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "nbf",
                "jti",
                "nonce",
                GROUPS_CLAIM,
            ],
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._get_discovery)
        app.router.add_get("/jwks", self._get_jwks)
        DemoSignIn(self.mint).routes(app)
        app.router.add_post("/_demo/token", self._post_token)
        app.router.add_post("/_demo/rotate", self._post_rotate)
        app.router.add_post("/_demo/outage", self._post_outage)
        app.router.add_get("/_demo/stats", self._get_stats)
        app.router.add_get("/_demo/public-key-pem", self._get_public_key_pem)
        return app

    def _published(self, counter: str, document: dict[str, Any]) -> web.Response:
        """Serve discovery or JWKS, counting every fetch, outages included."""
        self.counts[counter] += 1
        if self.down:
            return _error(503, "the demo issuer is in a staged outage")
        return _json(document)

    async def _get_discovery(self, request: web.Request) -> web.Response:
        return self._published("discovery_fetches", self.discovery())

    async def _get_jwks(self, request: web.Request) -> web.Response:
        return self._published("jwks_fetches", self.jwks())

    async def _post_token(self, request: web.Request) -> web.Response:
        spec = await _json_body(request)
        claims = spec.get("claims") or {}
        groups = spec.get("groups", [])
        if not isinstance(spec.get("sub"), str) or not isinstance(groups, list):
            return _error(400, "'sub' must be a string and 'groups' a list")
        if not isinstance(claims, dict):
            return _error(400, "'claims' must be an object")
        try:
            if spec.get("groups_as_string"):
                groups = " ".join(groups)
            extra = {name: spec[name] for name in ("iss",) if name in spec}
            if "nbf_offset_s" in spec:
                extra["nbf"] = int(time.time()) + spec["nbf_offset_s"]
            token = self.mint(
                spec["sub"],
                groups,
                audience=spec.get("aud", DEFAULT_AUDIENCE),
                ttl_s=spec.get("exp_offset_s", spec.get("ttl_s", DEFAULT_TTL_S)),
                alg=spec.get("alg", "RS256"),
                kid=spec.get("kid"),
                omit_kid=bool(spec.get("omit_kid")),
                **extra,
                **claims,
            )
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        return _json({"token": token})

    async def _post_rotate(self, request: web.Request) -> web.Response:
        spec = await _json_body(request)
        try:
            kid, removed = self.rotate(
                spec.get("alg", "RS256"), keep_old=bool(spec.get("keep_old"))
            )
        except ValueError as exc:
            return _error(400, str(exc))
        return _json({"kid": kid, "removed_kid": removed})

    async def _post_outage(self, request: web.Request) -> web.Response:
        self.down = bool((await _json_body(request)).get("down", True))
        return _json({"down": self.down})

    async def _get_stats(self, request: web.Request) -> web.Response:
        return _json(self.counts)

    async def _get_public_key_pem(self, request: web.Request) -> web.Response:
        try:
            pem = self.public_key_pem(request.query.get("alg", "RS256"))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.Response(text=pem, content_type="application/x-pem-file")


def _json(document: Any) -> web.Response:
    return web.Response(body=orjson.dumps(document), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return error_response(status, message, "demo_issuer_error", "demo_issuer")


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body counts as {} so options can be left out."""
    body = await request.read()
    try:
        spec = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        spec = None
    if not isinstance(spec, dict):
        body = error_body("body must be a JSON object", "demo_issuer_error", "invalid_json")
        raise web.HTTPBadRequest(body=body, content_type="application/json")
    return spec


async def start_issuer(host: str, port: int) -> tuple[web.AppRunner, DemoIssuer, str]:
    """Start a demo issuer in this event loop; the caller owns `runner.cleanup()`."""
    issuer = DemoIssuer()
    runner, url = await start_app(issuer.app(), host, port)
    issuer.url = url
    return runner, issuer, url


async def _start(host: str, port: int) -> tuple[web.AppRunner, str]:
    runner, _, url = await start_issuer(host, port)
    return runner, url


def main(argv: list[str] | None = None) -> int:
    args = base_parser(__doc__).parse_args(argv)
    return serve(lambda: _start(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
