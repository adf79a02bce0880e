"""Users in SQL: :class:`~bastion.stores.protocols.UserStore` and
:class:`~bastion.stores.protocols.UserAdminStore` for SQLite and PostgreSQL.

Uniqueness of email and username (case-insensitively, see
:mod:`bastion.emails`) is the job of the database's unique constraints, not of
a read before the write: two registrations racing for one address both insert,
and the database lets exactly one of them commit.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NoReturn, cast

from sqlalchemy import CursorResult, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.emails import canonical_email, canonical_username
from bastion.errors import Conflict, EmailAlreadyRegistered, InvalidInput, NotFound
from bastion.stores.protocols import NewUser, User, UserPage
from bastion.stores.sql.engine import database_errors
from bastion.stores.sql.tables import (
    EMAIL_MAX_LENGTH,
    PASSWORD_HASH_MAX_LENGTH,
    USERNAME_MAX_LENGTH,
    RefreshFamilyRow,
    RefreshTokenRow,
    RoleRow,
    UserRoleRow,
    UserRow,
    as_utc,
)

__all__ = ["SqlUserStore"]

USERNAME_TAKEN = "This username is already taken."


class SqlUserStore:
    """Users in a SQL database reached through ``sessionmaker``.

    Each method is one transaction. Database outages raise
    :class:`~bastion.errors.ServiceUnavailable`; they never look like a missing
    user.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add(self, user: NewUser, *, now: datetime) -> User:
        """Insert ``user``; :class:`EmailAlreadyRegistered` if the email is taken,
        :class:`Conflict` if the username is, and then nothing is written.

        Values longer than the columns raise :class:`InvalidInput` here, so
        SQLite (which does not enforce lengths) and PostgreSQL behave alike.
        """
        email_key = canonical_email(user.email)
        username_key = canonical_username(user.username) if user.username is not None else None
        _check_lengths(user, email_key, username_key)
        now = as_utc(now)
        row = UserRow(
            id=uuid.uuid4(),
            email=user.email,
            email_canonical=email_key,
            username=user.username,
            username_canonical=username_key,
            password_hash=user.password_hash,
            is_active=user.is_active,
            email_verified=user.email_verified,
            created_at=now,
            updated_at=now,
        )
        try:
            with database_errors():
                async with self._sessionmaker.begin() as session:
                    session.add(row)
                    if user.roles:
                        await _check_roles_exist(session, user.roles)
                        await session.flush()  # the user row first: user_roles refers to it
                        await session.execute(
                            insert(UserRoleRow),
                            [{"user_id": row.id, "role": role} for role in sorted(user.roles)],
                        )
        except IntegrityError as e:
            _raise_conflict(e)
        return _to_user(row)

    async def get(self, user_id: uuid.UUID) -> User | None:
        with database_errors():
            async with self._sessionmaker() as session:
                row = await session.get(UserRow, user_id)
        return _to_user(row) if row is not None else None

    async def get_by_email(self, email: str) -> User | None:
        """Case-insensitive lookup (through :func:`canonical_email`)."""
        stmt = select(UserRow).where(UserRow.email_canonical == canonical_email(email))
        with database_errors():
            async with self._sessionmaker() as session:
                row = (await session.execute(stmt)).scalar_one_or_none()
        return _to_user(row) if row is not None else None

    async def count(self) -> int:
        """How many users exist (for admin pages and tests)."""
        with database_errors():
            async with self._sessionmaker() as session:
                return (
                    await session.execute(select(func.count()).select_from(UserRow))
                ).scalar_one()

    async def set_password_hash(
        self, user_id: uuid.UUID, password_hash: str, *, now: datetime
    ) -> None:
        """Replace the hash; :class:`NotFound` if there is no such user."""
        if len(password_hash) > PASSWORD_HASH_MAX_LENGTH:
            raise InvalidInput("The password hash is too long to store.")
        await self._update(user_id, now=now, password_hash=password_hash)

    async def set_active(self, user_id: uuid.UUID, active: bool, *, now: datetime) -> None:
        """Enable or disable the account; :class:`NotFound` if there is no such user."""
        await self._update(user_id, now=now, is_active=active)

    # ------------------------------------------------------------ UserAdminStore

    async def list_users(
        self,
        *,
        offset: int,
        limit: int,
        email_contains: str | None = None,
        role: str | None = None,
        is_active: bool | None = None,
    ) -> UserPage:
        """A page of users ordered by ``created_at`` then ``id``, and how many
        match the filters in all (a ``COUNT`` with the same filters).

        ``email_contains`` is a literal substring, compared case-insensitively
        (both sides folded as by :func:`canonical_email`): ``%``, ``_`` and
        ``\\`` match only themselves. ``role`` keeps users the role is
        assigned to directly. A negative ``offset`` or ``limit`` is
        :class:`InvalidInput`; the edge bounds ``limit`` from above."""
        if offset < 0 or limit < 0:
            raise InvalidInput("offset and limit must not be negative.")
        conditions: list[Any] = []
        if email_contains:
            pattern = f"%{_escape_like(canonical_email(email_contains))}%"
            conditions.append(UserRow.email_canonical.like(pattern, escape="\\"))
        if role is not None:
            conditions.append(
                UserRow.id.in_(select(UserRoleRow.user_id).where(UserRoleRow.role == role))
            )
        if is_active is not None:
            conditions.append(UserRow.is_active.is_(is_active))
        page = (
            select(UserRow)
            .where(*conditions)
            .order_by(UserRow.created_at, UserRow.id)
            .offset(offset)
            .limit(limit)
        )
        total = select(func.count()).select_from(UserRow).where(*conditions)
        with database_errors():
            async with self._sessionmaker.begin() as session:
                rows = (await session.execute(page)).scalars().all()
                count = (await session.execute(total)).scalar_one()
        return UserPage(users=[_to_user(row) for row in rows], total=count)

    async def delete_user(self, user_id: uuid.UUID) -> None:
        """Delete the user with their role assignments and refresh-token
        families (sessions) and tokens; :class:`NotFound` if there is no such
        user. Access tokens already issued stay valid until they expire unless
        the caller also revokes them (a watermark, see
        :class:`~bastion.stores.protocols.RevocationStore`).

        The foreign keys cascade; on SQLite the dependents are also deleted
        explicitly, in case the engine lacks ``foreign_keys=ON`` (on
        PostgreSQL the cascade keeps the family-before-token lock order of
        :class:`~bastion.stores.sql.refresh.SqlRefreshTokenStore`)."""
        with database_errors():
            async with self._sessionmaker.begin() as session:
                if session.get_bind().dialect.name == "sqlite":
                    families = select(RefreshFamilyRow.id).where(
                        RefreshFamilyRow.user_id == user_id
                    )
                    for stmt in (
                        delete(RefreshTokenRow).where(RefreshTokenRow.family_id.in_(families)),
                        delete(RefreshFamilyRow).where(RefreshFamilyRow.user_id == user_id),
                        delete(UserRoleRow).where(UserRoleRow.user_id == user_id),
                    ):
                        await session.execute(stmt.execution_options(synchronize_session=False))
                result = cast(
                    CursorResult[Any],
                    await session.execute(
                        delete(UserRow)
                        .where(UserRow.id == user_id)
                        .execution_options(synchronize_session=False)
                    ),
                )
                if result.rowcount == 0:
                    raise NotFound("The user does not exist.")

    async def update_user(
        self,
        user_id: uuid.UUID,
        *,
        now: datetime,
        is_active: bool | None = None,
        email_verified: bool | None = None,
        username: str | None = None,
    ) -> User:
        """Change the given fields (``None`` leaves a field as it is) and
        ``updated_at``; returns the user as stored. :class:`NotFound` if there
        is no such user, :class:`Conflict` if the username is taken
        (case-insensitively), :class:`InvalidInput` if it is too long. With no
        field given nothing is written and the stored user comes back."""
        values: dict[str, object] = {}
        if is_active is not None:
            values["is_active"] = is_active
        if email_verified is not None:
            values["email_verified"] = email_verified
        if username is not None:
            key = canonical_username(username)
            if max(len(username), len(key)) > USERNAME_MAX_LENGTH:
                raise InvalidInput(f"The username is longer than {USERNAME_MAX_LENGTH} characters.")
            values["username"] = username
            values["username_canonical"] = key
        now = as_utc(now)
        if not values:
            user = await self.get(user_id)
            if user is None:
                raise NotFound("The user does not exist.")
            return user
        stmt = (
            update(UserRow)
            .where(UserRow.id == user_id)
            .values(updated_at=now, **values)
            .returning(*UserRow.__table__.columns)
        )
        try:
            with database_errors():
                async with self._sessionmaker.begin() as session:
                    found = (await session.execute(stmt)).mappings().first()
        except IntegrityError as e:
            _raise_conflict(e)
        if found is None:
            raise NotFound("The user does not exist.")
        return _to_user(UserRow(**found))

    async def _update(self, user_id: uuid.UUID, *, now: datetime, **values: object) -> None:
        now = as_utc(now)
        stmt = (
            update(UserRow)
            .where(UserRow.id == user_id)
            .values(updated_at=now, **values)
            .returning(UserRow.id)
        )
        with database_errors():
            async with self._sessionmaker.begin() as session:
                found = (await session.execute(stmt)).first()
        if found is None:
            raise NotFound("The user does not exist.")


