"""Bring a database's schema to a revision with the migrations shipped in the
package (``bastion/migrations``); no ``alembic.ini`` needed.

:func:`upgrade` runs the whole upgrade in one transaction on a connection it
opens itself, so it can be awaited from inside a running event loop (server
startup, tests). Concurrent upgrades of one database queue instead of racing:
PostgreSQL takes a transaction-scoped advisory lock, SQLite takes the write
lock up front (``BEGIN IMMEDIATE``). Running it on an up-to-date database does
nothing.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from bastion.stores.sql.engine import create_engine

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade",
    "upgrade_sync",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"
"""``bastion/migrations`` inside the installed package."""

_ADVISORY_LOCK_KEY = 0x62617374696F6E  # "bastion" in ASCII; any fixed bigint does


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations.

    With ``database_url`` the config also works for Alembic's own commands,
    which open their own connection; that is how a developer writes the next
    revision::

        from alembic import command
        from bastion.stores.sql.migrate import alembic_config
        config = alembic_config("sqlite:///./dev.db")
        command.upgrade(config, "head")
        command.revision(config, message="add things", autogenerate=True, rev_id="0002")
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest revision the package ships."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade the database at ``database_url`` to ``revision``."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, revision)
    finally:
        await engine.dispose()


def upgrade_sync(database_url: str, revision: str = "head") -> None:
    """:func:`upgrade` for synchronous callers (the CLI). Inside a running event
    loop it runs the upgrade on a worker thread with a loop of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(upgrade(database_url, revision))
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, upgrade(database_url, revision)).result()


async def current_revision(database_url: str) -> str | None:
    """The revision the database is at; ``None`` for an empty database."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


def _upgrade_on(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # pysqlite does not open a transaction for DDL by itself; this makes
        # the migration atomic and holds the write lock for all of it.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
