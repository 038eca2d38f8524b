"""CPU per request and closed-loop throughput, side by side in one run, as ratios to nginx.

    python benches/bench_cpu.py                 # 3 rounds of 8 s per system
    python benches/bench_cpu.py --quick         # 1 round of 2 s
    python benches/bench_cpu.py --profile DIR   # also py-spy each gateway and the h11 floor
    python benches/bench_cpu.py --baseline DIR  # also gateway and + masking from another checkout
    python benches/bench_cpu.py --litellm BIN   # also LiteLLM's proxy (default: `litellm` on PATH)

Everything on loopback on this machine. The upstream is Debian's nginx answering every request
with a fixed ~1 KB chat completion (`return 200`), so the upstream costs next to nothing. Load is
wrk (closed loop, 1 thread, `--connections`), every request a POST with a bearer token. Systems:

- `upstream direct`: wrk against the nginx upstream itself;
- `nginx proxy`: a second nginx as a reverse proxy in front of it (the floor for one hop);
- `h11 legs only` (`benches/h11_floor_proxy.py`): the gateway's own server and upstream client
  relaying as they are, nothing between them: the floor for a proxy on h11, which issue 11
  keeps on both legs;
- `gateway`: identity + policy; `+ masking` (a rule masking e-mail in the JSON answer);
  `+ audit batch` and `+ audit sync` (masking and a sealed audit log); `2 workers` (identity +
  policy + masking, `[server] workers = 2`); with `--baseline DIR`, `gateway@baseline` and
  `+ masking@baseline` run the `gateway` package of another checkout, in the same rounds;
- `litellm proxy`: when LiteLLM is installed (`pip install 'litellm[proxy]'`, best in a venv of
  its own, then `--litellm VENV/bin/litellm`), its proxy with one worker and its defaults, one
  model routed to the same nginx upstream, callers authenticated by its master key.

CPU per request = (utime + stime of the system's process tree, from /proc, over the run) /
requests wrk completed; the load generator's and the upstream's own CPU are reported beside it.
Rounds rotate through the systems so machine noise hits all of them. The machine's load
average and busy share of all cores (from /proc/stat) are printed for each round: the ratios
within one run are what count on a shared machine. The last lines judge issue 11's targets for
CPU per request (identity + policy + masking: <= 250 µs and <= 18x the nginx proxy) and for 2
workers (>= 1.5x the throughput of 1, <= 1.15x its CPU per request).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from bench_proxy import verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import peers

BENCHES = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "llama-3-8b",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "The gateway checks the token, applies the policy and relays. " * 14,
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 120, "total_tokens": 132},
    }
)
REQUEST = orjson.dumps(
    {"model": "llama-3-8b", "messages": [{"role": "user", "content": "Summarise the design."}]}
)


def nginx_conf(prefix: Path, port: int, body: str, upstream_port: int) -> Path:
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream bench_upstream {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        {body}
    }}
}}
"""
    )
    return conf


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """An nginx master + 1 worker in its own prefix; `pid` is the master."""

    def __init__(self, tmp: Path, name: str, body: str, upstream_port: int = 9) -> None:
        prefix = tmp / name
        prefix.mkdir()
        self.port = free_port()
        conf = nginx_conf(prefix, self.port, body, upstream_port)
        self.proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)])
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while not _answers(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(
                    f"nginx {name} did not start: {(prefix / 'error.log').read_text()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants now."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class System:
    name: str
    url: str
    pid: int  # process tree whose CPU counts as this system's
    upstream_pid: int
    script: Path | None = None  # its own wrk script (another credential), else the shared one
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    wrk_us: list[float] = field(default_factory=list)
    upstream_us: list[float] = field(default_factory=list)


def wrk_script(tmp: Path, token: str, name: str = "post.lua") -> Path:
    script = tmp / name
    body = REQUEST.decode().replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = "{body}"\n'
        f'wrk.headers["content-type"] = "application/json"\n'
        f'wrk.headers["authorization"] = "Bearer {token}"\n'
    )
    return script


def run_wrk(system: System, script: Path, seconds: float, connections: int) -> None:
    script = system.script or script
    cpu0, up0 = tree_cpu(system.pid), tree_cpu(system.upstream_pid)
    before = os.times()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), system.url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = os.times()
    cpu = tree_cpu(system.pid) - cpu0
    upstream = tree_cpu(system.upstream_pid) - up0
    wrk_cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    done = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or done == 0:
        raise RuntimeError(f"{system.name}: wrk saw errors:\n{out}")
    system.rates.append(done / seconds)
    if system.pid != system.upstream_pid:
        system.cpu_us.append(cpu / done * 1e6)
    else:
        system.cpu_us.append(upstream / done * 1e6)
    system.wrk_us.append(wrk_cpu / done * 1e6)
    system.upstream_us.append(upstream / done * 1e6)