async def _check_roles_exist(session: AsyncSession, roles: frozenset[str]) -> None:
    known = (await session.execute(select(RoleRow.name).where(RoleRow.name.in_(roles)))).scalars()
    unknown = roles - set(known)
    if unknown:
        raise InvalidInput(f"Unknown role: {' '.join(sorted(unknown))}.")


def _check_lengths(user: NewUser, email_key: str, username_key: str | None) -> None:
    if max(len(user.email), len(email_key)) > EMAIL_MAX_LENGTH:
        raise InvalidInput(f"The email address is longer than {EMAIL_MAX_LENGTH} characters.")
    if (
        user.username is not None
        and username_key is not None
        and max(len(user.username), len(username_key)) > USERNAME_MAX_LENGTH
    ):
        raise InvalidInput(f"The username is longer than {USERNAME_MAX_LENGTH} characters.")
    if len(user.password_hash) > PASSWORD_HASH_MAX_LENGTH:
        raise InvalidInput("The password hash is too long to store.")


def _escape_like(text: str) -> str:
    """``text`` as a literal inside a ``LIKE … ESCAPE '\\'`` pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _raise_conflict(error: IntegrityError) -> NoReturn:
    """Name the constraint that failed. SQLite says ``UNIQUE constraint failed:
    users.username_canonical``, PostgreSQL names ``uq_users_username_canonical``;
    both contain the column name."""
    message = str(error.orig)
    if "username_canonical" in message:
        raise Conflict(USERNAME_TAKEN) from error
    if "email_canonical" in message:
        raise EmailAlreadyRegistered() from error
    raise error


def _to_user(row: UserRow) -> User:
    return User(
        id=row.id,
        email=row.email,
        username=row.username,
        password_hash=row.password_hash,
        is_active=row.is_active,
        email_verified=row.email_verified,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
