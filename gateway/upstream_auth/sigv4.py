"""`auth = "aws_sigv4"`: every request signed with AWS Signature Version 4 (extra `[aws]`).

Credentials come from botocore's standard chain (environment, shared config and profile, web
identity / IRSA, container and instance metadata), which refreshes temporary credentials before
they expire. The chain is resolved on first use and whenever botocore says a refresh is due, in a
worker thread (it may call a metadata endpoint), one resolution at a time. botocore's signer signs
the request exactly as it goes out: these headers, this target, the body after request masking.
"""

from __future__ import annotations

import asyncio
from typing import Any

import botocore.auth
import botocore.awsrequest
import botocore.exceptions
import botocore.session

from gateway.config import Config, ConnectionConfig
from gateway.headers import Headers
from gateway.upstream_auth import UpstreamAuth, fingerprint


def sign(
    credentials: Any,
    region: str,
    service: str,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
) -> Headers:
    """`headers` plus X-Amz-Date, X-Amz-Security-Token (temporary credentials) and Authorization.

    Every header given is signed, `host` included, so nothing on the way can change one.
    """
    request = botocore.awsrequest.AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        # HTTPHeaders appends on assignment, so repeated headers stay repeated (and are signed
        # comma-joined, as SigV4 says).
        request.headers[name.decode("latin-1")] = value.decode("latin-1")
    botocore.auth.SigV4Auth(credentials, service, region).add_auth(request)
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in request.headers.items()
    ]


class SigV4Auth(UpstreamAuth):
    owned = frozenset(
        {b"authorization", b"x-amz-date", b"x-amz-security-token", b"x-amz-content-sha256"}
    )

    def __init__(self, conn: ConnectionConfig) -> None:
        super().__init__(conn.name, fingerprint(conn))
        assert conn.aws_region is not None and conn.aws_service is not None  # config.py checks
        self.region, self.service = conn.aws_region, conn.aws_service
        self.session = botocore.session.Session()
        self.credentials: Any = None  # botocore Credentials or RefreshableCredentials
        self.frozen: Any = None  # the last ReadOnlyCredentials used to sign
        self.inflight: asyncio.Task[Any] | None = None

    @classmethod
    def from_config(cls, config: Config, conn: ConnectionConfig) -> SigV4Auth:
        return cls(conn)

    async def apply(self, method: str, url: str, headers: Headers, body: bytes) -> Headers:
        credentials = await self._current()
        return sign(
            credentials, self.region, self.service, method, url, self.without_owned(headers), body
        )

    def secrets(self) -> tuple[bytes, ...]:
        """The session token travels in a header; the secret key itself never leaves."""
        token = getattr(self.frozen, "token", None)
        return (token.encode(),) if token else ()

    async def _current(self) -> Any:
        refresh_due = getattr(self.credentials, "refresh_needed", None)
        if self.credentials is not None and not (refresh_due and refresh_due()):
            self.frozen = self.credentials.get_frozen_credentials()
            return self.frozen
        if self.inflight is None:
            self.inflight = asyncio.get_running_loop().create_task(self._resolve())
        return await asyncio.shield(self.inflight)

    async def _resolve(self) -> Any:
        try:
            self.frozen = await asyncio.to_thread(self._resolve_blocking)
        except botocore.exceptions.BotoCoreError as exc:
            raise self.failed(f"the AWS credential chain failed: {_first_line(exc)}") from None
        finally:
            self.inflight = None
        if self.frozen is None:
            raise self.failed("no AWS credentials found in the standard chain")
        self.problem = None
        return self.frozen

    def _resolve_blocking(self) -> Any:
        if self.credentials is None:
            self.credentials = self.session.get_credentials()
        return None if self.credentials is None else self.credentials.get_frozen_credentials()


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
