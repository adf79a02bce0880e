"""Bastion against its peers, fastapi-users and AuthX, on one machine in one run;
and Bastion with 1, 2 and 4 workers over PostgreSQL and Redis.

    .venv/bin/python bench/peers/run.py            # about 8 minutes
    .venv/bin/python bench/peers/run.py --quick    # about 2 minutes, a smoke test

The peers are installed from PyPI into bench/peers/.venv (versions pinned in
bench/peers/requirements.lock; reinstalled when that file changes); nothing
of theirs is in this repository. bench/peers/apps/ holds our minimal apps over
their public APIs. Every server is one uvicorn worker (uvloop, httptools, no
access log) pinned to CPU 0, wrk pinned to CPU 1, and every workload runs on
every server in each round, the order rotated, so a noisy neighbour slows all
alike; ratios are taken per round. See bench/peers/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
BENCH_DIR = PEERS_DIR.parent
REPO = BENCH_DIR.parent
# bench/run.py is imported as bench.run, and imports bench/micro.py as `micro`.
sys.path[:0] = [str(REPO), str(BENCH_DIR)]

import asyncpg  # noqa: E402  (after the path set-up above)
import httpx  # noqa: E402
import redis  # noqa: E402
from bench.run import (  # noqa: E402
    EMAIL,
    PASSWORD,
    Load,
    Options,
    RefreshChains,
    Server,
    WrkResult,
    free_port,
    launch,
    med,
    on_cpu,
    parse_options,
    render,
    run_wrk,
    server_env,
    sign_in,
    spread,
    start_server,
    stop_server,
    uvicorn_command,
)
from sqlalchemy.engine import make_url  # noqa: E402

from bastion.passwords import (  # noqa: E402
    DEFAULT_MEMORY_COST,
    DEFAULT_PARALLELISM,
    DEFAULT_TIME_COST,
)
from bastion.stores.sql.migrate import upgrade  # noqa: E402

VENV = PEERS_DIR / ".venv"
LOCK = PEERS_DIR / "requirements.lock"
APPS = PEERS_DIR / "apps"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


# ----------------------------------------------------------------- options


@dataclass(frozen=True)
class PeerOptions:
    wrk: Options  # bench/run.py's options: rounds, duration, connections, CPUs
    workers: tuple[int, ...]
    postgres_url: str | None
    redis_url: str | None


def parse(argv: Sequence[str] | None) -> PeerOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 4; quick 2)")
    parser.add_argument("--duration", type=int, help="seconds per run (default 5; quick 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c, protected route")
    parser.add_argument("--login-connections", type=int, default=4, help="wrk -c, login")
    parser.add_argument("--refresh-connections", type=int, default=4, help="wrk -c, refresh")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--workers", default="1,2,4", help="Bastion worker counts over PostgreSQL+Redis"
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the workers table")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    ns = parser.parse_args(argv)
    forwarded = ["--rounds", str(ns.rounds or (2 if ns.quick else 4))]
    forwarded += ["--duration", str(ns.duration or (2 if ns.quick else 5))]
    forwarded += ["--connections", str(ns.connections)]
    forwarded += ["--login-connections", str(ns.login_connections)]
    forwarded += ["--refresh-connections", str(ns.refresh_connections)]
    forwarded += ["--server-cpu", str(ns.server_cpu), "--load-cpu", str(ns.load_cpu)]
    forwarded += ["--no-pin"] if ns.no_pin else []
    workers = tuple(int(w) for w in ns.workers.split(",") if w.strip())
    return PeerOptions(
        wrk=parse_options(forwarded),
        workers=() if ns.no_scaling else workers,
        postgres_url=None if ns.no_scaling else ns.postgres_url,
        redis_url=None if ns.no_scaling else ns.redis_url,
    )


# ----------------------------------------------------------------- the peers' venv


def peer_python() -> str:
    """bench/peers/.venv's interpreter, (re)installed from requirements.lock
    when the lock changed. Same Python as this one, so the comparison is fair."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".lock-sha256"
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return str(python)
    print(f"installing the peers into {VENV} ...", flush=True)
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(LOCK)], check=True)
    stamp.write_text(digest)
    return str(python)


def installed_version(python: str, package: str) -> str:
    done = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


# ----------------------------------------------------------------- servers


