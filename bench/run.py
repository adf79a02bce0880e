"""Bastion's benchmark: ``make bench`` (``.venv/bin/python bench/run.py``).

Starts the bench app (bench/app.py) under uvicorn, pinned to one CPU, drives it
with wrk pinned to another, measures in-process baselines in the same run, and
prints four tables. A second server, with Redis as the revocation store, runs
beside the first when Redis answers at --redis-url. See bench/README.md for
what each row means.

    .venv/bin/python bench/run.py              # ~6 minutes
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
import redis
from micro import Argon2Baseline, MicroResult, pinned, verification_rounds

from bastion.passwords import DEFAULT_MEMORY_COST, DEFAULT_PARALLELISM, DEFAULT_TIME_COST
from bastion.stores.sql.migrate import upgrade

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk.lua"
HOST = "127.0.0.1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

EMAIL = "load.tester@example.com"
PASSWORD = "violet tractors hum beneath the quiet harbour"

# Targets (see bench/README.md).
TARGET_PROTECTED_HEADER = 0.90  # protected rps / header rps, at least
TARGET_PROTECTED_OPEN = 0.65  # protected rps / open rps, at least
TARGET_STRICT_PROTECTED = 0.80  # strict rps / stateless protected rps, at least (SQL or Redis)
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
    refresh_connections: int
    many_tokens: int
    redis_url: str | None
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
        "--login-connections", type=int, default=4, help="wrk -c for the password grant"
    )
    parser.add_argument(
        "--refresh-connections",
        type=int,
        default=4,
        help="wrk -c for the refresh grant, one rotating chain each (default 4)",
    )
    parser.add_argument(
        "--many-tokens",
        type=int,
        default=200,
        help="distinct tokens the strict-many variants cycle through (default 200)",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"Redis for the strict-redis variants (default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis variants")
    parser.add_argument("--micro-rounds", type=int, help="rounds of the micro-benchmark")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for uvicorn (default 0)")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ns = parser.parse_args(argv)
    rounds = ns.rounds or (2 if ns.quick else 5)
    duration = ns.duration or (2 if ns.quick else 5)
    if rounds < 1 or duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    if ns.refresh_connections < 1 or ns.many_tokens < 1:
        parser.error("--refresh-connections and --many-tokens must be at least 1")
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
        refresh_connections=ns.refresh_connections,
        many_tokens=ns.many_tokens,
        redis_url=None if ns.no_redis else ns.redis_url,
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


def server_env(tmp: Path, port: int, redis_url: str | None = None) -> dict[str, str]:
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
        # Limits stay on, so their cost is in every row, but with quotas this
        # load cannot reach: the benchmark measures throughput, not the limit.
        BASTION_RATE_LIMIT_TOKEN_IP="10000000/minute",
        BASTION_RATE_LIMIT_TOKEN_ACCOUNT="10000000/minute",
        BASTION_RATE_LIMIT_REGISTER_IP="10000000/minute",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if redis_url is not None:
        env["BASTION_REDIS_URL"] = redis_url  # revocation store "auto" then picks Redis
    return env


UVICORN_FLAGS = (
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
)
"""How every benchmarked server runs: uvloop, httptools, no access log."""


def uvicorn_command(
    app: str,
    port: int,
    *,
    python: str = sys.executable,
    app_dir: Path = REPO,
    workers: int = 1,
) -> list[str]:
    """``python -m uvicorn --factory APP`` on ``port`` with :data:`UVICORN_FLAGS`."""
    command = [python, "-m", "uvicorn", "--factory", app, "--app-dir", str(app_dir)]
    command += ["--host", HOST, "--port", str(port), *UVICORN_FLAGS]
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def launch(command: list[str], cwd: Path, env: dict[str, str], port: int) -> Server:
    """Start ``command`` in ``cwd`` (its log there too) and wait until
    ``/health`` answers 200, for at most 30 s."""
    log = cwd / "server.log"
    with log.open("wb") as out:
        # cwd is the temp dir so that no .env of the developer's is read.
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=out)
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


def start_server(tmp: Path, cpu: int | None, redis_url: str | None = None) -> Server:
    """Start the bench app with its database, key file and log in ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = server_env(tmp, port, redis_url)
    asyncio.run(upgrade(env["BASTION_DATABASE_URL"]))
    return launch(on_cpu(cpu, uvicorn_command("bench.app:create_bench_app", port)), tmp, env, port)


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


BENCH_PATHS = ("/bench/open", "/bench/header", "/bench/protected", "/bench/strict", "/me")


def password_grant(client: httpx.Client) -> dict[str, str]:
    """One login (one argon2id verification on the server): the token answer."""
    r = client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
    )
    if r.status_code != 200:
        raise RuntimeError(f"/oauth/token (password) answered {r.status_code}: {r.text}")
    answer: dict[str, str] = r.json()
    return answer


