"""Fixtures that run the store contract suite on every SQL backend.

``backend`` is ``"sqlite"`` or ``"postgres"``. Per backend and test session one
database is created and migrated with the real migrations
(``database_url``, which is ``sqlite_database_url`` or
``postgres_database_url``); each test gets a fresh engine over it with every
table emptied (``engine``, ``sessionmaker``, ``user_store``, ``key_store``,
``refresh_store``, ``role_store``, ``audit_store``). "Emptied" means as the
migrations left it: the roles migration 0003 seeds (``user``, ``editor``,
``admin``, with their parents and permissions) are put back after every table
is emptied, exactly as they were right after the upgrade. Suites with backends
of their own (the revocation store also runs on memory and Redis) ask for
``sqlite_engine`` or ``postgres_engine`` directly.
``empty_database_url`` gives a brand-new, unmigrated database per test.

PostgreSQL is real (provisioned by :mod:`tests.backends`): ``BASTION_TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) names a server and a
maintenance database; test databases ``bastion_t_<hex>`` are created beside it
and dropped ``WITH (FORCE)`` afterwards. When the server cannot be reached
the PostgreSQL tests skip locally and fail when ``CI`` is set.

Redis is real too: ``BASTION_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``); ``redis_client`` skips or fails the same way,
and each test gets its own key prefix (``redis_prefix``), removed afterwards.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tests.backends import delete_keys, postgres_database, redis_connection

from bastion.stores.sql import (
    SqlAuditStore,
    SqlKeyStore,
    SqlRefreshTokenStore,
    SqlRoleStore,
    SqlUserStore,
    create_engine,
    create_sessionmaker,
    upgrade,
)
from bastion.stores.sql.tables import metadata

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SEEDED_TABLES: tuple[Table, ...] = tuple(
    metadata.tables[name] for name in ("roles", "role_parents", "role_permissions", "oauth_clients")
)
"""Tables the migrations put rows in (parents first); restored after each
test's emptying."""

Seed = list[tuple[Table, list[dict[str, Any]]]]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


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


async def read_seed(url: str) -> Seed:
    """The rows the migrations put in :data:`SEEDED_TABLES` of ``url``."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return [
                (table, [dict(row) for row in (await connection.execute(select(table))).mappings()])
                for table in SEEDED_TABLES
            ]
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def sqlite_seed(sqlite_database_url: str) -> Seed:
    """The seeded rows of the session's SQLite database, read right after migrating."""
    return await read_seed(sqlite_database_url)


@pytest.fixture(scope="session")
async def postgres_seed(postgres_database_url: str) -> Seed:
    """The seeded rows of the session's PostgreSQL database, read right after migrating."""
    return await read_seed(postgres_database_url)


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


async def _empty_tables(engine: AsyncEngine, seed: Seed) -> None:
    """Delete every row, children first, then put the seeded rows back, in
    one transaction. Plain ``DELETE`` rather than PostgreSQL's ``TRUNCATE``: on
    tables this small it is several times faster (``TRUNCATE`` swaps in new
    files for every table)."""
    names = [table.name for table in reversed(metadata.sorted_tables)]
    async with engine.begin() as connection:
        for name in names:
            await connection.execute(text(f"DELETE FROM {name}"))  # noqa: S608 (table names from metadata)
        for table, rows in seed:
            if rows:
                await connection.execute(insert(table), rows)


@asynccontextmanager
async def _emptied_engine(url: str, seed: Seed) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        await _empty_tables(engine, seed)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_engine(sqlite_database_url: str, sqlite_seed: Seed) -> AsyncIterator[AsyncEngine]:
    """An engine over the session's migrated SQLite database, its tables emptied."""
    async with _emptied_engine(sqlite_database_url, sqlite_seed) as engine:
        yield engine


@pytest.fixture
async def postgres_engine(
    postgres_database_url: str, postgres_seed: Seed
) -> AsyncIterator[AsyncEngine]:
    """An engine over the session's migrated PostgreSQL database, its tables emptied."""
    async with _emptied_engine(postgres_database_url, postgres_seed) as engine:
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


@pytest.fixture
def role_store(sessionmaker: async_sessionmaker[AsyncSession]) -> SqlRoleStore:
    return SqlRoleStore(sessionmaker)


@pytest.fixture
def audit_store(sessionmaker: async_sessionmaker[AsyncSession]) -> SqlAuditStore:
    return SqlAuditStore(sessionmaker)


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    """A client of the test Redis; skips locally (fails in CI) when unreachable."""
    async with redis_connection() as client:
        yield client


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"bastion-test-{secrets.token_hex(6)}:"
    yield prefix
    await delete_keys(redis_client, f"{prefix}*")
