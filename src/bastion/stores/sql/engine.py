"""Async engines and sessions for SQLite and PostgreSQL.

Accepted URLs (``BASTION_DATABASE_URL``):

=====================================  =====================================
given                                  used
=====================================  =====================================
``sqlite+aiosqlite:///./bastion.db``   as is (the default)
``sqlite:///./bastion.db``             rewritten to ``sqlite+aiosqlite://``
``postgresql+asyncpg://u:p@h/db``      as is
``postgresql://u:p@h/db``              rewritten to ``postgresql+asyncpg://``
``postgres://u:p@h/db``                rewritten to ``postgresql+asyncpg://``
=====================================  =====================================

Any other backend or a synchronous driver (``postgresql+psycopg2``) is a
:class:`~bastion.errors.ConfigurationError`.

SQLite connections get ``foreign_keys=ON``, ``journal_mode=WAL`` (readers do
not block the writer), ``busy_timeout=5000`` (writers queue instead of failing
with "database is locked") and ``synchronous=NORMAL`` (safe with WAL). The
database file's parent directory is created if it is missing.

PostgreSQL engines use ``pool_pre_ping`` so a connection the server dropped is
replaced instead of failing the next request. Their pool is sized by the
caller (``BASTION_DB_POOL_SIZE``, ``BASTION_DB_MAX_OVERFLOW``,
``BASTION_DB_POOL_TIMEOUT``; see :func:`create_engine`), and a connection
attempt gives up after ``connect_timeout`` seconds rather than asyncpg's 60,
so an unreachable server turns into a prompt 503 and a prompt ``/health``.
SQLite takes none of these: one file, one writer, a pool of ``pool_size``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from bastion.errors import ConfigurationError, ServiceUnavailable

__all__ = [
    "SQLITE_PRAGMAS",
    "create_engine",
    "create_sessionmaker",
    "database_errors",
    "normalize_database_url",
]

SQLITE_PRAGMAS: tuple[tuple[str, str], ...] = (
    ("busy_timeout", "5000"),  # first, so that switching to WAL waits for a lock too
    ("foreign_keys", "ON"),
    ("journal_mode", "WAL"),
    ("synchronous", "NORMAL"),
)
"""Set on every new SQLite connection, in this order."""

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_ACCEPTED = {"sqlite+aiosqlite", "postgresql+asyncpg"}


def normalize_database_url(url: str | URL) -> URL:
    """Parse ``url`` and rewrite a driverless SQLite/PostgreSQL URL to the async
    driver; raise :class:`ConfigurationError` for anything else."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigurationError(["BASTION_DATABASE_URL is not a valid database URL"]) from e
    name = parsed.drivername
    if name == "postgres":
        name = "postgresql"
    name = _ASYNC_DRIVERS.get(name, name)
    if name not in _ACCEPTED:
        raise ConfigurationError(
            [
                f"BASTION_DATABASE_URL uses {parsed.drivername!r}; "
                "use sqlite+aiosqlite:// or postgresql+asyncpg://"
            ]
        )
    return parsed.set(drivername=name)


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _ensure_sqlite_parent(url: URL) -> None:
    database = url.database or ""
    if _is_memory_sqlite(url) or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for name, value in SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {name}={value}")
    finally:
        cursor.close()


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 10.0,
    connect_timeout: float = 5.0,
    echo: bool = False,
) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url`` (see the module docstring for the
    accepted forms). The caller owns it and must ``await engine.dispose()``.

    On PostgreSQL a process holds up to ``pool_size + max_overflow``
    connections; a request that finds none free waits ``pool_timeout``
    seconds, then fails with SQLAlchemy's pool timeout, which
    :func:`database_errors` answers with 503. ``max_overflow``,
    ``pool_timeout`` and ``connect_timeout`` do not apply to SQLite."""
    parsed = normalize_database_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        _ensure_sqlite_parent(parsed)
        if not _is_memory_sqlite(parsed):
            # An in-memory database lives in one connection (StaticPool), which
            # takes no pool size.
            kwargs["pool_size"] = pool_size
        engine = _create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        return engine
    return _create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        connect_args={"timeout": connect_timeout},
        **kwargs,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (``expire_on_commit``
    off), which is what the stores need to build their records."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn "the database cannot be reached" into :class:`ServiceUnavailable`.

    Connection failures, dropped connections, a full pool and a locked SQLite
    file become a 503 with the cause chained; constraint violations and
    programming errors pass through unchanged. A store never answers "no such
    user" because the database was down.
    """
    try:
        yield
    except IntegrityError:
        raise
    except PoolTimeoutError as e:
        raise ServiceUnavailable("The database is busy.") from e
    except DBAPIError as e:
        if e.connection_invalidated or isinstance(e, OperationalError | InterfaceError):
            raise ServiceUnavailable("The database is unavailable.") from e
        raise
    except OSError as e:  # refused/timed-out connects that the driver does not wrap
        raise ServiceUnavailable("The database is unavailable.") from e


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def write_serializer(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> asyncio.Lock | _NoLock:
    """A lock to hold around hot write transactions on SQLite, a no-op elsewhere.

    SQLite has one writer at a time; a second one gets ``SQLITE_BUSY`` and
    sleep-polls under ``busy_timeout`` in steps of up to 100 ms. Queueing this
    process's writers on an :class:`asyncio.Lock` instead turns that tail
    (seconds under concurrent refreshes) into a plain wait of one transaction.
    PostgreSQL locks rows and needs nothing of the kind.
    """
    bind = sessionmaker.kw.get("bind")
    if isinstance(bind, AsyncEngine) and bind.dialect.name == "sqlite":
        return asyncio.Lock()
    return _NoLock()
