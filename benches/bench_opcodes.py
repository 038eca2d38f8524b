"""Python opcodes per request, counted: a figure the machine's noise does not move.

    python benches/bench_opcodes.py                       # gateway, + masking, h11 legs only
    python benches/bench_opcodes.py --baseline DIR --n 500 --top 20

CPU time per request (`bench_cpu.py`) moves by 5-10% between runs on a shared 2-core machine,
more than most single changes to the request path. This counts instead: each system runs with
a tracer (`sys.settrace` with opcode events, installed by a `sitecustomize` this bench writes)
that counts the opcodes each Python function executes (an untraced thread of its own resets
and writes the counts when told through a file). After 200 warm-up requests the counts are
reset, N sequential keep-alive POSTs are sent (the request and answer `bench_cpu.py`
uses), and the counts are read. Printed: opcodes per request by system, the share spent in
h11, and the functions outside h11 that execute the most. The tracer slows the process about
a hundredfold; only the counts mean anything. C code (uvloop, orjson, the Rust masker, regex)
is not counted: `valgrind --tool=callgrind` counts its instructions.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_cpu import ANSWER, REQUEST, Nginx, gateway_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import peers

BENCHES = Path(__file__).resolve().parent
WARM = 200

TRACER = """
import collections, os, sys, threading, time
counts = collections.Counter()
control = os.environ["BENCH_OPCODES_CONTROL"]
def tracer(frame, event, arg):
    frame.f_trace_opcodes, frame.f_trace_lines = True, False
    code = frame.f_code
    key = f"{code.co_filename}:{code.co_firstlineno}:{code.co_name}"
    def local(frame, event, arg):
        if event == "opcode":
            counts[key] += 1
        return local
    return local
def serve_commands():  # not traced: started before settrace
    while True:
        time.sleep(0.01)
        try:
            with open(control) as f:
                command = f.read()
        except OSError:
            continue
        if command == "reset":
            counts.clear()
        elif command == "dump":
            with open(control + ".counts", "w") as f:
                f.writelines(f"{n}\\t{key}\\n" for key, n in list(counts.items()))
        else:
            continue
        with open(control, "w") as f:
            f.write("done")
threading.Thread(target=serve_commands, daemon=True).start()
sys.settrace(tracer)
threading.settrace(tracer)
"""


def drive(url: str, path: str, token: str, n: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    for _ in range(n):
        conn.request("POST", path, REQUEST, headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}{path} answered {response.status}")
    conn.close()


def command(control: Path, what: str) -> None:
    """Tell the tracer to reset or dump its counts; returns once it has."""
    control.write_text(what)
    deadline = time.monotonic() + 60
    while control.read_text() != "done":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the tracer did not {what} its counts; was it installed?")
        time.sleep(0.02)


def count(peer: peers.Peer, control: Path, path: str, token: str, n: int) -> collections.Counter:
    drive(peer.url, path, token, WARM)
    command(control, "reset")
    drive(peer.url, path, token, n)
    command(control, "dump")
    counts: collections.Counter = collections.Counter()
    for line in Path(f"{control}.counts").read_text().splitlines():
        number, key = line.split("\t", 1)
        counts[key] = int(number)
    return counts


def short(key: str) -> str:
    """`h11/_connection.py:272:_process_event` for a library, `proxy.py:143:_admit` for ours."""
    path, _, rest = key.partition(":")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1] + ":" + rest
    return path.rsplit("/", 1)[-1] + ":" + rest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="requests counted per system")
    parser.add_argument("--top", type=int, default=12, help="functions outside h11 to list")
    parser.add_argument("--baseline", type=Path, help="a checkout to count its gateway too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir, peers.start_issuer() as issuer:
        tmp = Path(tmp_dir)
        (tmp / "site").mkdir()
        (tmp / "site" / "sitecustomize.py").write_text(TRACER)
        subprocess.run(
            ["gateway", "keys", "init", "--dir", str(tmp / "keys")], check=True, capture_output=True
        )
        answer = ANSWER.decode().replace("'", "\\'")
        upstream = Nginx(
            tmp,
            "upstream",
            f"location / {{ default_type application/json; return 200 '{answer}'; }}",
        )
        token = peers.mint(issuer.url, "bench@example.com", ["analysts"])
        root = BENCHES.parent
        systems = [("h11 legs only", root), ("gateway", root), ("+ masking", root)]
        if args.baseline:
            systems += [("gateway@baseline", args.baseline), ("+ masking@baseline", args.baseline)]
        print(f"# bench_opcodes: {args.n} sequential requests per system after {WARM} warm-up\n")
        print("| system | opcodes / request | in h11 | elsewhere |")
        print("|---|---|---|---|")
        tops = []
        try:
            for name, checkout in systems:
                control = tmp / f"{len(tops)}.control"
                env = {
                    **os.environ,
                    "PYTHONPATH": f"{tmp / 'site'}{os.pathsep}{checkout}",
                    "BENCH_OPCODES_CONTROL": str(control),
                }
                if name == "h11 legs only":
                    floor = [sys.executable, str(BENCHES / "h11_floor_proxy.py"), "--upstream"]
                    command, path = [*floor, upstream.url], "/v1/chat/completions"
                else:
                    config = tmp / f"{len(tops)}.toml"
                    base_name = name.split("@")[0]
                    config.write_text(gateway_config(issuer.url, upstream.url, tmp, base_name))
                    command, path = (
                        ["gateway", "serve", "-c", str(config)],
                        "/llama/v1/chat/completions",
                    )
                peer = peers.launch(command, env=env, timeout=120)
                try:
                    counts = count(peer, control, path, token, args.n)
                finally:
                    peer.stop()
                total = sum(counts.values()) / args.n
                in_h11 = sum(v for k, v in counts.items() if "/h11/" in k) / args.n
                print(f"| {name} | {total:,.0f} | {in_h11:,.0f} | {total - in_h11:,.0f} |")
                tops.append((name, counts))
        finally:
            upstream.stop()
        for name, counts in tops:
            print(f"\n{name}: the functions outside h11 that execute the most, opcodes / request")
            rest = [(k, v) for k, v in counts.items() if "/h11/" not in k]
            for key, v in sorted(rest, key=lambda kv: -kv[1])[: args.top]:
                print(f"  {v / args.n:6.0f}  {short(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
