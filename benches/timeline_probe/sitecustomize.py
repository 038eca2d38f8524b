"""Timestamps at the steps of a request inside a real gateway, for `bench_sync_timeline.py`.

Python imports `sitecustomize` at start from any directory on PYTHONPATH; this one does
something only when GATEWAY_TIMELINE names a file. It wraps a few of the gateway's methods and
`os.fdatasync` so each entry and exit appends (step, perf_counter) to a list, from whichever
thread runs it, and writes the list to that file as JSON when the process exits. A method that
is gone raises AttributeError at start: the probe follows the code or says it cannot.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import time
from typing import Any

MARKS: list[tuple[str, float]] = []


def _wrap(owner: Any, attr: str, step: str, *, exit_too: bool = True) -> None:
    fn = getattr(owner, attr)
    clock, marks = time.perf_counter, MARKS

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            marks.append((step + " >", clock()))
            try:
                return await fn(*args, **kwargs)
            finally:
                marks.append((step + " <", clock()))

        setattr(owner, attr, timed_async)
        return

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        marks.append((step + " >", clock()))
        try:
            return fn(*args, **kwargs)
        finally:
            if exit_too:
                marks.append((step + " <", clock()))

    setattr(owner, attr, timed)


def _install(path: str) -> None:
    from gateway import auditing, server, upstream
    from gateway.audit import log, writer, writer_thread

    _wrap(server.HttpConnection, "data_received", "read")
    _wrap(server.HttpConnection, "_dispatch", "dispatch")
    _wrap(auditing.Auditor, "allowed", "decision entry")
    _wrap(auditing.Auditor, "completed", "inference entry")
    _wrap(log.AuditLog, "_enqueue", "enqueue")
    _wrap(writer_thread.WriterThread, "run", "hand to writer", exit_too=False)
    _wrap(writer.Writer, "_commit", "commit")
    _wrap(writer.Writer, "_seal", "seal")
    _wrap(os, "fdatasync", "fdatasync")
    _wrap(writer_thread, "_resolve", "back on the loop")
    _wrap(upstream.UpstreamPool, "request", "upstream head")
    _wrap(server.HttpConnection, "_next_cycle", "response sent", exit_too=False)

    def dump() -> None:
        with open(path, "w") as out:
            json.dump(MARKS, out)

    atexit.register(dump)


if os.environ.get("GATEWAY_TIMELINE"):
    _install(os.environ["GATEWAY_TIMELINE"])
