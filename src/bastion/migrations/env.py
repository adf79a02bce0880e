"""Alembic environment for Bastion's schema.

Normally run through :func:`bastion.stores.sql.migrate.upgrade` (``bastion db
upgrade``), which opens the connection itself, inside one transaction, and
passes it in ``config.attributes["connection"]``; no ``alembic.ini`` is needed.

Alembic's own commands work too, opening their own connection, for developers
writing the next revision: see :func:`bastion.stores.sql.migrate.alembic_config`.
The database is ``sqlalchemy.url`` in the config, ``-x url=...`` on the
``alembic`` command line, or ``BASTION_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from bastion.stores.sql.engine import create_engine, normalize_database_url
from bastion.stores.sql.tables import metadata

config = context.config
target_metadata = metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run_on(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("BASTION_DATABASE_URL")
    )
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set BASTION_DATABASE_URL")
    return url


async def _run_online() -> None:
    engine = create_engine(_url(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
    elif context.is_offline_mode():
        context.configure(
            url=normalize_database_url(_url()),
            target_metadata=target_metadata,
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
        )
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(_run_online())


run()