def check_token(client: httpx.Client, token: str, paths: Sequence[str] = BENCH_PATHS) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    for path in paths:
        r = client.get(path, headers=auth)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path} answered {r.status_code}: {r.text}")


def sign_in(base_url: str) -> str:
    """Register the bench user, get a token with the password grant, check it works."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
        if r.status_code != 201:
            raise RuntimeError(f"register answered {r.status_code}: {r.text}")
        token = password_grant(client)["access_token"]
        check_token(client, token)
        return token


def mint_access_tokens(base_url: str, n: int) -> list[str]:
    """``n`` distinct valid access tokens (each its own ``jti``): one login, then
    ``n - 1`` refresh grants along its chain, which is much cheaper than ``n``
    logins. The first and the last are checked on ``/bench/strict``."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        answer = password_grant(client)
        tokens = [answer["access_token"]]
        while len(tokens) < n:
            r = client.post(
                "/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": answer["refresh_token"]},
            )
            if r.status_code != 200:
                raise RuntimeError(f"/oauth/token (refresh) answered {r.status_code}: {r.text}")
            answer = r.json()
            tokens.append(answer["access_token"])
        for token in {tokens[0], tokens[-1]}:
            check_token(client, token, ["/bench/strict"])
    return tokens


class RefreshChains:
    """Fresh refresh tokens, each the head of its own family (one password
    login each), handed to wrk's refresh mode in files, ``per_run`` at a time.

    A run loses its chains (the tokens in flight when wrk stops, and the
    successors it never writes back), so every run starts fresh ones, all
    made up front so that no login runs between measurements."""

    def __init__(self, base_url: str, directory: Path, per_run: int) -> None:
        self.base_url = base_url
        self.directory = directory
        self.per_run = per_run
        self._pool: list[str] = []
        self._files = 0

    def prepare(self, runs: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            for _ in range(runs * self.per_run):
                self._pool.append(password_grant(client)["refresh_token"])

    def next_file(self) -> Path:
        if len(self._pool) < self.per_run:
            self.prepare(1)  # only if more runs were asked for than prepared
        chosen, self._pool = self._pool[: self.per_run], self._pool[self.per_run :]
        self._files += 1
        path = self.directory / f"refresh-{self._files}.txt"
        path.write_text("\n".join(chosen) + "\n")
        return path


def redis_problem(url: str) -> str | None:
    """Why the Redis at ``url`` cannot serve the Redis variants, or None."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        client.close()
    return None


def redis_mget_calls(url: str) -> int:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    mget = stats.get("cmdstat_mget", {})
    return int(mget.get("calls", 0)) if isinstance(mget, dict) else 0


@dataclass(frozen=True)
class Target:
    """A running server under test, with what its workloads need."""

    name: str  # "sql" or "redis": the revocation store behind /bench/strict
    server: Server
    token: str
    many_file: Path  # opts.many_tokens distinct access tokens, one a line


def prepare_target(name: str, server: Server, opts: Options) -> Target:
    token = sign_in(server.base_url)
    if name == "redis":
        # Make sure this server really asks Redis: a token it has never seen
        # must cost one MGET.
        assert opts.redis_url is not None
        before = redis_mget_calls(opts.redis_url)
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            check_token(client, password_grant(client)["access_token"], ["/bench/strict"])
        if redis_mget_calls(opts.redis_url) <= before:
            raise RuntimeError("the Redis server's /bench/strict did not ask Redis")
    many = mint_access_tokens(server.base_url, opts.many_tokens)
    many_file = server.log.parent / "many-tokens.txt"
    many_file.write_text("\n".join(many) + "\n")
    return Target(name, server, token, many_file)


# ----------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    chains_lost: int = 0  # refresh mode: answers that carried no successor
    error_kinds: dict[str, int] = field(default_factory=dict)  # the non-zero ones
    first_failure: str = ""  # refresh mode: status and body start of the first lost chain

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
    mode: str = "get"  # bench/wrk.lua's mode: get, form, tokens, refresh
    form: str | None = None
    target: str = "sql"  # which server: "sql" or "redis" (its revocation store)


def start_wrk(
    opts: Options,
    base_url: str,
    load: Load,
    token: str,
    duration: int,
    script_args: Sequence[str] = (),
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
    if script_args:
        command += ["--", *script_args]
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
    kinds = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    errors = sum(data[k] for k in kinds)
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
        chains_lost=data.get("chains_lost", 0),
        error_kinds={k.removesuffix("_errors"): data[k] for k in kinds if data[k]},
        first_failure=data.get("first_failure", ""),
    )


def run_wrk(
    opts: Options,
    base_url: str,
    load: Load,
    token: str,
    duration: int,
    script_args: Sequence[str] = (),
) -> WrkResult:
    return finish_wrk(start_wrk(opts, base_url, load, token, duration, script_args), load)


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
    assert load.form is not None
    process = start_wrk(opts, base_url, load, token, opts.duration, ["form", load.form])
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


def loads(opts: Options, with_redis: bool) -> list[Load]:
    form = str(
        httpx.QueryParams({"grant_type": "password", "username": EMAIL, "password": PASSWORD})
    )
    c, lc, rc, n = (
        opts.connections,
        opts.login_connections,
        opts.refresh_connections,
        opts.many_tokens,
    )
    redis_loads = [
        Load("strict-redis", "GET /bench/strict, Redis", "/bench/strict", c, target="redis"),
        Load(
            "strict-many-redis",
            f"GET /bench/strict, Redis, {n} tokens",
            "/bench/strict",
            c,
            mode="tokens",
            target="redis",
        ),
    ]
    return [
        Load("open", "GET /bench/open", "/bench/open", c),
        Load("header", "GET /bench/header", "/bench/header", c),
        Load("protected", "GET /bench/protected (stateless)", "/bench/protected", c),
        Load("strict", "GET /bench/strict, SQL", "/bench/strict", c),
        Load("strict-many", f"GET /bench/strict, SQL, {n} tokens", "/bench/strict", c, "tokens"),
        *(redis_loads if with_redis else []),
        Load("refresh", "POST /oauth/token, refresh grant", "/oauth/token", rc, "refresh"),
        Load("token", "POST /oauth/token, password grant", "/oauth/token", lc, "form", form),
    ]


def run_http(opts: Options, targets: dict[str, Target], chains: RefreshChains) -> HttpResults:
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
    workloads = {load.name: load for load in loads(opts, "redis" in targets)}
    main = targets["sql"]
    base_url, token = main.server.base_url, main.token

    def run_load(load: Load, duration: int) -> WrkResult:
        target = targets[load.target]
        args: list[str] = []
        if load.mode == "form":
            assert load.form is not None
            args = ["form", load.form]
        elif load.mode == "tokens":
            args = ["tokens", str(target.many_file)]
        elif load.mode == "refresh":
            args = ["refresh", str(chains.next_file())]
        return run_wrk(opts, target.server.base_url, load, target.token, duration, args)

    def step(name: str) -> None:
        if name in workloads:
            results.wrk.setdefault(name, []).append(run_load(workloads[name], opts.duration))
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
        run_load(load, 1)
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


GUARD_LOADS = (
    "open",
    "header",
    "protected",
    "strict",
    "strict-many",
    "strict-redis",
    "strict-many-redis",
)
GRANT_LOADS = ("refresh", "token")


def wrk_rows(opts: Options, res: HttpResults, names: Sequence[str]) -> list[list[str]]:
    rows = []
    for load in loads(opts, "strict-redis" in res.wrk):
        if load.name not in names:
            continue
        runs = res.wrk[load.name]
        rows.append(
            [
                load.name,
                load.label,
                str(load.connections),
                spread([w.rps for w in runs], "{:.0f}" if load.mode != "form" else "{:.1f}"),
                f"{med([w.p50_ms for w in runs]):.2f}",
                f"{med([w.p99_ms for w in runs]):.2f}",
                str(sum(w.errors for w in runs)),
            ]
        )
    return rows


def per_round(res: HttpResults, numerator: str, denominator: str) -> list[float] | None:
    """numerator rps / denominator rps, round by round; None if either did not run."""
    if numerator not in res.wrk or denominator not in res.wrk:
        return None
    pairs = zip(res.wrk[numerator], res.wrk[denominator], strict=True)
    return [n.rps / d.rps for n, d in pairs]


def failures(res: HttpResults, names: Sequence[str]) -> str:
    failed = sum(w.errors for name in names for w in res.wrk.get(name, []))
    if not failed:
        return ""
    lines = [f"WARNING: {failed} requests failed; these numbers are not valid"]
    for name in names:
        for i, w in enumerate(res.wrk.get(name, [])):
            if w.errors:
                kinds = ", ".join(f"{k} {n}" for k, n in w.error_kinds.items())
                first = f"; first lost chain: {w.first_failure}" if w.first_failure else ""
                lines.append(f"  {name}, round {i + 1}: {kinds}{first}")
    return "\n" + "\n".join(lines)


def http_table(opts: Options, res: HttpResults, redis_note: str | None) -> str:
    table = render(
        ["variant", "route", "conns", "req/s median (min-max)", "p50 ms", "p99 ms", "errors"],
        wrk_rows(opts, res, GUARD_LOADS),
    )
    checks: list[tuple[str, str, float | None]] = [
        ("protected/header", "header", TARGET_PROTECTED_HEADER),
        ("protected/open", "open", TARGET_PROTECTED_OPEN),
        ("strict/protected", "protected", TARGET_STRICT_PROTECTED),
        ("strict-redis/protected", "protected", TARGET_STRICT_PROTECTED),
        ("strict-many/protected", "protected", None),
        ("strict-many-redis/protected", "protected", None),
    ]
    rows = []
    for label, denominator, target in checks:
        numerator = label.split("/")[0]
        values = per_round(res, numerator, denominator)
        if values is None:
            rows.append([label, f"skipped: {redis_note or 'not run'}", "", ""])
        elif target is None:
            rows.append([label, spread(values, "{:.2f}"), "(none)", ""])
        else:
            rows.append(
                [
                    label,
                    spread(values, "{:.2f}"),
                    f">= {target:.2f}",
                    verdict(med(values) >= target),
                ]
            )
    ratios = render(["ratio (per round)", "median (min-max)", "target", "verdict"], rows)
    return f"{table}\n\n{ratios}{failures(res, GUARD_LOADS)}"


def grant_table(opts: Options, res: HttpResults) -> str:
    table = render(
        ["variant", "route", "conns", "grants/s median (min-max)", "p50 ms", "p99 ms", "errors"],
        wrk_rows(opts, res, GRANT_LOADS),
    )
    refresh = res.wrk["refresh"]
    lost = sum(w.chains_lost for w in refresh)
    notes = [
        f"refresh: {opts.refresh_connections} rotating chains (one family per wrk connection), "
        f"every token sent once; {med([1000 / w.rps for w in refresh]):.2f} ms of the server's "
        f"CPU per grant at the median rate; chains lost {lost}",
    ]
    ratio = per_round(res, "refresh", "token")
    assert ratio is not None
    notes.append(f"refresh/password grants per round: {spread(ratio, '{:.1f}')}x")
    return f"{table}\n\n" + "\n".join(notes) + failures(res, GRANT_LOADS)


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


def describe(opts: Options, redis_note: str | None) -> str:
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
        f"(login -c{opts.login_connections}, refresh -c{opts.refresh_connections}), loopback\n"
        f"revocations: SQLite (server 1)"
        + (
            f"; Redis {opts.redis_url} (server 2, same CPU, for the *-redis rows)"
            if redis_note is None
            else f"; Redis rows skipped: {redis_note}"
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_options(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    started = time.monotonic()
    load_before = os.getloadavg()
    load_cpus = {opts.load_cpu} if opts.load_cpu is not None else None
    redis_note = "--no-redis" if opts.redis_url is None else redis_problem(opts.redis_url)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(describe(opts, redis_note), flush=True)
        print("micro-benchmark: token verification in-process ...", flush=True)
        with pinned(load_cpus):  # off the server's CPU; the server is not up yet anyway
            micro = verification_rounds(
                tmp, opts.micro_rounds, opts.micro_slow_n, opts.micro_fast_n
            )
        print("starting the servers ...", flush=True)
        servers: dict[str, Server] = {}
        log_tails: dict[str, str] = {}
        try:
            servers["sql"] = start_server(tmp / "sql", opts.server_cpu)
            if redis_note is None:
                # Same CPU as the first: only one of them is ever under load.
                servers["redis"] = start_server(tmp / "redis", opts.server_cpu, opts.redis_url)
            print("signing in, minting tokens and refresh chains ...", flush=True)
            targets = {name: prepare_target(name, srv, opts) for name, srv in servers.items()}
            chains = RefreshChains(servers["sql"].base_url, tmp, opts.refresh_connections + 1)
            chains.prepare(opts.rounds + 1)  # +1: the warm-up
            with pinned(load_cpus):  # the probe and the wrk parent stay off the server's CPU
                http = run_http(opts, targets, chains)
        finally:
            for name, srv in servers.items():
                stop_server(srv)
                log_tails[name] = srv.log_tail()
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()

    print()
    print("== 1. HTTP: the guard's cost per request (wrk, same app, same middleware)")
    print(http_table(opts, http, redis_note))
    print()
    print("== 2. Token endpoint: refresh grants (rotation) and password grants")
    print(grant_table(opts, http))
    print()
    print("== 3. Login: token endpoint vs bare argon2id, and latency during a login burst")
    print(login_table(opts, http))
    print()
    print("== 4. Token verification in-process (Ed25519, per call)")
    print(micro_table(micro))
    print()
    if any(w.errors for runs in http.wrk.values() for w in runs):
        for name, tail in log_tails.items():
            print(f"\n-- server {name} log (tail), since requests failed:\n{tail.strip()}")
    print()
    print(
        f"took {elapsed:.0f} s · load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after (other tenants add noise: compare ratios, not absolutes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
