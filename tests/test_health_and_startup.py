"""``/health`` per dependency, start-up that waits for a late PostgreSQL or
Redis (bounded retries, exponential backoff), and connection pools sized by
settings.

Everything runs against the real servers: the test PostgreSQL and Redis, a
closed port for "down", a real ``redis-server`` started late on a port of its
own, and a TCP relay to PostgreSQL that starts listening late. The sleep of
:meth:`Bastion.startup` is injected: it records each wait and starts the late
dependency at the chosen retry, so no test waits on a wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bastion.core import Bastion
from bastion.errors import ServiceUnavailable
from bastion.readiness import backoff_delays, wait_until_ready
from bastion.settings import Settings
from bastion.stores.redis import create_redis, redis_errors
from bastion.stores.sql import create_engine
from bastion.stores.sql.migrate import upgrade
from tests.backends import (
    postgres_admin_url,
    postgres_database,
    redis_connection,
    redis_url,
    unavailable,
)
from tests.http_checks import assert_no_leak
from tests.server_processes import HOST, free_port
from tests.token_flows import http_client

pytestmark = pytest.mark.anyio

CLOSED_REDIS = "redis://127.0.0.1:1/0"
CLOSED_POSTGRES = "postgresql+asyncpg://bastion:s3cret-pw@127.0.0.1:1/bastion"
"""A password in the URL, to show it never reaches a log line or an answer."""

Sleep = Callable[[float], Awaitable[None]]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so one migrated PostgreSQL database serves the module."""
    return "asyncio"


@pytest.fixture(scope="module")
async def pg_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this module."""
    async with postgres_database() as url:
        await upgrade(url)
        yield url


@pytest.fixture(scope="module")
async def live_redis() -> AsyncIterator[str]:
    """The test Redis URL; skips (or fails in CI) when it does not answer."""
    async with redis_connection():
        yield redis_url()


class RecordingSleep:
    """A sleep for :meth:`Bastion.startup`: records each wait and, at wait
    number ``start_at``, runs ``start`` (the late dependency comes up)."""

    def __init__(
        self, start_at: int = 0, start: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.delays: list[float] = []
        self._start_at = start_at
        self._start = start

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self._start is not None and len(self.delays) == self._start_at:
            await self._start()


@asynccontextmanager
async def started(bastion: Bastion, sleep: Sleep) -> AsyncIterator[Bastion]:
    await bastion.startup(sleep=sleep)
    try:
        yield bastion
    finally:
        await bastion.shutdown()


async def health(bastion: Bastion) -> httpx.Response:
    async with http_client(bastion) as http:
        return await http.get("/health")


# ------------------------------------------------------------------ /health


async def test_health_reports_both_dependencies_up(
    make_settings: Callable[..., Settings], pg_url: str, live_redis: str
) -> None:
    """PostgreSQL and Redis answering: 200 and "ok" for each."""
    bastion = Bastion(make_settings(database_url=pg_url, redis_url=live_redis))
    async with started(bastion, RecordingSleep()):
        response = await health(bastion)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


@pytest.mark.parametrize(
    ("database", "redis", "status", "expected"),
    [
        pytest.param("up", None, 200, ("ok", "not_configured"), id="no-redis"),
        pytest.param("up", "down", 503, ("ok", "down"), id="redis-down"),
        pytest.param("down", "up", 503, ("down", "ok"), id="database-down"),
        pytest.param("down", "down", 503, ("down", "down"), id="both-down"),
        pytest.param("down", None, 503, ("down", "not_configured"), id="database-down-no-redis"),
    ],
)
async def test_health_names_the_dependency_that_is_down(
    make_settings: Callable[..., Settings],
    pg_url: str,  # skips (or fails in CI) without PostgreSQL
    live_redis: str,
    database: str,
    redis: str | None,
    status: int,
    expected: tuple[str, str],
) -> None:
    """Each configured dependency is reported; any one down makes the answer
    503 "unavailable"; the answer leaks no URL, password or driver name."""
    # /health runs `SELECT 1` only: the maintenance database serves as "up".
    database_url = postgres_admin_url() if database == "up" else CLOSED_POSTGRES
    redis_url_ = {"up": live_redis, "down": CLOSED_REDIS, None: None}[redis]
    # No lifespan: start-up would refuse a database that is down, and the point
    # is what a running server answers when a dependency goes away.
    bastion = Bastion(make_settings(database_url=database_url, redis_url=redis_url_))
    try:
        response = await health(bastion)
    finally:
        await bastion.shutdown()
    assert response.status_code == status
    overall = "ok" if status == 200 else "unavailable"
    assert response.json() == {"status": overall, "database": expected[0], "redis": expected[1]}
    assert_no_leak(response, "s3cret-pw", "127.0.0.1", "asyncpg", "redis://")


async def test_health_sees_redis_come_back_without_a_restart(
    make_settings: Callable[..., Settings], pg_url: str, tmp_path: Path
) -> None:
    """A server that started while Redis was down reports it down, then "ok"
    once a Redis listens on that address: the client reconnects by itself."""
    port = free_port()
    settings = make_settings(
        database_url=pg_url, redis_url=f"redis://{HOST}:{port}/0", startup_retries=0
    )
    bastion = Bastion(settings)
    async with started(bastion, RecordingSleep()):
        assert (await health(bastion)).json()["redis"] == "down"
        async with redis_server(port, tmp_path):
            response = await health(bastion)
    assert response.status_code == 200
    assert response.json()["redis"] == "ok"


# ------------------------------------------------------------------ start-up


@pytest.mark.parametrize(
    ("retries", "delay", "expected"),
    [
        pytest.param(0, 0.5, [], id="no-retries"),
        pytest.param(5, 0.5, [0.5, 1.0, 2.0, 4.0, 8.0], id="defaults"),
        pytest.param(7, 0.5, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0], id="capped"),
        pytest.param(3, 0.0, [0.0, 0.0, 0.0], id="no-delay"),
    ],
)
def test_backoff_doubles_up_to_the_cap(retries: int, delay: float, expected: list[float]) -> None:
    """The waits between start-up attempts: ``delay``, doubling, at most 10 s."""
    assert backoff_delays(retries, delay) == expected


async def test_wait_retries_only_what_is_down_and_gives_up_on_a_required_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dependency that answers is not asked again; one required dependency
    still down after the retries raises ServiceUnavailable naming it, after
    one logged wait per retry."""
    calls = {"database": 0, "redis": 0}

    def probe(name: str, ok: bool) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            calls[name] += 1
            return ok

        return check

    sleep = RecordingSleep()
    with (
        caplog.at_level(logging.WARNING, "bastion.startup"),
        pytest.raises(ServiceUnavailable, match="database"),
    ):
        await wait_until_ready(
            {"database": probe("database", False), "redis": probe("redis", True)},
            retries=3,
            delay=0.25,
            optional={"redis"},
            sleep=sleep,
        )
    assert sleep.delays == [0.25, 0.5, 1.0]
    assert calls == {"database": 4, "redis": 1}
    waits = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert waits == [
        "start-up: database unreachable; retry 1 of 3 in 0.25 s",
        "start-up: database unreachable; retry 2 of 3 in 0.50 s",
        "start-up: database unreachable; retry 3 of 3 in 1.00 s",
    ]
    assert "giving up" in caplog.records[-1].getMessage()