def peer_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "PEER_"))}
    env.update(
        PEER_SECRET=secrets.token_urlsafe(32),
        PEER_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'users.db'}",
        PEER_DATABASE_PATH=str(tmp / "users.db"),
        PEER_ARGON2_M=str(DEFAULT_MEMORY_COST),
        PEER_ARGON2_T=str(DEFAULT_TIME_COST),
        PEER_ARGON2_P=str(DEFAULT_PARALLELISM),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def start_peer(tmp: Path, python: str, app: str, cpu: int | None) -> Server:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = uvicorn_command(app, port, python=python, app_dir=APPS)
    return launch(on_cpu(cpu, command), tmp, peer_env(tmp), port)


def cpu_list(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


@dataclass
class Scaled:
    """Bastion with ``workers`` uvicorn workers over its own PostgreSQL database."""

    workers: int
    server: Server
    database: str
    server_cpus: str  # "" when not pinned
    load_cpu: int | None


async def create_database(admin_url: str, name: str) -> str:
    url = make_url(admin_url)
    conn = await asyncpg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False), timeout=5
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    database_url = url.set(database=name).render_as_string(hide_password=False)
    await upgrade(database_url)
    return database_url


async def drop_database(admin_url: str, name: str) -> None:
    url = make_url(admin_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def start_scaled(tmp: Path, workers: int, opts: PeerOptions, prefix: str, database: str) -> Scaled:
    """``uvicorn --workers N`` of the bench app over PostgreSQL and Redis. Pinned
    to CPUs 0..N-1 with wrk on CPU N when the machine has them, else unpinned."""
    assert opts.postgres_url is not None
    assert opts.redis_url is not None
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = server_env(tmp, port, opts.redis_url)
    env.update(
        BASTION_DATABASE_URL=asyncio.run(create_database(opts.postgres_url, database)),
        BASTION_RATE_LIMIT_KEY_PREFIX=prefix,
        # 5 + 5 per worker: 7 idle workers stay well under max_connections=100.
        BASTION_DB_POOL_SIZE="5",
        BASTION_DB_MAX_OVERFLOW="5",
    )
    allowed = sorted(os.sched_getaffinity(0))
    command = uvicorn_command("bench.app:create_bench_app", port, workers=workers)
    pinned = opts.wrk.server_cpu is not None and len(allowed) > workers
    if pinned:
        cpus = cpu_list(allowed[:workers])
        command = ["taskset", "-c", cpus, *command]
        return Scaled(workers, launch(command, tmp, env, port), database, cpus, allowed[workers])
    return Scaled(workers, launch(command, tmp, env, port), database, "", None)


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def dependency_problem(opts: PeerOptions) -> str | None:
    """Why the workers table cannot run, or None."""
    if opts.postgres_url is None or opts.redis_url is None:
        return "--no-scaling"
    client = redis.Redis.from_url(opts.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        return f"Redis: {type(e).__name__}"
    finally:
        client.close()

    async def pg() -> None:
        assert opts.postgres_url is not None
        dsn = make_url(opts.postgres_url).set(drivername="postgresql")
        conn = await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=5)
        await conn.close()

    try:
        asyncio.run(pg())
    except (OSError, asyncpg.PostgresError) as e:
        return f"PostgreSQL: {type(e).__name__}"
    return None


# ----------------------------------------------------------------- sign-in


def form(**values: str) -> str:
    return str(httpx.QueryParams(values))


def peer_login(
    base_url: str, register: str, register_body: dict[str, str], login: str
) -> dict[str, str]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        created = client.post(register, json=register_body)
        if created.status_code != 201:
            raise RuntimeError(f"{base_url}{register} answered {created.status_code}")
        answer = client.post(login, data={"username": EMAIL, "password": PASSWORD})
        if answer.status_code != 200:
            raise RuntimeError(f"{base_url}{login} answered {answer.status_code}: {answer.text}")
        tokens: dict[str, str] = answer.json()
        return tokens


# ----------------------------------------------------------------- cases


@dataclass
class Case:
    """One wrk workload on one server; run once per round."""

    workload: str  # "protected", "strict", "login" or "refresh"
    impl: str  # "bastion", "fastapi-users", "authx", or "bastion xN"
    what: str
    base_url: str
    load: Load
    token: str
    args: Callable[[], list[str]] = lambda: []
    opts: Options | None = None
    results: list[WrkResult] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.impl}"