def gateway_config(
    issuer: str, upstream: str, tmp: Path, name: str, entities: str = '["email"]'
) -> str:
    """The config of gateway system `name`; `entities` is what its masking rule masks."""
    workers = "workers = 2\n" if name == "2 workers" else ""
    mask = f"mask = {entities}\n" if name != "gateway" else ""
    text = f"""
[server]
listen = "127.0.0.1:0"
reload_poll_s = 0
{workers}
[identity]
issuer = "{issuer}"
audience = "inference-gateway"
[[connections]]
name = "llama"
upstream = "{upstream}"
[[rules]]
id = "bench"
groups = ["analysts"]
connections = ["llama"]
action = "allow"
{mask}"""
    if name.startswith("+ audit"):
        text += f"""
[audit]
dir = "{tmp / name.split()[-1]}"
origin = "bench/{name.split()[-1]}"
durability = "{name.split()[-1]}"
signing_key = "{tmp / "keys" / "signing.key"}"
sealing_key = "{tmp / "keys" / "sealing.key"}"
"""
    return text


GATEWAYS = ("gateway", "+ masking", "+ audit batch", "+ audit sync", "2 workers")
BASELINED = ("gateway", "+ masking")  # also run from --baseline DIR
LITELLM_KEY = "sk-bench-0123456789abcdef"  # the master key of this run's loopback proxy
LITELLM_START_S = 120.0