async def test_startup_gives_up_when_the_database_stays_down(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL never answering: start-up fails with 503's error after
    BASTION_STARTUP_RETRIES waits, and no log line carries the URL or password."""
    settings = make_settings(
        database_url=CLOSED_POSTGRES, startup_retries=2, startup_retry_delay=0.1
    )
    bastion = Bastion(settings)
    sleep = RecordingSleep()
    with caplog.at_level(logging.DEBUG, "bastion"):
        with pytest.raises(ServiceUnavailable, match="database"):
            await bastion.startup(sleep=sleep)
        await bastion.shutdown()
    assert sleep.delays == [0.1, 0.2]
    assert "s3cret-pw" not in caplog.text
    assert "127.0.0.1:1" not in caplog.text


async def test_startup_goes_on_without_redis_after_the_retries(
    make_settings: Callable[..., Settings], pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis never answering: start-up ends (Redis is optional: its users fail
    closed with 503), says so in an error line, and /health reports it down."""
    settings = make_settings(
        database_url=pg_url, redis_url=CLOSED_REDIS, startup_retries=2, startup_retry_delay=0.1
    )
    bastion = Bastion(settings)
    sleep = RecordingSleep()
    with caplog.at_level(logging.WARNING, "bastion.startup"):
        async with started(bastion, sleep):
            response = await health(bastion)
    assert sleep.delays == [0.1, 0.2]
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "redis": "down"}
    [given_up] = [r for r in caplog.records if "starting without it" in r.getMessage()]
    assert given_up.levelno == logging.ERROR


@asynccontextmanager
async def redis_server(port: int, directory: Path) -> AsyncIterator[None]:
    """A real ``redis-server`` on ``port`` (no persistence), stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    process = await asyncio.create_subprocess_exec(
        *[binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        client = create_redis(f"redis://{HOST}:{port}/0", timeout=1, retries=0)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                try:
                    await client.ping()
                    break
                except (RedisError, OSError):
                    if loop.time() > deadline or process.returncode is not None:
                        raise
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        yield
    finally:
        process.terminate()
        await process.wait()


async def test_startup_waits_for_a_late_redis(
    make_settings: Callable[..., Settings],
    pg_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis listening only from the second retry on: start-up waits twice
    (logged, with backoff), then starts with Redis "ok"."""
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:

        async def start_redis() -> None:
            await stack.enter_async_context(redis_server(port, tmp_path))

        sleep = RecordingSleep(start_at=2, start=start_redis)
        settings = make_settings(
            database_url=pg_url,
            redis_url=f"redis://{HOST}:{port}/0",
            startup_retries=5,
            startup_retry_delay=0.05,
        )
        bastion = Bastion(settings)
        with caplog.at_level(logging.INFO, "bastion.startup"):
            async with started(bastion, sleep):
                response = await health(bastion)
    assert sleep.delays == [0.05, 0.1]
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    messages = [r.getMessage() for r in caplog.records]
    assert "start-up: redis unreachable; retry 2 of 5 in 0.10 s" in messages
    assert "start-up: dependencies reachable after 2 retries" in messages


