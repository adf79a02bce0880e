"""Fixtures that run the store contract suite on every SQL backend.

``backend`` is ``"sqlite"`` or ``"postgres"``. Per backend and test session one
database is created and migrated with the real migrations
(``database_url``, which is ``sqlite_database_url`` or
``postgres_database_url``); each test gets a fresh engine over it with every
table emptied (``engine``, ``sessionmaker``, ``user_store``, ``key_store``,
``refresh_store``). Suites with backends of their own (the revocation store
also runs on memory and Redis) ask for ``sqlite_engine`` or ``postgres_engine``
directly.
``empty_database_url`` gives a brand-new, unmigrated database per test.

PostgreSQL is real: ``BASTION_TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) names a server and a
maintenance database; test databases ``bastion_t_<hex>`` are created beside it
and dropped ``WITH (FORCE)`` afterwards. When the server cannot be reached
the PostgreSQL tests skip locally and fail when ``CI`` is set.

Redis is real too: ``BASTION_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``); ``redis_client`` skips or fails the same way,
and each test gets its own key prefix (``redis_prefix``), removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bastion.stores.redis import create_redis
from bastion.stores.sql import (
    SqlKeyStore,
    SqlRefreshTokenStore,
    SqlUserStore,
    create_engine,
    create_sessionmaker,
    upgrade,
)
from bastion.stores.sql.tables import metadata

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def postgres_admin_url() -> str:
    return os.environ.get("BASTION_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _asyncpg_dsn(url: str) -> str:
    """A DSN asyncpg itself understands (no ``+asyncpg`` driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _postgres_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_asyncpg_dsn(postgres_admin_url()), timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        reason = f"PostgreSQL unreachable at {postgres_admin_url()}: {e!r}"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database; yields its SQLAlchemy URL."""
    name = f"bastion_t_{secrets.token_hex(6)}"
    admin = await _postgres_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield (
                make_url(postgres_admin_url())
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
async def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite database migrated to head, shared by the whole test session."""
    url = sqlite_url(tmp_path_factory.mktemp("sqlite") / "bastion.db")
    await upgrade(url)
    return url


@pytest.fixture(scope="session")
async def postgres_database_url() -> AsyncIterator[str]:
    """A PostgreSQL database migrated to head, shared by the whole test session."""
    async with postgres_database() as url:
        await upgrade(url)
        yield url


@pytest.fixture(scope="session")
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A database migrated to head, shared by the session's tests on ``backend``."""
    return str(request.getfixturevalue(f"{backend}_database_url"))


@pytest.fixture
async def empty_database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A new database with no tables at all."""
    if backend == "sqlite":
        yield sqlite_url(tmp_path / "empty" / "bastion.db")
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def broken_database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL whose database cannot be opened: a directory for SQLite, a closed
    port for PostgreSQL."""
    if backend == "postgres":
        yield "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
        return
    before = set(threading.enumerate())
    yield sqlite_url(tmp_path)
    # aiosqlite answers a failed connect by queueing a stop whose result its
    # worker thread posts to the event loop later; wait for those threads, or
    # they post to a loop the test runner has closed.
    for thread in set(threading.enumerate()) - before:
        if "_connection_worker_thread" in thread.name:
            await anyio.to_thread.run_sync(thread.join, 5)


async def _empty_tables(engine: AsyncEngine) -> None:
    """Delete every row, children first. Plain ``DELETE`` rather than
    PostgreSQL's ``TRUNCATE``: on tables this small it is several times faster
    (``TRUNCATE`` swaps in new files for every table)."""
    names = [table.name for table in reversed(metadata.sorted_tables)]
    async with engine.begin() as connection:
        for name in names:
            await connection.execute(text(f"DELETE FROM {name}"))  # noqa: S608 (table names from metadata)


@asynccontextmanager
async def _emptied_engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        await _empty_tables(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_engine(sqlite_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine over the session's migrated SQLite database, its tables emptied."""
    async with _emptied_engine(sqlite_database_url) as engine:
        yield engine


@pytest.fixture
async def postgres_engine(postgres_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine over the session's migrated PostgreSQL database, its tables emptied."""
    async with _emptied_engine(postgres_database_url) as engine:
        yield engine


@pytest.fixture
def engine(backend: str, request: pytest.FixtureRequest) -> AsyncEngine:
    """An engine over the session's migrated database on ``backend``, its tables emptied."""
    engine: AsyncEngine = request.getfixturevalue(f"{backend}_engine")
    return engine


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
def user_store(sessionmaker: async_sessionmaker[AsyncSession]) -> SqlUserStore:
    return SqlUserStore(sessionmaker)


@pytest.fixture
def key_store(sessionmaker: async_sessionmaker[AsyncSession]) -> SqlKeyStore:
    return SqlKeyStore(sessionmaker)


@pytest.fixture
def refresh_store(sessionmaker: async_sessionmaker[AsyncSession]) -> SqlRefreshTokenStore:
    return SqlRefreshTokenStore(sessionmaker)


def redis_url() -> str:
    return os.environ.get("BASTION_TEST_REDIS_URL", DEFAULT_REDIS_URL)


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    """A client of the test Redis; skips locally (fails in CI) when unreachable."""
    client = create_redis(redis_url(), timeout=2, retries=0)
    try:
        try:
            await client.ping()
        except (OSError, RedisError) as e:
            reason = f"Redis unreachable at {redis_url()}: {e!r}"
            if os.environ.get("CI"):
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"bastion-test-{secrets.token_hex(6)}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis_client.delete(*keys)
