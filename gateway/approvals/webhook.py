"""Approval notifications: a JSON event POSTed to `[approvals] webhook_url`.

Events are queued and sent by one background task, retried with exponential backoff; the
request path only enqueues, so a slow or dead receiver never delays a request or a decision.
Events carry masked fields only (the same view approvers get), plus a Slack-compatible `text`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

log = logging.getLogger("gateway.approvals")

QUEUE_MAX = 1000  # events beyond this are dropped (and logged) rather than held in memory
ATTEMPTS = 6
FIRST_BACKOFF_S = 0.5  # then 1, 2, 4, 8: a receiver gets about 15 s to come back
TIMEOUT_S = 5.0


class Webhook:
    def __init__(self, url: str) -> None:
        self.url = url
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self.task: asyncio.Task[None] | None = None

    def send(self, event: dict[str, Any]) -> None:
        """Queue an event; never waits."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            log.error("webhook queue full: %s event for %s dropped", event["event"], event["id"])

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                event = await self.queue.get()
                await self._deliver(session, event)
                self.queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, event: dict[str, Any]) -> None:
        body = orjson.dumps(event)
        delay = FIRST_BACKOFF_S
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with session.post(
                    self.url, data=body, headers={"content-type": "application/json"}
                ) as response:
                    if response.status < 300:
                        return
                    problem = f"answered {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            if attempt == ATTEMPTS:
                break
            await asyncio.sleep(delay)
            delay *= 2
        log.error("webhook gave up on %s event for %s: %s", event["event"], event["id"], problem)

    async def close(self, grace_s: float = 2.0) -> None:
        """Give queued events a moment to go out, then stop."""
        if self.task is None:
            return
        try:
            async with asyncio.timeout(grace_s):
                await self.queue.join()
        except TimeoutError:
            log.warning("webhook: %d events not delivered at shutdown", self.queue.qsize())
        self.task.cancel()
