"""Provisioning of the real backing services the tests use, shared by the store
contract suite (``tests/stores``) and the HTTP tests that run a whole Bastion
over PostgreSQL or Redis.

PostgreSQL: ``BASTION_TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) names a server and a
maintenance database; :func:`postgres_database` creates ``bastion_t_<hex>``
beside it and drops it ``WITH (FORCE)`` afterwards.

Redis: ``BASTION_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

Either one unreachable skips the test locally and fails it when ``CI`` is set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from bastion.stores.redis import create_redis

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def unavailable(reason: str) -> NoReturn:
    """Skip locally, fail in CI: a CI run must not go green by skipping."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def postgres_admin_url() -> str:
    return os.environ.get("BASTION_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _asyncpg_dsn(url: str) -> str:
    """A DSN asyncpg itself understands (no ``+asyncpg`` driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _postgres_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_asyncpg_dsn(postgres_admin_url()), timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        unavailable(f"PostgreSQL unreachable at {postgres_admin_url()}: {e!r}")


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


def redis_url() -> str:
    return os.environ.get("BASTION_TEST_REDIS_URL", DEFAULT_REDIS_URL)


@asynccontextmanager
async def redis_connection() -> AsyncIterator[Redis]:
    """A client of the test Redis, closed afterwards; skips (or fails in CI)
    when the server does not answer."""
    client = create_redis(redis_url(), timeout=2, retries=0)
    try:
        try:
            await client.ping()
        except (OSError, RedisError) as e:
            unavailable(f"Redis unreachable at {redis_url()}: {e!r}")
        yield client
    finally:
        await client.aclose()


async def delete_keys(client: Redis, *patterns: str) -> None:
    """Delete every key matching any of ``patterns`` (``SCAN``, never ``KEYS``)."""
    keys = [key for pattern in patterns async for key in client.scan_iter(match=pattern)]
    if keys:
        await client.delete(*keys)
