"""The audit writer's thread: calls in order, results and errors handed back, and `then` run
on the event loop before the awaiting task resumes, only when the call succeeded."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.audit.writer_thread import WriterThread


@pytest.fixture
def thread():
    worker = WriterThread("test-writer")
    yield worker
    worker.shutdown()


async def test_calls_run_in_submission_order_on_another_thread(thread: WriterThread) -> None:
    ran: list[tuple[int, str]] = []

    def call(i: int) -> int:
        ran.append((i, threading.current_thread().name))
        return i * i

    results = await asyncio.gather(*(thread.run(call, i) for i in range(20)))
    assert results == [i * i for i in range(20)]
    assert ran == [(i, "test-writer") for i in range(20)]


async def test_then_runs_on_the_loop_before_the_caller_resumes(thread: WriterThread) -> None:
    order: list[str] = []
    loop_thread = threading.current_thread()

    def then() -> None:
        assert threading.current_thread() is loop_thread
        order.append("then")

    async def caller() -> None:
        await thread.run(order.append, "call", then=then)
        order.append("resumed")

    await caller()
    assert order == ["call", "then", "resumed"]


async def test_a_failed_call_raises_and_skips_then(thread: WriterThread) -> None:
    called: list[str] = []

    def fails() -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        await thread.run(fails, then=lambda: called.append("then"))
    assert called == []
    assert await thread.run(len, b"abc") == 3  # the thread goes on after a failure


async def test_a_cancelled_caller_gets_no_then(thread: WriterThread) -> None:
    """A caller that gave up (its task cancelled) is not acted for: what `then` would do was
    for it."""
    gate = threading.Event()
    called: list[str] = []
    future = thread.run(gate.wait, then=lambda: called.append("then"))
    future.cancel()
    gate.set()
    # Calls finish in order, and so do their callbacks on the loop: the cancelled one's is done.
    assert await thread.run(len, b"") == 0
    assert called == []
