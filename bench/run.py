"""Bastion's benchmark: ``make bench`` (``.venv/bin/python bench/run.py``).

Starts the bench app (bench/app.py) under uvicorn, pinned to one CPU, drives it
with wrk pinned to another, measures in-process baselines in the same run, and
prints three tables. See bench/README.md for what each row means.

    .venv/bin/python bench/run.py              # ~3-4 minutes
    .venv/bin/python bench/run.py --quick      # ~1 minute, for a smoke test
    .venv/bin/python bench/run.py --rounds 7 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from micro import Argon2Baseline, MicroResult, pinned, verification_rounds

from bastion.passwords import DEFAULT_MEMORY_COST, DEFAULT_PARALLELISM, DEFAULT_TIME_COST
from bastion.stores.sql.migrate import upgrade

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk.lua"
HOST = "127.0.0.1"

EMAIL = "load.tester@example.com"
PASSWORD = "violet tractors hum beneath the quiet harbour"

# Targets (see bench/README.md).
TARGET_PROTECTED_HEADER = 0.90  # protected rps / header rps, at least
TARGET_PROTECTED_OPEN = 0.65  # protected rps / open rps, at least
TARGET_VERIFY_PYJWT = 1.20  # Bastion first-sight verify time / PyJWT decode time, at most
TARGET_LOGIN_ARGON2 = 0.90  # token endpoint rate / bare argon2id rate, at least
TARGET_BURST_P50_MS = 20.0  # /health p50 during a login burst, below


# ----------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    rounds: int
    duration: int
    connections: int
    login_connections: int
    micro_rounds: int
    micro_slow_n: int
    micro_fast_n: int
    probe_interval: float
    server_cpu: int | None
    load_cpu: int | None


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s: about a minute")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 2)")
    parser.add_argument(
        "--duration", type=int, help="seconds per variant per round (default 5; quick 2)"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk -c for the GET routes")
    parser.add_argument(
        "--login-connections", type=int, default=4, help="wrk -c for POST /oauth/token"
    )
    parser.add_argument("--micro-rounds", type=int, help="rounds of the micro-benchmark")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for uvicorn (default 0)")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ns = parser.parse_args(argv)
    rounds = ns.rounds or (2 if ns.quick else 5)
    duration = ns.duration or (2 if ns.quick else 5)
    if rounds < 1 or duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    server_cpu: int | None = ns.server_cpu
    load_cpu: int | None = ns.load_cpu
    allowed = os.sched_getaffinity(0)
    if ns.no_pin or shutil.which("taskset") is None:
        server_cpu = load_cpu = None
    elif server_cpu == load_cpu or not {server_cpu, load_cpu} <= allowed:
        parser.error(f"--server-cpu and --load-cpu must be two different CPUs of {sorted(allowed)}")
    return Options(
        rounds=rounds,
        duration=duration,
        connections=ns.connections,
        login_connections=ns.login_connections,
        micro_rounds=ns.micro_rounds or (3 if ns.quick else 9),
        micro_slow_n=300 if ns.quick else 1000,
        micro_fast_n=20_000 if ns.quick else 50_000,
        probe_interval=0.02,
        server_cpu=server_cpu,
        load_cpu=load_cpu,
    )


def on_cpu(cpu: int | None, command: list[str]) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


# ----------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def server_env(tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(
        BASTION_MODE="development",
        BASTION_HOST=HOST,
        BASTION_PORT=str(port),
        BASTION_ISSUER=f"http://{HOST}:{port}",
        BASTION_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        BASTION_SECRET_KEY="bench-secret-" + uuid.uuid4().hex,
        BASTION_SECRET_KEY_FILE=str(tmp / "secret_key"),
        BASTION_ARGON2_MEMORY_COST=str(DEFAULT_MEMORY_COST),
        BASTION_ARGON2_TIME_COST=str(DEFAULT_TIME_COST),
        BASTION_ARGON2_PARALLELISM=str(DEFAULT_PARALLELISM),
        BASTION_LOG_LEVEL="WARNING",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def start_server(tmp: Path, cpu: int | None) -> Server:
    port = free_port()
    env = server_env(tmp, port)
    asyncio.run(upgrade(env["BASTION_DATABASE_URL"]))
    command = on_cpu(
        cpu,
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.app:create_bench_app",
            "--app-dir",
            str(REPO),
            "--host",
            HOST,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--lifespan",
            "on",
            "--no-access-log",
            "--log-level",
            "warning",
            "--no-server-header",
            "--no-proxy-headers",
        ],
    )
    log = tmp / "server.log"
    with log.open("wb") as out:
        # cwd is the temp dir so that no .env of the developer's is read.
        process = subprocess.Popen(command, cwd=tmp, env=env, stdout=out, stderr=out)
    server = Server(process, f"http://{HOST}:{port}", log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"the server did not answer /health within 30 s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown runs the lifespan exit
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def sign_in(base_url: str) -> str:
    """Register the bench user, get a token with the password grant, check it works."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
        if r.status_code != 201:
            raise RuntimeError(f"register answered {r.status_code}: {r.text}")
        r = client.post(
            "/oauth/token",
            data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
        )
        if r.status_code != 200:
            raise RuntimeError(f"/oauth/token answered {r.status_code}: {r.text}")
        token: str = r.json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        for path in ("/bench/open", "/bench/header", "/bench/protected", "/me"):
            r = client.get(path, headers=auth)
            if r.status_code != 200:
                raise RuntimeError(f"GET {path} answered {r.status_code}: {r.text}")
        return token


