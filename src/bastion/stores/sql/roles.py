"""Roles in SQL: :class:`~bastion.stores.protocols.RoleStore` for SQLite and
PostgreSQL.

Four tables (see :mod:`bastion.stores.sql.tables`): ``roles``, ``role_parents``
(the hierarchy: a role *includes* its parents), ``role_permissions`` and
``user_roles``. Every write is one transaction, so a role never appears
without its parents and permissions, and a failed write leaves nothing behind.

The store checks what it can see row by row: names and permission strings are
well formed, parents and assigned roles exist (and a race that deletes one
meanwhile still fails on the foreign key). It does not check for cycles in the
hierarchy: that needs the whole graph, which is the authorization service's
job (:mod:`bastion.authz`).

Validation:

- a role name is ``[a-z][a-z0-9_-]{0,63}``;
- a permission is one RFC 6749 §3.3 scope-token (:mod:`bastion.scopes`) of at
  most 128 characters: ``resource:action``, or ``resource:*`` for every
  action on a resource;
- a description has at most 500 characters.

Anything else is :class:`~bastion.errors.InvalidInput`, with nothing written.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import Conflict, InvalidInput, InvalidScope, NotFound
from bastion.scopes import parse_scope
from bastion.stores.protocols import Role
from bastion.stores.sql.engine import database_errors
from bastion.stores.sql.tables import (
    PERMISSION_MAX_LENGTH,
    ROLE_DESCRIPTION_MAX_LENGTH,
    RoleParentRow,
    RolePermissionRow,
    RoleRow,
    UserRoleRow,
    UserRow,
    as_utc,
)

__all__ = ["ROLE_NAME", "SqlRoleStore", "check_permission", "check_role_name"]

ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
"""What a role name looks like (matched whole)."""

_VERSION_STEP = timedelta(microseconds=1)


def check_role_name(name: str) -> None:
    """:class:`InvalidInput` unless ``name`` is a well-formed role name."""
    if not ROLE_NAME.fullmatch(name):
        raise InvalidInput(
            "A role name is a lowercase letter followed by at most 63 lowercase "
            "letters, digits, '_' or '-'."
        )


def check_permission(permission: str) -> None:
    """:class:`InvalidInput` unless ``permission`` is one RFC 6749 §3.3
    scope-token of at most 128 characters."""
    if not 0 < len(permission) <= PERMISSION_MAX_LENGTH:
        raise InvalidInput(f"A permission has between 1 and {PERMISSION_MAX_LENGTH} characters.")
    try:
        tokens = parse_scope(permission)
    except InvalidScope as e:
        raise InvalidInput(
            "A permission is one scope token (RFC 6749 section 3.3), such as 'content:read'."
        ) from e
    if tokens != {permission}:
        raise InvalidInput(
            "A permission is one scope token (RFC 6749 section 3.3), such as 'content:read'."
        )


def _check_role(role: Role) -> None:
    check_role_name(role.name)
    if len(role.description) > ROLE_DESCRIPTION_MAX_LENGTH:
        raise InvalidInput(
            f"A role description has at most {ROLE_DESCRIPTION_MAX_LENGTH} characters."
        )
    for parent in role.parents:
        check_role_name(parent)
    if role.name in role.parents:
        raise InvalidInput("A role cannot include itself.")
    for permission in role.permissions:
        check_permission(permission)


class SqlRoleStore:
    """Roles, their hierarchy and permissions, and users' roles, in a SQL
    database reached through ``sessionmaker``.

    Each method is one transaction. Database outages raise
    :class:`~bastion.errors.ServiceUnavailable`.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def list_roles(self) -> list[Role]:
        """Every role, by name: three queries (roles, parents, permissions)
        however many roles there are."""
        with database_errors():
            async with self._sessionmaker.begin() as db:
                rows = (await db.execute(select(RoleRow).order_by(RoleRow.name))).scalars().all()
                links = (await db.execute(select(RoleParentRow.role, RoleParentRow.parent))).all()
                grants = (
                    await db.execute(select(RolePermissionRow.role, RolePermissionRow.permission))
                ).all()
        parents = _group(links)
        permissions = _group(grants)
        return [_to_role(row, parents[row.name], permissions[row.name]) for row in rows]

    async def get_role(self, name: str) -> Role | None:
        """The role called ``name``; ``None`` if there is none."""
        with database_errors():
            async with self._sessionmaker.begin() as db:
                return await _load(db, name)

    async def create_role(self, role: Role) -> Role:
        """Insert ``role`` with its parents and permissions, keeping its
        timestamps; :class:`Conflict` if the name is taken,
        :class:`InvalidInput` if it is malformed or a parent does not exist."""
        _check_role(role)
        created_at, updated_at = as_utc(role.created_at), as_utc(role.updated_at)
        values = {
            "name": role.name,
            "description": role.description,
            "created_at": created_at,
            "updated_at": updated_at,
        }
        with database_errors():
            async with self._sessionmaker.begin() as db:
                try:
                    await db.execute(insert(RoleRow).values(values))
                except IntegrityError as e:
                    raise Conflict(f"A role named {role.name!r} already exists.") from e
                await _write_children(db, role)
        return _normalised(role, created_at, updated_at)

    async def replace_role(
        self, role: Role, *, expected_updated_at: datetime | None = None
    ) -> Role:
        """Overwrite the description, parents and permissions of the role
        called ``role.name``, and set its ``updated_at``; its ``created_at``
        stays as stored (``role.created_at`` is ignored). Returns the role as
        stored.

        :class:`NotFound` if there is no such role; :class:`InvalidInput` as
        for :meth:`create_role`. With ``expected_updated_at`` the write is
        conditional (``UPDATE … WHERE updated_at = :expected``): if the row
        changed since it was read, :class:`Conflict` and nothing is written.
        The stored ``updated_at`` is then also made later than
        ``expected_updated_at`` (by a microsecond if ``role.updated_at`` is not),
        so every conditional write gives the row a new version even under a
        clock that stands still.
        """
        _check_role(role)
        updated_at = as_utc(role.updated_at)
        stmt = update(RoleRow).where(RoleRow.name == role.name)
        if expected_updated_at is not None:
            expected = as_utc(expected_updated_at)
            stmt = stmt.where(RoleRow.updated_at == expected)
            updated_at = max(updated_at, expected + _VERSION_STEP)
        stmt = stmt.values(description=role.description, updated_at=updated_at).returning(
            RoleRow.created_at
        )
        with database_errors():
            async with self._sessionmaker.begin() as db:
                created_at = (await db.execute(stmt)).scalar_one_or_none()
                if created_at is None:
                    exists = await db.scalar(select(RoleRow.name).where(RoleRow.name == role.name))
                    if exists is None:
                        raise NotFound(f"There is no role named {role.name!r}.")
                    raise Conflict(f"The role {role.name!r} changed since it was read.")
                await db.execute(
                    delete(RoleParentRow)
                    .where(RoleParentRow.role == role.name)
                    .execution_options(synchronize_session=False)
                )
                await db.execute(
                    delete(RolePermissionRow)
                    .where(RolePermissionRow.role == role.name)
                    .execution_options(synchronize_session=False)
                )
                await _write_children(db, role)
        return _normalised(role, created_at, updated_at)

    async def delete_role(self, name: str) -> None:
        """Delete the role, its permissions, its links to parents and children
        and its assignments to users; :class:`NotFound` if there is no such role.

        The foreign keys cascade; on SQLite the dependents are also deleted
        explicitly, in case the engine was not made by
        :func:`~bastion.stores.sql.engine.create_engine` and lacks
        ``foreign_keys=ON``."""
        with database_errors():
            async with self._sessionmaker.begin() as db:
                if db.get_bind().dialect.name == "sqlite":
                    for stmt in (
                        delete(UserRoleRow).where(UserRoleRow.role == name),
                        delete(RoleParentRow).where(
                            or_(RoleParentRow.role == name, RoleParentRow.parent == name)
                        ),
                        delete(RolePermissionRow).where(RolePermissionRow.role == name),
                    ):
                        await db.execute(stmt.execution_options(synchronize_session=False))
                result = cast(
                    CursorResult[Any],
                    await db.execute(
                        delete(RoleRow)
                        .where(RoleRow.name == name)
                        .execution_options(synchronize_session=False)
                    ),
                )
                if result.rowcount == 0:
                    raise NotFound(f"There is no role named {name!r}.")

    async def user_roles(self, user_id: uuid.UUID) -> frozenset[str]:
        """The roles assigned directly to the user (no closure); empty for an
        unknown user."""
        with database_errors():
            async with self._sessionmaker() as db:
                names = await db.scalars(
                    select(UserRoleRow.role).where(UserRoleRow.user_id == user_id)
                )
                return frozenset(names)

    async def set_user_roles(self, user_id: uuid.UUID, roles: frozenset[str]) -> None:
        """Make ``roles`` exactly the user's direct roles, in one transaction;
        :class:`InvalidInput` (naming them) if some role does not exist,
        :class:`NotFound` if the user does not, and then nothing changes.

        Concurrent calls for one user apply one after the other and the last
        one wins whole: PostgreSQL locks the user's row before anything else;
        on SQLite the first statement is the write (pysqlite opens the
        transaction only then), which takes the database's write lock, so the
        checks after it read data no other writer can change meanwhile."""
        clear = delete(UserRoleRow).where(UserRoleRow.user_id == user_id)
        clear = clear.execution_options(synchronize_session=False)
        with database_errors():
            async with self._sessionmaker.begin() as db:
                sqlite = db.get_bind().dialect.name == "sqlite"
                if sqlite:
                    await db.execute(clear)
                found = await db.scalar(
                    select(UserRow.id).where(UserRow.id == user_id).with_for_update()
                )
                if found is None:
                    raise NotFound("The user does not exist.")
                await _require_roles(db, roles, "Unknown role")
                if not sqlite:
                    await db.execute(clear)
                if roles:
                    try:
                        await db.execute(
                            insert(UserRoleRow),
                            [{"user_id": user_id, "role": name} for name in sorted(roles)],
                        )
                    except IntegrityError as e:  # a role deleted since the check
                        raise InvalidInput("A role no longer exists.") from e

    async def users_with_role(self, name: str) -> list[uuid.UUID]:
        """Ids of the users the role is assigned to directly, in id order;
        empty for an unknown role."""
        with database_errors():
            async with self._sessionmaker() as db:
                ids = await db.scalars(
                    select(UserRoleRow.user_id)
                    .where(UserRoleRow.role == name)
                    .order_by(UserRoleRow.user_id)
                )
                return list(ids)


