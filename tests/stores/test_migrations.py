"""The shipped Alembic migrations, on every SQL backend."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from bastion.stores.sql import (
    SqlRoleStore,
    create_engine,
    create_sessionmaker,
    current_revision,
    head_revision,
    upgrade,
)
from bastion.stores.sql.migrate import alembic_config, upgrade_sync
from bastion.stores.sql.tables import RoleParentRow, UserRoleRow, UserRow, metadata

pytestmark = pytest.mark.anyio

HEAD = "0004"


@contextmanager
def _expression_index_not_reflected() -> Iterator[None]:
    """SQLite cannot reflect expression indexes, so SQLAlchemy and Alembic warn
    that they skip uq_signing_keys_one_active; test_one_active_index_exists
    checks that index directly instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        yield


def _diff(connection: Connection) -> list[Any]:
    with _expression_index_not_reflected():
        return list(compare_metadata(MigrationContext.configure(connection), metadata))


def _schema(connection: Connection) -> dict[str, Any]:
    with _expression_index_not_reflected():
        return _reflect(connection)


def _reflect(connection: Connection) -> dict[str, Any]:
    insp = inspect(connection)
    return {
        "tables": sorted(insp.get_table_names()),
        "unique": {
            t: sorted(c["name"] or "" for c in insp.get_unique_constraints(t))
            for t in ("users", "signing_keys")
        },
    }


