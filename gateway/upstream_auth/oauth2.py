"""`auth = "oauth2_client_credentials"` (RFC 6749 §4.4): a bearer token from a token endpoint.

The client authenticates with HTTP Basic (RFC 6749 §2.3.1, which every provider must accept,
Entra ID included). The token endpoint is reached through the gateway's own upstream client,
with the same connect and read timeouts as upstreams.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote_plus, urlencode, urlsplit

import orjson

from gateway.config import Config, ConnectionConfig, ServerConfig
from gateway.errors import GatewayError
from gateway.headers import Headers
from gateway.upstream import UpstreamPool
from gateway.upstream_auth import UpstreamAuth, fingerprint
from gateway.upstream_auth.secret_source import read_secret
from gateway.upstream_auth.tokens import BEARER_TOKEN, TokenCache

# RFC 6749 §5.1 makes expires_in optional; without it the token is renewed this often.
DEFAULT_LIFETIME_S = 300.0
MAX_TOKEN_RESPONSE = 64 * 1024
ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


class ClientCredentialsAuth(UpstreamAuth):
    owned = frozenset({b"authorization"})

    def __init__(self, conn: ConnectionConfig, secret: str, server: ServerConfig) -> None:
        super().__init__(conn.name, fingerprint(conn, secret))
        assert conn.token_url is not None and conn.client_id is not None  # config.py checks
        parts = urlsplit(conn.token_url)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        endpoint = ConnectionConfig(
            name=f"{conn.name} token endpoint",
            upstream=f"{parts.scheme}://{parts.netloc}",
            pool_size=2,
        )
        self.pool = UpstreamPool(endpoint, server)
        basic = f"{quote_plus(conn.client_id)}:{quote_plus(secret)}".encode()
        self.request_headers = [
            (b"host", self.pool.host_header),
            (b"authorization", b"Basic " + base64.b64encode(basic)),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"accept", b"application/json"),
        ]
        form = {"grant_type": "client_credentials"}
        if conn.scope:
            form["scope"] = conn.scope
        self.form = urlencode(form).encode()
        self.tokens = TokenCache(self._fetch)

    @classmethod
    def from_config(cls, config: Config, conn: ConnectionConfig) -> ClientCredentialsAuth:
        secret = read_secret(config, conn, "client_secret_env", "client_secret_file")
        assert secret is not None  # config.py requires one of the two
        return cls(conn, secret, config.server)

    async def apply(self, method: str, url: str, headers: Headers, body: bytes) -> Headers:
        token = await self.tokens.get()
        return [*self.without_owned(headers), (b"authorization", b"Bearer " + token.encode())]

    def secrets(self) -> tuple[bytes, ...]:
        return (self.tokens.token.encode(),) if self.tokens.token else ()

    def pools(self) -> tuple[UpstreamPool, ...]:
        return (self.pool,)

    async def _fetch(self) -> tuple[str, float]:
        headers = [*self.request_headers, (b"content-length", str(len(self.form)).encode())]
        try:
            response = await self.pool.request("POST", self.target, headers, self.form)
            body = bytearray()
            try:
                while (chunk := await response.read()) is not None:
                    body += chunk
                    if len(body) > MAX_TOKEN_RESPONSE:
                        raise self.failed("the token endpoint's answer is too large")
            finally:
                response.discard()
        except GatewayError as exc:
            if exc.code == "upstream_credentials":
                raise
            raise self.failed(f"token endpoint unreachable ({exc.message})") from None
        token, lifetime = self._parse(response.status, bytes(body))
        self.problem = None
        return token, lifetime

    def _parse(self, status: int, body: bytes) -> tuple[str, float]:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if status != 200:
            error = answer.get("error")
            detail = f" ({error})" if isinstance(error, str) and ERROR_CODE.match(error) else ""
            raise self.failed(f"token endpoint answered {status}{detail}")
        token, kind = answer.get("access_token"), answer.get("token_type")
        if not isinstance(token, str) or not BEARER_TOKEN.match(token):
            raise self.failed("token endpoint answered without a usable access_token")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise self.failed("token endpoint answered a token_type other than Bearer")
        lifetime = answer.get("expires_in", DEFAULT_LIFETIME_S)
        if isinstance(lifetime, str) and lifetime.isdigit():  # some providers send a string
            lifetime = int(lifetime)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise self.failed("token endpoint answered an invalid expires_in")
        return token, float(lifetime)