def bastion_cases(
    impl: str, base_url: str, token: str, chains: RefreshChains, o: Options, strict: bool
) -> list[Case]:
    login = form(grant_type="password", username=EMAIL, password=PASSWORD)
    cases = [
        Case(
            "protected",
            impl,
            "GET /bench/protected: stateless guard, cached verification",
            base_url,
            Load("protected", "", "/bench/protected", o.connections),
            token,
        ),
        Case(
            "login",
            impl,
            "POST /oauth/token password grant",
            base_url,
            Load("login", "", "/oauth/token", o.login_connections, "form", login),
            token,
            lambda: ["form", login],
        ),
        Case(
            "refresh",
            impl,
            "POST /oauth/token refresh grant: rotated, reuse-detected",
            base_url,
            Load("refresh", "", "/oauth/token", o.refresh_connections, "refresh"),
            token,
            lambda: ["refresh", str(chains.next_file())],
        ),
    ]
    if strict:
        cases.insert(
            1,
            Case(
                "strict",
                impl,
                "GET /bench/strict: + revocation check (1 s cache)",
                base_url,
                Load("strict", "", "/bench/strict", o.connections),
                token,
            ),
        )
    return cases


def run_case(case: Case, default: Options, duration: int) -> WrkResult:
    return run_wrk(
        case.opts or default, case.base_url, case.load, case.token, duration, case.args()
    )


def run_rounds(cases: list[Case], o: Options) -> None:
    print("warming up ...", flush=True)
    for case in cases:
        run_case(case, o, 1)
    for r in range(o.rounds):
        order = cases[r % len(cases) :] + cases[: r % len(cases)]
        print(f"round {r + 1}/{o.rounds}: {len(order)} runs of {o.duration} s", flush=True)
        for case in order:
            case.results.append(run_case(case, o, o.duration))


# ----------------------------------------------------------------- tables


def rate_format(workload: str) -> str:
    return "{:.1f}" if workload == "login" else "{:.0f}"


def peers_table(cases: list[Case], algorithms: dict[str, str]) -> str:
    by_key = {case.key: case for case in cases}
    rows: list[list[str]] = []
    for workload in ("protected", "strict", "login", "refresh"):
        base = by_key.get(f"{'protected' if workload == 'strict' else workload}/bastion")
        for impl in ("bastion", "fastapi-users", "authx"):
            case = by_key.get(f"{workload}/{impl}")
            if case is None:
                if workload == "refresh" and impl == "fastapi-users":
                    rows.append(
                        [workload, impl, "no refresh tokens by default", "n/a", "", "", "", "n/a"]
                    )
                continue
            runs = case.results
            ratio = ""
            if base is not None:
                per_round = [
                    c.rps / b.rps for c, b in zip(runs, base.results, strict=True) if b.rps
                ]
                ratio = spread(per_round, "{:.2f}")
            rows.append(
                [
                    workload,
                    f"{impl} ({algorithms[impl]})",
                    case.what,
                    spread([w.rps for w in runs], rate_format(workload)),
                    f"{med([w.p50_ms for w in runs]):.2f}",
                    f"{med([w.p99_ms for w in runs]):.2f}",
                    str(sum(w.errors for w in runs)),
                    ratio,
                ]
            )
    headers = [
        "workload",
        "implementation",
        "what",
        "req/s median (min-max)",
        "p50 ms",
        "p99 ms",
        "errors",
        "x Bastion (per round)",
    ]
    return render(headers, rows)


def scaling_table(cases: list[Case], scaled: list[Scaled], note: str) -> str:
    by_key = {case.key: case for case in cases}
    workloads = ("protected", "strict", "login", "refresh")
    one = {w: by_key.get(f"{w}/bastion x1") for w in workloads}
    rows = []
    for s in scaled:
        row = [str(s.workers), s.server_cpus or "unpinned"]
        for w in workloads:
            case = by_key[f"{w}/bastion x{s.workers}"]
            rates = [r.rps for r in case.results]
            cell = spread(rates, rate_format(w))
            base = one[w]
            if base is not None and s.workers > 1:
                per_round = [c.rps / b.rps for c, b in zip(case.results, base.results, strict=True)]
                cell += f" [{med(per_round):.2f}x]"
            if sum(r.errors for r in case.results):
                cell += f" ({sum(r.errors for r in case.results)} errors)"
            row.append(cell)
        rows.append(row)
    headers = ["workers", "server CPUs", *(f"{w} req/s" for w in workloads)]
    return render(headers, rows) + "\n" + note


