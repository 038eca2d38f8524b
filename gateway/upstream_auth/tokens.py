"""A bearer token kept fresh: fetched on demand, reused until shortly before it expires.

The refresh margin scales with the token's lifetime (the smaller of 60 s and a tenth of it), so
a 1-hour token is renewed a minute early and a 30 s token 3 s early: no request carries a token
into its last moments, where it could expire on the way. One fetch at a time per connection:
every request that needs a token while a fetch runs waits for that fetch. If the fetch fails
while the old token has not expired yet, requests keep using it (and the failure shows in the
health report). After a failed fetch, requests fail fast with the same error for RETRY_AFTER_S,
so an endpoint that is down is not hammered by every request.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from gateway.errors import GatewayError

MAX_MARGIN_S = 60.0
RETRY_AFTER_S = 1.0
# RFC 6750 b64token: what may follow "Bearer " in a header.
BEARER_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")

# Returns the token and its lifetime in seconds; raises GatewayError naming what failed.
Fetch = Callable[[], Awaitable[tuple[str, float]]]


def refresh_margin(lifetime_s: float) -> float:
    return min(MAX_MARGIN_S, lifetime_s / 10)


class TokenCache:
    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self.token: str | None = None
        self.expires_at = 0.0
        self.refresh_at = 0.0
        self.inflight: asyncio.Task[str] | None = None
        self.failure: GatewayError | None = None
        self.failed_at = float("-inf")

    async def get(self) -> str:
        now = time.monotonic()
        if self.token is not None and now < self.refresh_at:
            return self.token
        if self.inflight is None:
            if self.failure is not None and now - self.failed_at < RETRY_AFTER_S:
                return self._fallback(self.failure)
            self.inflight = asyncio.get_running_loop().create_task(self._refresh())
            self.inflight.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(self.inflight)
        except GatewayError as exc:
            return self._fallback(exc)

    def _fallback(self, failure: GatewayError) -> str:
        """The old token while it is still valid; the failure once it is not."""
        if self.token is not None and time.monotonic() < self.expires_at:
            return self.token
        raise failure

    async def _refresh(self) -> str:
        started = time.monotonic()
        try:
            token, lifetime = await self.fetch()
        except GatewayError as exc:
            self.failure, self.failed_at = exc, time.monotonic()
            raise
        finally:
            self.inflight = None
        self.failure = None
        self.token = token
        self.expires_at = started + lifetime
        self.refresh_at = self.expires_at - refresh_margin(lifetime)
        return token


def _retrieve(task: asyncio.Task[str]) -> None:
    """A fetch whose waiters all left still has its failure read (recorded, not logged lost)."""
    if not task.cancelled():
        task.exception()
