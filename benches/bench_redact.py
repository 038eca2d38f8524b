"""Credential redaction cost per relayed chunk, as a ratio to relaying the chunk untouched.

Run:
    PYTHONPATH=. python benches/bench_redact.py

A 200-token SSE answer (about 120 bytes per event, one event per chunk) and a 1 MiB body in
16 KiB chunks are pushed through `RedactingStream` for a 29-byte secret that does not occur,
and, as the baseline, through one `bytes.find` of the secret per chunk (the least any search
must do). Both in the same run, best of 7; the report gives microseconds per chunk and the
ratio. With no credential configured the proxy builds no stream at all (one `is None` check
per response), so that path has nothing to measure.
"""

from __future__ import annotations

import time

from gateway.redact import Redactor

SECRET = b"sk-upstream-connection-secret"
EVENT = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" word"}}]}\n\n'  # noqa: E501


def _best(run, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(chunks: list[bytes], label: str) -> None:
    redactor = Redactor.for_secrets((SECRET,))

    def one_find() -> None:
        for chunk in chunks:
            chunk.find(SECRET)

    def redacted() -> None:
        stream = redactor.stream()
        out = [stream.push(chunk) for chunk in chunks]
        out.append(stream.finish())

    base, with_secret = _best(one_find), _best(redacted)
    per_chunk = with_secret / len(chunks) * 1e6
    ratio = with_secret / base
    print(f"{label}: {per_chunk:.2f} us per chunk; {ratio:.1f}x one bytes.find of the secret")


if __name__ == "__main__":
    measure([EVENT] * 200, "SSE, 200 events")
    body = bytes(range(32, 127)) * (1024 * 1024 // 95)
    measure([body[i : i + 16384] for i in range(0, len(body), 16384)], "1 MiB in 16 KiB chunks")