def per_core_table(cases: list[Case]) -> str:
    """The one-worker, one-CPU numbers the deployment guide's sizing table uses."""
    by_key = {case.key: case for case in cases}
    rows = []
    for label, key in (
        ("token verifications (protected route, stateless)", "protected"),
        ("token verifications (strict: + revocation check)", "strict"),
        ("logins (password grant, argon2id m=19456 t=2 p=1)", "login"),
        ("refresh grants (rotation + reuse detection)", "refresh"),
    ):
        cells = [label]
        for impl in ("bastion", "bastion x1"):
            case = by_key.get(f"{key}/{impl}")
            cells.append(spread([r.rps for r in case.results], rate_format(key)) if case else "-")
        rows.append(cells)
    return render(["per core (1 worker on 1 CPU)", "SQLite", "PostgreSQL + Redis"], rows)


def failures(cases: list[Case]) -> str:
    lines = []
    for case in cases:
        for i, w in enumerate(case.results):
            if w.errors:
                kinds = ", ".join(f"{k} {n}" for k, n in w.error_kinds.items())
                extra = f"; {w.first_failure}" if w.first_failure else ""
                lines.append(f"  {case.key}, round {i + 1}: {kinds}{extra}")
    return (
        ("\nWARNING: requests failed; those rows are not valid\n" + "\n".join(lines))
        if lines
        else ""
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


# ----------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    o = opts.wrk
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    python = peer_python()
    versions = {
        "fastapi-users": installed_version(python, "fastapi-users"),
        "authx": installed_version(python, "authx"),
    }
    problem = dependency_problem(opts) if opts.workers else "--no-scaling"
    started = time.monotonic()
    load_before = os.getloadavg()
    pin = (
        f"servers on CPU {o.server_cpu}, wrk on CPU {o.load_cpu}"
        if o.server_cpu is not None
        else "no CPU pinning"
    )
    print(
        f"Python {platform.python_version()} · {cpu_model()} · {os.cpu_count()} CPUs · {pin}\n"
        f"fastapi-users {versions['fastapi-users']} · AuthX {versions['authx']} · "
        f"{o.rounds} rounds x {o.duration} s, order rotated per round · "
        f"argon2id m={DEFAULT_MEMORY_COST} KiB t={DEFAULT_TIME_COST} p={DEFAULT_PARALLELISM} "
        "everywhere",
        flush=True,
    )
    prefix = f"bastion:bench:{secrets.token_hex(6)}"
    servers: list[Server] = []
    scaled: list[Scaled] = []
    with tempfile.TemporaryDirectory(prefix="bastion-peers-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            print("starting the servers ...", flush=True)
            bastion = start_server(tmp / "bastion", o.server_cpu)
            fu = start_peer(
                tmp / "fastapi-users", python, "fastapi_users_app:create_app", o.server_cpu
            )
            ax = start_peer(tmp / "authx", python, "authx_app:create_app", o.server_cpu)
            servers += [bastion, fu, ax]
            if problem is None:
                for n in opts.workers:
                    name = f"bastion_bench_{secrets.token_hex(4)}_w{n}"
                    scaled.append(start_scaled(tmp / f"workers-{n}", n, opts, prefix, name))

            print("signing in ...", flush=True)
            token = sign_in(bastion.base_url)
            chains = RefreshChains(bastion.base_url, tmp, o.refresh_connections + 1)
            chains.prepare(o.rounds + 1)
            fu_tokens = peer_login(
                fu.base_url,
                "/auth/register",
                {"email": EMAIL, "password": PASSWORD},
                "/auth/jwt/login",
            )
            ax_tokens = peer_login(
                ax.base_url, "/register", {"email": EMAIL, "password": PASSWORD}, "/login"
            )
            login = form(username=EMAIL, password=PASSWORD)
            cases = bastion_cases("bastion", bastion.base_url, token, chains, o, strict=True)
            cases += [
                Case(
                    "protected",
                    "fastapi-users",
                    "GET /protected: current_user(active=True), JWT + user row",
                    fu.base_url,
                    Load("protected", "", "/protected", o.connections),
                    fu_tokens["access_token"],
                ),
                Case(
                    "login",
                    "fastapi-users",
                    "POST /auth/jwt/login",
                    fu.base_url,
                    Load("login", "", "/auth/jwt/login", o.login_connections, "form", login),
                    fu_tokens["access_token"],
                    lambda: ["form", login],
                ),
                Case(
                    "protected",
                    "authx",
                    "GET /protected: access_token_required",
                    ax.base_url,
                    Load("protected", "", "/protected", o.connections),
                    ax_tokens["access_token"],
                ),
                Case(
                    "login",
                    "authx",
                    "POST /login (our route: sqlite3 + pwdlib)",
                    ax.base_url,
                    Load("login", "", "/login", o.login_connections, "form", login),
                    ax_tokens["access_token"],
                    lambda: ["form", login],
                ),
                Case(
                    "refresh",
                    "authx",
                    "POST /refresh: refresh_token_required, not rotated",
                    ax.base_url,
                    Load("refresh", "", "/refresh", o.refresh_connections, "form", "x=1"),
                    ax_tokens["refresh_token"],
                    lambda: ["form", "x=1"],
                ),
            ]
            for s in scaled:
                s_token = sign_in(s.server.base_url)
                s_chains = RefreshChains(
                    s.server.base_url, tmp / f"workers-{s.workers}", o.refresh_connections + 1
                )
                s_chains.prepare(o.rounds + 1)
                s_opts = dataclasses.replace(o, load_cpu=s.load_cpu)
                for case in bastion_cases(
                    f"bastion x{s.workers}", s.server.base_url, s_token, s_chains, o, strict=True
                ):
                    case.opts = s_opts
                    cases.append(case)
            run_rounds(cases, o)
        finally:
            for server in [*servers, *(s.server for s in scaled)]:
                stop_server(server)
            if opts.postgres_url is not None:
                for s in scaled:
                    asyncio.run(drop_database(opts.postgres_url, s.database))
            if opts.redis_url is not None and problem is None:
                delete_prefix(opts.redis_url, prefix)

    algorithms = {"bastion": "EdDSA", "fastapi-users": "HS256", "authx": "HS256"}
    peer_cases = [c for c in cases if not c.impl.startswith("bastion x")]
    print()
    print("== Bastion and its peers: one uvicorn worker each, same CPU, same run")
    print(peers_table(peer_cases, algorithms))
    print(
        "x Bastion: this row's req/s over Bastion's in the same round (strict: over "
        "Bastion's protected), median (min-max).\nBastion, fastapi-users: SQLite "
        "(aiosqlite); AuthX: our sqlite3 user table. wrk -t1, -c"
        f"{o.connections} protected, -c{o.login_connections} login, "
        f"-c{o.refresh_connections} refresh. Bastion's refresh rotates a chain per "
        "connection (bench/wrk.lua); AuthX's re-sends one refresh token." + failures(peer_cases)
    )
    if scaled:
        cpus = os.cpu_count() or 1
        note = f"[Nx]: over 1 worker in the same round. This machine has {cpus} CPUs" + (
            ": workers beyond 1 share them with wrk, PostgreSQL and Redis (unpinned), "
            "so these rows show contention, not scaling; run on >= 5 CPUs to see "
            "scaling."
            if cpus < max(opts.workers) + 1
            else "; N workers pinned to CPUs 0..N-1, wrk on CPU N (PostgreSQL and Redis unpinned)."
        )
        print()
        print("== Bastion over PostgreSQL + Redis: 1, 2 and 4 uvicorn workers")
        scaled_cases = [c for c in cases if c.impl.startswith("bastion x")]
        print(scaling_table(scaled_cases, scaled, note) + failures(scaled_cases))
    else:
        print(f"\n(workers table skipped: {problem})")
    print()
    print("== Per core, for sizing (docs/deploy.md)")
    print(per_core_table(cases))
    load_after = os.getloadavg()
    print(
        f"\ntook {time.monotonic() - started:.0f} s · load average {load_before[0]:.2f} "
        f"before, {load_after[0]:.2f} after (compare ratios, not absolutes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