class LateRelay:
    """A TCP relay to PostgreSQL that starts listening only when told: a
    database server that is "briefly late" as the client sees it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._accepted: set[asyncio.StreamWriter] = set()

    async def listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, HOST, self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Every accepted connection is closed here, whatever happens, so none
        # outlives the test (an unclosed one is a ResourceWarning at exit).
        self._accepted.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        for writer in self._accepted:
            writer.close()


async def test_startup_waits_for_a_late_postgres(
    make_settings: Callable[..., Settings], pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL reachable only from the third retry on: start-up waits three
    times, then finds its signing key and serves with the database "ok"."""
    url = make_url(pg_url)
    relay = LateRelay(url.host or HOST, url.port or 5432)
    late_url = url.set(host=HOST, port=relay.port).render_as_string(hide_password=False)
    sleep = RecordingSleep(start_at=3, start=relay.listen)
    bastion = Bastion(
        make_settings(database_url=late_url, startup_retries=4, startup_retry_delay=0.01)
    )
    try:
        with caplog.at_level(logging.INFO, "bastion.startup"):
            async with started(bastion, sleep):
                response = await health(bastion)
                jwks = (await bastion.keys.jwks())["keys"]
    finally:
        await relay.aclose()
    assert sleep.delays == [0.01, 0.02, 0.04]
    assert response.json() == {"status": "ok", "database": "ok", "redis": "not_configured"}
    assert len(jwks) >= 1
    assert "start-up: dependencies reachable after 3 retries" in caplog.text


# ------------------------------------------------------------------ pools


async def test_full_database_pool_answers_unavailable_after_the_pool_timeout(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    """BASTION_DB_POOL_SIZE=1, MAX_OVERFLOW=0: while one connection is taken,
    the next query waits BASTION_DB_POOL_TIMEOUT, then is a 503 error, not a hang."""
    settings = make_settings(
        database_url=pg_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.2
    )
    bastion = Bastion(settings)
    loop = asyncio.get_running_loop()
    try:
        async with bastion.engine.connect() as held:
            await held.execute(text("SELECT 1"))
            began = loop.time()
            with pytest.raises(ServiceUnavailable, match="busy"):
                await bastion.accounts.get_by_email("nobody@example.com")
            waited = loop.time() - began
        assert 0.2 <= waited < 2
        assert await bastion.accounts.get_by_email("nobody@example.com") is None
    finally:
        await bastion.shutdown()


async def test_full_redis_pool_waits_then_answers_unavailable(live_redis: str) -> None:
    """BASTION_REDIS_MAX_CONNECTIONS=1: a command finding the one connection
    taken waits (blocking pool) and fails as unavailable after the timeout,
    instead of opening another connection."""
    client = create_redis(live_redis, timeout=0.2, retries=0, max_connections=1)
    pool = client.connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    assert pool.max_connections == 1
    try:
        taken = await pool.get_connection()
        try:
            with pytest.raises(ServiceUnavailable), redis_errors():
                await client.ping()
        finally:
            await pool.release(taken)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_pool_settings_reach_the_engine_and_redis(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The pool settings configure PostgreSQL's pool and Redis's; SQLite takes
    the pool size only and ignores the rest."""
    settings = make_settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/x",
        redis_url="redis://127.0.0.1:6379/0",
        db_pool_size=3,
        db_max_overflow=4,
        db_pool_timeout=1.5,
        redis_max_connections=7,
    )
    bastion = Bastion(settings)  # nothing connects before start-up
    try:
        pool = bastion.engine.pool
        assert (pool.size(), pool.timeout(), pool._max_overflow) == (3, 1.5, 4)
        assert bastion.redis is not None
        assert bastion.redis.connection_pool.max_connections == 7
    finally:
        await bastion.shutdown()
    sqlite = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", pool_size=2, max_overflow=0)
    try:
        assert sqlite.pool.size() == 2
    finally:
        await sqlite.dispose()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("db_pool_size", 0),
        ("db_max_overflow", -1),
        ("db_pool_timeout", 0),
        ("redis_max_connections", 0),
        ("startup_retries", -1),
        ("startup_retry_delay", -0.5),
    ],
)
def test_nonsense_pool_and_startup_settings_are_refused(name: str, value: float) -> None:
    """A pool of no connections, a negative retry count or delay: refused at load."""
    with pytest.raises(ValidationError, match=name):
        Settings(_env_file=None, **{name: value})  # type: ignore[arg-type]
