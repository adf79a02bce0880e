"""Users in SQL: :class:`~bastion.stores.protocols.UserStore` for SQLite and
PostgreSQL.

Uniqueness of email and username (case-insensitively, see
:mod:`bastion.emails`) is the job of the database's unique constraints, not of
a read before the write: two registrations racing for one address both insert,
and the database lets exactly one of them commit.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NoReturn

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.emails import canonical_email, canonical_username
from bastion.errors import Conflict, EmailAlreadyRegistered, InvalidInput, NotFound
from bastion.stores.protocols import NewUser, User
from bastion.stores.sql.engine import database_errors
from bastion.stores.sql.tables import (
    EMAIL_MAX_LENGTH,
    PASSWORD_HASH_MAX_LENGTH,
    USERNAME_MAX_LENGTH,
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
