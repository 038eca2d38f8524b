"""Instructions the masker executes per call, counted by callgrind: what machine noise hides.

    python benches/bench_masker_instructions.py
    python benches/bench_masker_instructions.py --baseline DIR   # also a checkout, same inputs

Timing a 10 µs call on a shared machine moves by 10-15% between runs, more than most single
changes to the masker. `valgrind --tool=callgrind` counts instructions instead: each case runs
in a child process under callgrind twice, with N and 6N calls, and the difference over 5N calls
is the figure (start-up and compiling the masker cancel out; PYTHONHASHSEED=0 keeps Python's
own dict layouts equal). Cases, on the answer `bench_cpu.py` serves (a 1 KB chat completion)
and the masker as the gateway builds it (every API's response paths):

- `mask_json_with_selection`, email only (bench_cpu's masking rule);
- `JsonMasking.mask`, every built-in entity (the masking probe and the repeated-name check
  included);
- `repeats_a_name`, the repeated-name check alone;
- an SSE stream of 100 chat.completion.chunk events, per event.

`--baseline DIR` counts the same cases with DIR's `gateway` package (and its built extension)
first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    "mask_json_with_selection, email": (1000, 1),
    "JsonMasking.mask, all entities": (1000, 1),
    "repeats_a_name": (1000, 1),
    "SSE, per event": (10, 100),
}

CHILD = """
import sys
sys.path.insert(0, {benches!r})
import orjson
from bench_cpu import ANSWER
from gateway import masking as M
from gateway._masker import Masker, repeats_a_name

case, n = sys.argv[1], int(sys.argv[2])
paths = M._all_paths(M.RESPONSE_PATHS_BY_FORMAT)
if case == "mask_json_with_selection, email":
    f = Masker(["email"], paths=paths).mask_json_with_selection
    call = lambda: f(ANSWER)
elif case == "JsonMasking.mask, all entities":
    probe = Masker([M.PROBE[0]], paths=paths, custom=[M.PROBE])
    jm = M.JsonMasking(Masker(["all"], paths=paths), probe)
    call = lambda: jm.mask(ANSWER)
elif case == "repeats_a_name":
    call = lambda: repeats_a_name(ANSWER)
else:
    m = Masker(["email"], paths=paths)
    words = "The gateway checks the token applies the policy and relays".split() * 10
    chunk = {{"id": "c", "object": "chat.completion.chunk", "model": "llama-3-8b"}}
    delta = lambda w: {{"index": 0, "delta": {{"content": w}}}}
    event = lambda w: b"data: " + orjson.dumps({{**chunk, "choices": [delta(w)]}}) + b"\\n\\n"
    events = [event(w) for w in words]

    def call():
        stream = m.sse_stream()
        for event in events:
            stream.push(event)
        stream.finish()
for _ in range(n):
    call()
"""


def instructions(script: Path, case: str, calls: int, root: Path | None) -> int:
    """Instructions callgrind counted for the whole child process."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if root is not None:
        env["PYTHONPATH"] = str(root)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, str(script), case, str(calls)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        summary = next(line for line in out.read_text().splitlines() if line.startswith("summary"))
        return int(summary.split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, help="a checkout to count too")
    args = parser.parse_args()
    roots: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.baseline:
        roots.append((f"baseline {args.baseline}", args.baseline.resolve()))
    benches = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD.format(benches=str(benches)))
        header = " | ".join(name for name, _ in roots)
        print(f"| case (instructions per call) | {header} |\n|---|{'---|' * len(roots)}")
        for case, (n, per_call) in CASES.items():
            cells = []
            for _, root in roots:
                low = instructions(script, case, n, root)
                high = instructions(script, case, 6 * n, root)
                cells.append(f"{(high - low) / (5 * n * per_call):,.0f}")
            print(f"| {case} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
