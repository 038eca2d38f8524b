"""What both demo servers share: binding, the `listening on` line, and the signal-driven loop."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable

import orjson
import uvloop
from aiohttp import web

# In-flight requests get this long to finish on shutdown; the failure modes stall forever,
# so aiohttp's default of 60 s would turn every SIGTERM into a minute-long wait.
SHUTDOWN_TIMEOUT_S = 1.0

Starter = Callable[[], Awaitable[tuple[web.AppRunner, str]]]


async def start_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Bind `app` on host:port (0 picks a free port) and return the runner and base URL.

    Access logging is off (the upstream is a latency baseline) and handlers are cancelled
    when their client disconnects, so a stalled stream cannot outlive its client.
    """
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    if ":" in bound_host:
        bound_host = f"[{bound_host}]"
    return runner, f"http://{bound_host}:{bound_port}"


def error_body(message: str, kind: str, code: str) -> bytes:
    """An error in the OpenAI shape, which SDKs (and the gateway) know how to show."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def error_response(status: int, message: str, kind: str, code: str) -> web.Response:
    body = error_body(message, kind, code)
    return web.Response(status=status, body=body, content_type="application/json")


def base_parser(description: str | None) -> argparse.ArgumentParser:
    """The --host/--port options every demo server takes."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    return parser


async def _serve(start: Starter) -> None:
    runner, url = await start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The one line a parent process waits for; nothing else goes to stdout.
    print(f"listening on {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(start: Starter) -> int:
    """Run a server until SIGTERM or SIGINT, then shut it down cleanly; returns exit status 0."""
    uvloop.run(_serve(start))
    return 0