# ----------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Load:
    """One wrk workload."""

    name: str
    label: str
    path: str
    connections: int
    form: str | None = None


def start_wrk(
    opts: Options, base_url: str, load: Load, token: str, duration: int
) -> subprocess.Popen[str]:
    command = [
        "wrk",
        "-t1",
        f"-c{load.connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        "-H",
        f"Authorization: Bearer {token}",
        base_url + load.path,
    ]
    if load.form is not None:
        command += ["--", "form", load.form]
    return subprocess.Popen(
        on_cpu(opts.load_cpu, command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_wrk(process: subprocess.Popen[str], load: Load) -> WrkResult:
    output, _ = process.communicate(timeout=120)
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line.removeprefix("WRK_JSON "))
            break
    else:
        raise RuntimeError(f"wrk printed no result for {load.name}:\n{output}")
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode} for {load.name}:\n{output}")
    errors = sum(
        data[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
    )


def run_wrk(opts: Options, base_url: str, load: Load, token: str, duration: int) -> WrkResult:
    return finish_wrk(start_wrk(opts, base_url, load, token, duration), load)


# ----------------------------------------------------------------- latency probe


PROBE_PATHS = ("/health", "/bench/open")


def probe(
    base_url: str, seconds: float, interval: float, stop: Callable[[], bool] = lambda: False
) -> dict[str, list[float]]:
    """Low-rate GETs, one at a time, alternating over PROBE_PATHS: latencies in ms.

    Runs in this process, on the load CPU: it adds ~1/interval requests per
    second to the server, little next to a burst."""
    samples: dict[str, list[float]] = {path: [] for path in PROBE_PATHS}
    deadline = time.perf_counter() + seconds
    with httpx.Client(base_url=base_url, timeout=10) as client:
        client.get("/health")  # connect outside the measurement
        i = 0
        while time.perf_counter() < deadline and not stop():
            path = PROBE_PATHS[i % len(PROBE_PATHS)]
            i += 1
            start = time.perf_counter()
            status = client.get(path).status_code
            elapsed = time.perf_counter() - start
            if status != 200:
                raise RuntimeError(f"probe GET {path} answered {status}")
            samples[path].append(elapsed * 1000)
            time.sleep(max(0.0, interval - elapsed))
    return samples


def burst_with_probe(
    opts: Options, base_url: str, load: Load, token: str
) -> tuple[WrkResult, dict[str, list[float]]]:
    process = start_wrk(opts, base_url, load, token, opts.duration)
    time.sleep(min(0.5, opts.duration / 4))  # let the burst fill the hashing queue
    seconds = opts.duration - min(0.5, opts.duration / 4) - 0.25  # stop before wrk does
    samples = probe(base_url, seconds, opts.probe_interval, stop=lambda: process.poll() is not None)
    return finish_wrk(process, load), samples


# ----------------------------------------------------------------- statistics


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    """'median (min-max)'."""
    return f"{fmt.format(med(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------- the run


@dataclass
class HttpResults:
    wrk: dict[str, list[WrkResult]] = field(default_factory=dict)
    argon2: list[float] = field(default_factory=list)
    burst: list[WrkResult] = field(default_factory=list)
    burst_probe: list[dict[str, list[float]]] = field(default_factory=list)
    idle_probe: list[dict[str, list[float]]] = field(default_factory=list)
    argon2_threads: int = 1


def loads(opts: Options) -> list[Load]:
    form = str(
        httpx.QueryParams({"grant_type": "password", "username": EMAIL, "password": PASSWORD})
    )
    c, lc = opts.connections, opts.login_connections
    return [
        Load("open", "GET /bench/open", "/bench/open", c),
        Load("header", "GET /bench/header", "/bench/header", c),
        Load("protected", "GET /bench/protected", "/bench/protected", c),
        Load("token", "POST /oauth/token", "/oauth/token", lc, form=form),
    ]


def run_http(opts: Options, base_url: str, token: str) -> HttpResults:
    results = HttpResults()
    server_cpus = {opts.server_cpu} if opts.server_cpu is not None else None
    # As many hashing threads as the server has cores: PasswordHasher's limiter
    # is sized the same way (affinity-aware), so both sides get the same budget.
    results.argon2_threads = 1 if server_cpus else (os.cpu_count() or 1)
    baseline = Argon2Baseline(
        memory_cost=DEFAULT_MEMORY_COST,
        time_cost=DEFAULT_TIME_COST,
        parallelism=DEFAULT_PARALLELISM,
        threads=results.argon2_threads,
    )
    workloads = {load.name: load for load in loads(opts)}

    def step(name: str) -> None:
        if name in workloads:
            load = workloads[name]
            results.wrk.setdefault(name, []).append(
                run_wrk(opts, base_url, load, token, opts.duration)
            )
        elif name == "argon2":
            with pinned(server_cpus):
                results.argon2.append(baseline.rate(opts.duration))
        elif name == "burst":
            wrk_result, samples = burst_with_probe(opts, base_url, workloads["token"], token)
            results.burst.append(wrk_result)
            results.burst_probe.append(samples)
        elif name == "idle":
            results.idle_probe.append(
                probe(base_url, max(1.0, opts.duration / 2), opts.probe_interval)
            )

    print("warming up ...", flush=True)
    for load in workloads.values():
        run_wrk(opts, base_url, load, token, 1)
    with pinned(server_cpus):
        baseline.rate(0.5)

    steps = [*workloads, "argon2", "burst", "idle"]
    for r in range(opts.rounds):
        order = steps[r % len(steps) :] + steps[: r % len(steps)]
        print(f"round {r + 1}/{opts.rounds}: {' '.join(order)}", flush=True)
        for name in order:
            step(name)
    return results


# ----------------------------------------------------------------- tables


def http_table(opts: Options, res: HttpResults) -> str:
    rows = []
    for load in loads(opts):
        runs = res.wrk[load.name]
        rows.append(
            [
                load.name,
                load.label,
                str(load.connections),
                spread([w.rps for w in runs]),
                f"{med([w.p50_ms for w in runs]):.2f}",
                f"{med([w.p99_ms for w in runs]):.2f}",
                str(sum(w.errors for w in runs)),
            ]
        )
    table = render(
        ["variant", "route", "conns", "req/s median (min-max)", "p50 ms", "p99 ms", "errors"],
        rows,
    )
    by_round = list(zip(res.wrk["open"], res.wrk["header"], res.wrk["protected"], strict=True))
    ph = [p.rps / h.rps for _, h, p in by_round]
    po = [p.rps / o.rps for o, _, p in by_round]
    ratios = render(
        ["ratio (per round)", "median (min-max)", "target", "verdict"],
        [
            [
                "protected/header",
                spread(ph, "{:.2f}"),
                f">= {TARGET_PROTECTED_HEADER:.2f}",
                verdict(med(ph) >= TARGET_PROTECTED_HEADER),
            ],
            [
                "protected/open",
                spread(po, "{:.2f}"),
                f">= {TARGET_PROTECTED_OPEN:.2f}",
                verdict(med(po) >= TARGET_PROTECTED_OPEN),
            ],
        ],
    )
    failed = sum(w.errors for runs in res.wrk.values() for w in runs)
    warning = f"\nWARNING: {failed} requests failed; these numbers are not valid" if failed else ""
    return f"{table}\n\n{ratios}{warning}"


def login_table(opts: Options, res: HttpResults) -> str:
    token_runs = res.wrk["token"]
    rows = [
        [
            "token endpoint",
            f"POST /oauth/token, wrk -c{opts.login_connections}",
            spread([w.rps for w in token_runs], "{:.1f}") + " req/s",
            f"p50 {med([w.p50_ms for w in token_runs]):.1f} ms, "
            f"p99 {med([w.p99_ms for w in token_runs]):.1f} ms",
        ],
        [
            "bare argon2id",
            f"verify in to_thread, {res.argon2_threads} thread(s), same CPU",
            spread(res.argon2, "{:.1f}") + " /s",
            f"{1000 / med(res.argon2):.1f} ms per verify",
        ],
    ]
    for path in PROBE_PATHS:
        for label, probes in (("idle", res.idle_probe), ("login burst", res.burst_probe)):
            p50s = [percentile(p[path], 50) for p in probes]
            pooled = [x for p in probes for x in p[path]]
            rows.append(
                [
                    f"{path} latency, {label}",
                    f"1 client, every {opts.probe_interval * 1000:.0f} ms",
                    spread(p50s, "{:.2f}") + " ms p50",
                    f"p99 {percentile(pooled, 99):.1f} ms, n={len(pooled)}",
                ]
            )
    rows.append(
        [
            "token endpoint, probed",
            "the login burst the probe ran against",
            spread([w.rps for w in res.burst], "{:.1f}") + " req/s",
            f"errors {sum(w.errors for w in res.burst)}",
        ]
    )
    table = render(["row", "what", "median (min-max)", "detail"], rows)
    login = [w.rps / a for w, a in zip(token_runs, res.argon2, strict=True)]
    health_p50 = [percentile(p["/health"], 50) for p in res.burst_probe]
    ratios = render(
        ["ratio / level (per round)", "median (min-max)", "target", "verdict"],
        [
            [
                "token endpoint / bare argon2id",
                spread(login, "{:.2f}"),
                f">= {TARGET_LOGIN_ARGON2:.2f}",
                verdict(med(login) >= TARGET_LOGIN_ARGON2),
            ],
            [
                "/health p50 during login burst",
                spread(health_p50, "{:.2f}") + " ms",
                f"< {TARGET_BURST_P50_MS:.0f} ms",
                verdict(med(health_p50) < TARGET_BURST_P50_MS),
            ],
        ],
    )
    return f"{table}\n\n{ratios}"


MICRO_ROWS = [
    ("pyjwt", "jwt.decode(token, key, algorithms=['EdDSA'], audience, issuer)"),
    ("bastion", "TokenVerifier.authenticate, cache_size=0 (first sight)"),
    ("ed25519", "Ed25519PublicKey.verify only (the floor)"),
    ("stage1", "  bastion.jwt.parse_token (shape, header)"),
    ("stage2", "  bastion.jwt.verify_signature"),
    ("stage3", "  bastion.jwt.validate_claims (claims already decoded)"),
    ("keyget", "  LocalKeyManager.get(kid), cached snapshot"),
    ("cached", "TokenVerifier.cached(token), hit"),
    ("cached_auth", "TokenVerifier.authenticate, cache hit"),
]


def micro_table(result: MicroResult) -> str:
    rows = [
        [
            name,
            what,
            spread([ns / 1000 for ns in result.rounds[name]], "{:.2f}"),
            str(result.iterations[name]),
        ]
        for name, what in MICRO_ROWS
    ]
    table = render(["variant", "what", "µs/call median (min-max)", "calls/round"], rows)
    ratio = [b / p for b, p in zip(result.rounds["bastion"], result.rounds["pyjwt"], strict=True)]
    ratios = render(
        ["ratio (per round)", "median (min-max)", "target", "verdict"],
        [
            [
                "bastion/pyjwt",
                spread(ratio, "{:.2f}"),
                f"<= {TARGET_VERIFY_PYJWT:.2f}",
                verdict(med(ratio) <= TARGET_VERIFY_PYJWT),
            ]
        ],
    )
    return f"{table}\n\n{ratios}"


def describe(opts: Options) -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        rev = "?"
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pin = (
        f"server on CPU {opts.server_cpu}, wrk and probe on CPU {opts.load_cpu}"
        if opts.server_cpu is not None
        else "no CPU pinning"
    )
    return (
        f"bastion {rev} · Python {platform.python_version()} · {cpu} · {os.cpu_count()} CPUs\n"
        f"{pin} · {opts.rounds} rounds x {opts.duration} s, order rotated per round · "
        f"argon2id m={DEFAULT_MEMORY_COST} KiB t={DEFAULT_TIME_COST} p={DEFAULT_PARALLELISM}\n"
        f"uvicorn: 1 worker, uvloop, httptools, no access log · wrk -t1 -c{opts.connections} "
        f"(login -c{opts.login_connections}), loopback"
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_options(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    started = time.monotonic()
    load_before = os.getloadavg()
    load_cpus = {opts.load_cpu} if opts.load_cpu is not None else None
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(describe(opts), flush=True)
        print("micro-benchmark: token verification in-process ...", flush=True)
        with pinned(load_cpus):  # off the server's CPU; the server is not up yet anyway
            micro = verification_rounds(
                tmp, opts.micro_rounds, opts.micro_slow_n, opts.micro_fast_n
            )
        print("starting the server ...", flush=True)
        server = start_server(tmp, opts.server_cpu)
        try:
            token = sign_in(server.base_url)
            with pinned(load_cpus):  # the probe and the wrk parent stay off the server's CPU
                http = run_http(opts, server.base_url, token)
        finally:
            stop_server(server)
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()

    print()
    print("== 1. HTTP: the guard's cost per request (wrk, same app, same middleware)")
    print(http_table(opts, http))
    print()
    print("== 2. Login: token endpoint vs bare argon2id, and latency during a login burst")
    print(login_table(opts, http))
    print()
    print("== 3. Token verification in-process (Ed25519, per call)")
    print(micro_table(micro))
    print()
    print(
        f"took {elapsed:.0f} s · load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after (other tenants add noise: compare ratios, not absolutes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
