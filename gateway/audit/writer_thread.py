"""The one thread the writer runs on: its calls in order, each waking the event loop once.

`loop.run_in_executor` costs a sync-mode append two thread hand-offs back (the executor
future's callback, then the asyncio future's); here a finished call resolves its future with
one `call_soon_threadsafe`, and a `queue.SimpleQueue` hands the call over. A caller that has
work to do the moment the call succeeds passes it as `then`: it runs in that same callback, a
loop iteration before the awaiting task resumes.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Then = Callable[[], None] | None
_Job = tuple[
    asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any], tuple[Any, ...], Then
]


class WriterThread:
    """Runs calls one at a time, in submission order, on a thread of its own."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # A daemon: an unclosed log must not keep the process alive; the log's files are
        # crash-safe, and `close` drains the calls.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args: Any, then: Then = None) -> asyncio.Future[T]:
        """Call `fn(*args)` on the thread after every call submitted before; await the result.
        `then()` runs on the event loop once `fn` returned, just before the result is set."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args, then))
        return future

    def shutdown(self) -> None:
        """Finish the calls submitted so far, then stop the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, args, then = job
            try:
                outcome: tuple[Any, ...] = (_resolve, future, fn(*args), then)
            except BaseException as exc:  # handed to the awaiting caller, as an executor does
                outcome = (_reject, future, exc)
            if not loop.is_closed():
                loop.call_soon_threadsafe(*outcome)


def _resolve(future: asyncio.Future[Any], result: Any, then: Then) -> None:
    if future.done():  # cancelled: its caller is gone, and so is what `then` was for
        return
    if then is not None:
        then()
    future.set_result(result)


def _reject(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