async def _load(db: AsyncSession, name: str) -> Role | None:
    row = await db.get(RoleRow, name)
    if row is None:
        return None
    parents = await db.scalars(select(RoleParentRow.parent).where(RoleParentRow.role == name))
    permissions = await db.scalars(
        select(RolePermissionRow.permission).where(RolePermissionRow.role == name)
    )
    return _to_role(row, set(parents), set(permissions))


async def _require_roles(db: AsyncSession, names: Iterable[str], what: str) -> None:
    """:class:`InvalidInput` naming every one of ``names`` that is not a role."""
    wanted = set(names)
    if not wanted:
        return
    found = set(await db.scalars(select(RoleRow.name).where(RoleRow.name.in_(sorted(wanted)))))
    missing = sorted(wanted - found)
    if missing:
        raise InvalidInput(f"{what}: {', '.join(repr(m) for m in missing)}.")


async def _write_children(db: AsyncSession, role: Role) -> None:
    """Insert the role's parent links and permissions (the role row exists)."""
    await _require_roles(db, role.parents, "Unknown parent role")
    try:
        if role.parents:
            await db.execute(
                insert(RoleParentRow),
                [{"role": role.name, "parent": parent} for parent in sorted(role.parents)],
            )
    except IntegrityError as e:  # a parent deleted since the check
        raise InvalidInput("A parent role no longer exists.") from e
    if role.permissions:
        await db.execute(
            insert(RolePermissionRow),
            [{"role": role.name, "permission": p} for p in sorted(role.permissions)],
        )


def _group(pairs: Iterable[Any]) -> defaultdict[str, set[str]]:
    grouped: defaultdict[str, set[str]] = defaultdict(set)
    for key, value in pairs:
        grouped[key].add(value)
    return grouped


def _to_role(row: RoleRow, parents: Iterable[str], permissions: Iterable[str]) -> Role:
    return Role(
        name=row.name,
        description=row.description,
        parents=frozenset(parents),
        permissions=frozenset(permissions),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _normalised(role: Role, created_at: datetime, updated_at: datetime) -> Role:
    return Role(
        name=role.name,
        description=role.description,
        parents=frozenset(role.parents),
        permissions=frozenset(role.permissions),
        created_at=created_at,
        updated_at=updated_at,
    )