async def _run(url: str, fn: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(fn)
    finally:
        await engine.dispose()


async def test_upgrade_from_empty_creates_the_schema(empty_database_url: str) -> None:
    """An empty database upgraded to head has every table and its constraints."""
    assert await current_revision(empty_database_url) is None
    await upgrade(empty_database_url)
    assert await current_revision(empty_database_url) == head_revision() == HEAD
    schema = await _run(empty_database_url, _schema)
    assert schema["tables"] == [
        "alembic_version",
        "api_keys",
        "audit_events",
        "browser_sessions",
        "oauth_clients",
        "refresh_families",
        "refresh_tokens",
        "revoked_tokens",
        "role_parents",
        "role_permissions",
        "roles",
        "signing_keys",
        "token_watermarks",
        "user_roles",
        "users",
    ]
    assert schema["unique"]["users"] == ["uq_users_email_canonical", "uq_users_username_canonical"]


async def test_migrated_schema_matches_the_models(empty_database_url: str) -> None:
    """Autogenerate finds nothing to change after the migrations ran."""
    await upgrade(empty_database_url)
    assert await _run(empty_database_url, _diff) == []


async def test_one_active_index_exists(empty_database_url: str) -> None:
    """The partial unique index behind 'one active key' is created by the migration."""
    await upgrade(empty_database_url)

    def index_names(connection: Connection) -> set[str]:
        if connection.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("PRAGMA index_list('signing_keys')").all()
            return {row[1] for row in rows if row[2]}  # (seq, name, unique, ...)
        return {ix["name"] or "" for ix in inspect(connection).get_indexes("signing_keys")}

    assert "uq_signing_keys_one_active" in await _run(empty_database_url, index_names)


async def test_upgrade_is_idempotent(empty_database_url: str) -> None:
    """Upgrading an up-to-date database again changes nothing and does not fail."""
    await upgrade(empty_database_url)
    before = await _run(empty_database_url, _schema)
    await upgrade(empty_database_url)
    assert await _run(empty_database_url, _schema) == before
    assert await current_revision(empty_database_url) == HEAD


async def test_concurrent_upgrades_do_not_race(empty_database_url: str) -> None:
    """Several instances starting at once against one empty database all succeed."""
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(upgrade, empty_database_url)
    assert await current_revision(empty_database_url) == HEAD
    assert await _run(empty_database_url, _diff) == []


async def test_sync_upgrade_works_inside_a_running_loop(empty_database_url: str) -> None:
    """upgrade_sync (the CLI's entry) also works when an event loop is running."""
    upgrade_sync(empty_database_url)
    assert await current_revision(empty_database_url) == HEAD


async def _insert_users(url: str, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for i, user_id in enumerate(ids):
                await connection.execute(
                    insert(UserRow).values(
                        id=user_id,
                        email=f"u{i}@example.com",
                        email_canonical=f"u{i}@example.com",
                        password_hash="x",
                        is_active=True,
                        email_verified=False,
                        created_at=datetime(2030, 1, 1, tzinfo=UTC),
                        updated_at=datetime(2030, 1, 1, tzinfo=UTC),
                    )
                )
    finally:
        await engine.dispose()
    return ids


async def test_upgrade_from_0001_keeps_existing_users(empty_database_url: str) -> None:
    """A database at 0001 with users gains the later tables and keeps its rows."""
    await upgrade(empty_database_url, "0001")
    [user_id] = await _insert_users(empty_database_url, 1)

    await upgrade(empty_database_url)

    assert await current_revision(empty_database_url) == HEAD
    assert await _run(empty_database_url, _diff) == []
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as connection:
            ids = (await connection.execute(select(UserRow.id))).scalars().all()
    finally:
        await engine.dispose()
    assert ids == [user_id]


SEEDED_ROLES = {
    "user": (frozenset(), frozenset({"profile", "email"})),
    "editor": (frozenset({"user"}), frozenset({"content:read", "content:write"})),
    "admin": (
        frozenset({"editor"}),
        frozenset(
            {"users:admin", "roles:admin", "audit:read", "tokens:introspect", "sessions:admin"}
        ),
    ),
}


async def _roles(url: str) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    engine = create_engine(url)
    try:
        roles = await SqlRoleStore(create_sessionmaker(engine)).list_roles()
    finally:
        await engine.dispose()
    return {role.name: (role.parents, role.permissions) for role in roles}


async def _user_roles(url: str) -> set[tuple[uuid.UUID, str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(UserRoleRow.user_id, UserRoleRow.role))
            return {(user_id, role) for user_id, role in rows}
    finally:
        await engine.dispose()


async def test_fresh_database_has_the_default_roles(empty_database_url: str) -> None:
    """0003 seeds user < editor < admin with their permissions, and nothing else."""
    await upgrade(empty_database_url)
    assert await _roles(empty_database_url) == SEEDED_ROLES
    assert await _user_roles(empty_database_url) == set()


async def test_upgrade_from_0002_gives_every_existing_user_the_user_role(
    empty_database_url: str,
) -> None:
    """Users that existed before 0003 each get role 'user' and keep their rows."""
    await upgrade(empty_database_url, "0002")
    ids = await _insert_users(empty_database_url, 3)

    await upgrade(empty_database_url)

    assert await current_revision(empty_database_url) == HEAD
    assert await _run(empty_database_url, _diff) == []
    assert await _user_roles(empty_database_url) == {(user_id, "user") for user_id in ids}
    assert await _roles(empty_database_url) == SEEDED_ROLES


async def test_downgrade_to_0002_and_back(empty_database_url: str) -> None:
    """0003 can be undone (its tables go, users stay) and redone."""
    await upgrade(empty_database_url)
    [user_id] = await _insert_users(empty_database_url, 1)

    def downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")

    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(downgrade)
    finally:
        await engine.dispose()
    assert await current_revision(empty_database_url) == "0002"
    tables = (await _run(empty_database_url, _schema))["tables"]
    assert "roles" not in tables
    assert "audit_events" not in tables

    await upgrade(empty_database_url)
    assert await _user_roles(empty_database_url) == {(user_id, "user")}


async def test_a_role_cannot_be_its_own_parent(empty_database_url: str) -> None:
    """The CHECK constraint on role_parents refuses role = parent on every backend."""
    await upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        with pytest.raises(IntegrityError, match=r"(?i)check constraint"):
            async with engine.begin() as connection:
                await connection.execute(insert(RoleParentRow).values(role="user", parent="user"))
    finally:
        await engine.dispose()