def start_litellm(binary: str, tmp: Path, upstream_port: int) -> subprocess.Popen[bytes]:
    """LiteLLM's proxy, one worker, defaults; returns once it answers its liveness probe."""
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: llama-3-8b\n"
        "    litellm_params:\n"
        "      model: openai/llama-3-8b\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: none\n"
    )
    port = free_port()
    log = open(tmp / "litellm.log", "wb")  # noqa: SIM115 (the process writes it until stopped)
    command = [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--num_workers", "1"],
        stdout=log,
        stderr=log,
        env={**os.environ, "LITELLM_MASTER_KEY": LITELLM_KEY},
    )
    deadline = time.monotonic() + LITELLM_START_S
    while not _answers(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"LiteLLM did not start: {(tmp / 'litellm.log').read_text()}")
        time.sleep(0.2)
    proc.url = f"http://127.0.0.1:{port}/v1/chat/completions"  # type: ignore[attr-defined]
    # Its first call loads the provider client (about a second); wrk's warm-up is shorter.
    httpx.post(
        proc.url,  # type: ignore[attr-defined]
        content=REQUEST,
        headers={"authorization": f"Bearer {LITELLM_KEY}", "content-type": "application/json"},
        timeout=LITELLM_START_S,
    ).raise_for_status()
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", help="comma-separated system names to run")
    parser.add_argument("--profile", type=Path, help="py-spy each gateway into this directory")
    parser.add_argument("--baseline", type=Path, help="a checkout to run two gateways from too")
    parser.add_argument(
        "--litellm", default=shutil.which("litellm"), help="LiteLLM's CLI, to bench its proxy too"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    answer = ANSWER.decode().replace("'", "\\'")
    with tempfile.TemporaryDirectory() as tmp_dir, peers.start_issuer() as issuer:
        tmp = Path(tmp_dir)
        subprocess.run(
            ["gateway", "keys", "init", "--dir", str(tmp / "keys")], check=True, capture_output=True
        )
        upstream = Nginx(
            tmp,
            "upstream",
            f"location / {{ default_type application/json; return 200 '{answer}'; }}",
        )
        proxy = Nginx(
            tmp,
            "proxy",
            "location / { proxy_pass http://bench_upstream; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; }',
            upstream.port,
        )
        started: list[peers.Peer] = []
        systems = [
            System("upstream direct", upstream.url, upstream.pid, upstream.pid),
            System("nginx proxy", proxy.url, proxy.pid, upstream.pid),
        ]
        litellm = start_litellm(args.litellm, tmp, upstream.port) if args.litellm else None
        try:
            floor = [sys.executable, str(BENCHES / "h11_floor_proxy.py"), "--upstream"]
            started.append(peers.launch([*floor, upstream.url]))
            systems.append(
                System("h11 legs only", started[-1].url, started[-1].proc.pid, upstream.pid)
            )
            if litellm is not None:
                systems.append(
                    System(
                        "litellm proxy", litellm.url, litellm.pid, upstream.pid,  # type: ignore[attr-defined]
                        wrk_script(tmp, LITELLM_KEY, "litellm.lua"),
                    )
                )  # fmt: skip
            baseline = [f"{n}@baseline" for n in BASELINED] if args.baseline else []
            for name in (*GATEWAYS, *baseline):
                config_name, _, other = name.partition("@")
                path = tmp / f"{name.replace(' ', '_').replace('+', 'p')}.toml"
                path.write_text(gateway_config(issuer.url, upstream.url, tmp, config_name))
                env = {**os.environ, "PYTHONPATH": str(args.baseline)} if other else None
                peer = peers.launch(["gateway", "serve", "-c", str(path)], env=env)
                started.append(peer)
                url = f"{peer.url}/llama/v1/chat/completions"
                systems.append(System(name, url, peer.proc.pid, upstream.pid))
            if args.only:
                keep = set(args.only.split(","))
                systems = [s for s in systems if s.name in keep]
            token = peers.mint(issuer.url, "bench@example.com", ["analysts"])
            script = wrk_script(tmp, token)
            for s in systems:  # warm up: pools, token cache, JIT-free but caches hot
                run_wrk(s, script, 1, args.connections)
                s.rates.clear(), s.cpu_us.clear(), s.wrk_us.clear(), s.upstream_us.clear()
            print(
                f"# bench_cpu: {os.cpu_count()} cores, {args.connections} connections, "
                f"{args.rounds} x {args.seconds:g} s per system"
            )
            for r in range(args.rounds):
                busy0, total0 = machine_busy()
                load0 = os.getloadavg()[0]
                for s in systems:
                    run_wrk(s, script, args.seconds, args.connections)
                busy1, total1 = machine_busy()
                share = (busy1 - busy0) / (total1 - total0)
                print(
                    f"round {r + 1}: load average {load0:.2f} -> {os.getloadavg()[0]:.2f}, "
                    f"all cores busy {share:.0%} (this bench included)"
                )
            if args.profile:
                profile(args, systems, script)
        finally:
            for peer in started:
                peer.stop()
            if litellm is not None:
                litellm.terminate()
                litellm.wait(30)
            proxy.stop()
            upstream.stop()
    report(systems)
    return 0


def profile(args: argparse.Namespace, systems: list[System], script: Path) -> None:
    """py-spy record of each gateway while wrk drives it, one raw flame file per system."""
    args.profile.mkdir(parents=True, exist_ok=True)
    for gateway in systems:
        if gateway.name in (*GATEWAYS, "h11 legs only"):
            profile_one(args, gateway, script)


def profile_one(args: argparse.Namespace, gateway: System, script: Path) -> None:
    name = gateway.name.replace(" ", "_").replace("+", "p")
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "-p",
            str(gateway.pid),
            "-r",
            "400",
            "-d",
            "8",
            "-f",
            "raw",
            "-o",
            str(args.profile / f"{name}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    subprocess.run(
        ["wrk", "-t1", f"-c{args.connections}", "-d7s", "-s", str(script), gateway.url],
        capture_output=True,
        check=True,
    )
    spy.wait()


def report(systems: list[System]) -> None:
    med = statistics.median
    floor = next((s for s in systems if s.name == "nginx proxy"), None)
    one = next((s for s in systems if s.name == "+ masking"), None)
    print(
        "\n| system | req/s | CPU µs / request | x nginx proxy CPU | wrk µs / req | "
        "upstream µs / req |"
    )
    print("|---|---|---|---|---|---|")
    for s in systems:
        ratio = f"{med(s.cpu_us) / med(floor.cpu_us):.1f}x" if floor else "-"
        print(
            f"| {s.name} | {med(s.rates):,.0f} | {med(s.cpu_us):.0f} | {ratio} | "
            f"{med(s.wrk_us):.0f} | {med(s.upstream_us):.0f} |"
        )
    two = next((s for s in systems if s.name == "2 workers"), None)
    print()
    if one and floor:
        cpu, ratio = med(one.cpu_us), med(one.cpu_us) / med(floor.cpu_us)
        print(
            f"- identity + policy + masking: {cpu:.0f} µs per request, {ratio:.1f}x the nginx "
            f"proxy; target <= 250 µs and <= 18x: {verdict(cpu <= 250 and ratio <= 18)}"
        )
    if one and two:
        faster, dearer = med(two.rates) / med(one.rates), med(two.cpu_us) / med(one.cpu_us)
        print(
            f"- 2 workers vs 1 (both identity + policy + masking): throughput {faster:.2f}x, CPU "
            f"per request {dearer:.2f}x; target >= 1.5x and <= 1.15x: "
            f"{verdict(faster >= 1.5 and dearer <= 1.15)}"
        )


if __name__ == "__main__":
    sys.exit(main())
