"""Refresh-token families in SQL: :class:`~bastion.stores.protocols.RefreshTokenStore`
for SQLite and PostgreSQL.

The one operation that must not race is :meth:`SqlRefreshTokenStore.spend`
(rotation). It is one transaction of conditional writes, never a read and then
a write:

1. ``UPDATE refresh_families SET last_used_at = … WHERE id = (the token's
   family) AND revoked_at IS NULL AND expires_at > now``. On PostgreSQL this
   takes the family's row lock, so every spend in a family, and every
   revocation of it, queues behind the one in flight; a waiter re-checks the
   condition against the committed row (a family revoked meanwhile no longer
   matches). On SQLite the first write takes the database's write lock, which
   serialises just the same.
2. ``UPDATE refresh_tokens SET used_at = now WHERE token_hash = … AND used_at IS
   NULL AND idle_expires_at > now``. Under PostgreSQL's READ COMMITTED each
   statement sees every transaction committed before it started, so behind the
   family lock a second spend of one token finds ``used_at`` set.
3. Only if both matched one row: ``INSERT`` the successor and commit. Otherwise
   roll back (the family's stamp included) and answer False.

Locks are always taken family first, then tokens (:meth:`purge` deletes
families and lets the foreign key cascade to their tokens), so a spend cannot
deadlock with a revocation or a purge.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.stores.protocols import RefreshSession, RefreshTokenRecord
from bastion.stores.sql.engine import database_errors, write_serializer
from bastion.stores.sql.tables import (
    IP_ADDRESS_MAX_LENGTH,
    USER_AGENT_MAX_LENGTH,
    RefreshFamilyRow,
    RefreshTokenRow,
    as_utc,
)

__all__ = ["SqlRefreshTokenStore"]


class SqlRefreshTokenStore:
    """Refresh-token families in a SQL database reached through ``sessionmaker``.

    Each method is one transaction. User agents and IP addresses longer than
    their columns are cut to fit rather than refused: they are informational,
    and a client must not be able to fail its own login with a long header.
    Database outages raise :class:`~bastion.errors.ServiceUnavailable`.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._write_lock = write_serializer(sessionmaker)

    async def start_family(self, session: RefreshSession, first: RefreshTokenRecord) -> None:
        """Insert the family and its first token in one transaction.
        ``first.family_id`` must be ``session.id``."""
        if first.family_id != session.id:
            raise ValueError("the first token must belong to the new family")
        family = {
            "id": session.id,
            "user_id": session.user_id,
            "client_id": session.client_id,
            "scope": session.scope,
            "created_at": as_utc(session.created_at),
            "expires_at": as_utc(session.expires_at),
            "last_used_at": as_utc(session.last_used_at),
            "user_agent": _fit(session.user_agent, USER_AGENT_MAX_LENGTH),
            "ip_address": _fit(session.ip_address, IP_ADDRESS_MAX_LENGTH),
            "revoked_at": as_utc(session.revoked_at) if session.revoked_at is not None else None,
        }
        # Core inserts, not ORM objects: this runs on every login, and the unit
        # of work's bookkeeping cost more than the two statements themselves.
        async with self._write_lock:
            with database_errors():
                async with self._sessionmaker.begin() as db:
                    await db.execute(insert(RefreshFamilyRow), family)
                    await db.execute(insert(RefreshTokenRow), _token_values(first))

    async def find(self, token_hash: str) -> tuple[RefreshTokenRecord, RefreshSession] | None:
        """The token and its family, spent, expired or revoked alike."""
        stmt = (
            select(RefreshTokenRow, RefreshFamilyRow)
            .join(RefreshFamilyRow, RefreshFamilyRow.id == RefreshTokenRow.family_id)
            .where(RefreshTokenRow.token_hash == token_hash)
        )
        with database_errors():
            async with self._sessionmaker() as db:
                found = (await db.execute(stmt)).first()
        if found is None:
            return None
        token, family = found
        return _to_record(token), _to_session(family)

    async def spend(
        self,
        token_hash: str,
        successor: RefreshTokenRecord,
        *,
        now: datetime,
        user_agent: str | None = None,
        ip_address: str | None = None,
    ) -> bool:
        """Mark the token used and insert ``successor``, atomically (see the
        module docstring). False, with nothing written, when the token is
        unknown, already spent, idle-expired, or its family is revoked or past
        its absolute expiry. ``successor`` must be in the token's family
        (:class:`ValueError` otherwise, and nothing is written)."""
        now = as_utc(now)
        stamp: dict[str, Any] = {"last_used_at": now}
        if user_agent is not None:
            stamp["user_agent"] = _fit(user_agent, USER_AGENT_MAX_LENGTH)
        if ip_address is not None:
            stamp["ip_address"] = _fit(ip_address, IP_ADDRESS_MAX_LENGTH)
        token_family = (
            select(RefreshTokenRow.family_id)
            .where(RefreshTokenRow.token_hash == token_hash)
            .scalar_subquery()
        )
        lock_family = (
            update(RefreshFamilyRow)
            .where(
                RefreshFamilyRow.id == token_family,
                RefreshFamilyRow.revoked_at.is_(None),
                RefreshFamilyRow.expires_at > now,
            )
            .values(**stamp)
            .returning(RefreshFamilyRow.id)
            .execution_options(synchronize_session=False)
        )
        mark_used = (
            update(RefreshTokenRow)
            .where(
                RefreshTokenRow.token_hash == token_hash,
                RefreshTokenRow.used_at.is_(None),
                RefreshTokenRow.idle_expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        try:
            async with self._write_lock:
                with database_errors():
                    async with self._sessionmaker.begin() as db:
                        family_id = (await db.execute(lock_family)).scalar_one_or_none()
                        if family_id is None:
                            raise _NotSpendable
                        marked = cast(CursorResult[Any], await db.execute(mark_used))
                        if marked.rowcount != 1:
                            raise _NotSpendable  # rolls back the family's stamp too
                        if successor.family_id != family_id:
                            raise ValueError(
                                "the successor must belong to the spent token's family"
                            )
                        await db.execute(insert(RefreshTokenRow), _token_values(successor))
        except _NotSpendable:
            return False
        return True

    async def revoke_family(self, family_id: uuid.UUID, *, now: datetime) -> bool:
        """Revoke the family at ``now``; False when it does not exist or was
        already revoked (the first ``revoked_at`` is kept)."""
        stmt = (
            update(RefreshFamilyRow)
            .where(RefreshFamilyRow.id == family_id, RefreshFamilyRow.revoked_at.is_(None))
            .values(revoked_at=as_utc(now))
            .execution_options(synchronize_session=False)
        )
        return await self._count(stmt) == 1

    async def revoke_user_families(self, user_id: uuid.UUID, *, now: datetime) -> int:
        """Revoke every live family of the user; returns how many. Families that
        were already revoked or have expired are left as they are."""
        now = as_utc(now)
        stmt = (
            update(RefreshFamilyRow)
            .where(
                RefreshFamilyRow.user_id == user_id,
                RefreshFamilyRow.revoked_at.is_(None),
                RefreshFamilyRow.expires_at > now,
            )
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        return await self._count(stmt)

    async def get_session(self, family_id: uuid.UUID) -> RefreshSession | None:
        """The family, live or not."""
        with database_errors():
            async with self._sessionmaker() as db:
                row = await db.get(RefreshFamilyRow, family_id)
        return _to_session(row) if row is not None else None

    async def list_sessions(self, user_id: uuid.UUID, *, now: datetime) -> list[RefreshSession]:
        """The user's live families, newest (by ``created_at``) first."""
        stmt = (
            select(RefreshFamilyRow)
            .where(
                RefreshFamilyRow.user_id == user_id,
                RefreshFamilyRow.revoked_at.is_(None),
                RefreshFamilyRow.expires_at > as_utc(now),
            )
            .order_by(RefreshFamilyRow.created_at.desc(), RefreshFamilyRow.id.desc())
        )
        with database_errors():
            async with self._sessionmaker() as db:
                rows = (await db.execute(stmt)).scalars().all()
        return [_to_session(row) for row in rows]

    async def purge(self, *, now: datetime) -> int:
        """Delete families that expired or were revoked strictly before ``now``,
        with their tokens; returns how many families went.

        The tokens go by ``ON DELETE CASCADE``. On SQLite they are also deleted
        explicitly, first, in case the engine was not made by
        :func:`~bastion.stores.sql.engine.create_engine` and lacks
        ``foreign_keys=ON`` (SQLite serialises writers, so the order cannot
        deadlock there)."""
        now = as_utc(now)
        dead = or_(RefreshFamilyRow.expires_at < now, RefreshFamilyRow.revoked_at < now)
        with database_errors():
            async with self._sessionmaker.begin() as db:
                if db.get_bind().dialect.name == "sqlite":
                    await db.execute(
                        delete(RefreshTokenRow)
                        .where(
                            RefreshTokenRow.family_id.in_(select(RefreshFamilyRow.id).where(dead))
                        )
                        .execution_options(synchronize_session=False)
                    )
                result = cast(
                    CursorResult[Any],
                    await db.execute(
                        delete(RefreshFamilyRow)
                        .where(dead)
                        .execution_options(synchronize_session=False)
                    ),
                )
        return result.rowcount

    async def _count(self, stmt: Any) -> int:
        with database_errors():
            async with self._sessionmaker.begin() as db:
                result = cast(CursorResult[Any], await db.execute(stmt))
        return result.rowcount


class _NotSpendable(Exception):
    """Raised inside :meth:`SqlRefreshTokenStore.spend` to roll back."""


def _fit(value: str | None, length: int) -> str | None:
    return value[:length] if value is not None else None


def _token_values(record: RefreshTokenRecord) -> dict[str, object]:
    return {
        "token_hash": record.token_hash,
        "family_id": record.family_id,
        "parent_hash": record.parent_hash,
        "scope": record.scope,
        "created_at": as_utc(record.created_at),
        "idle_expires_at": as_utc(record.idle_expires_at),
        "used_at": as_utc(record.used_at) if record.used_at is not None else None,
    }


def _to_record(row: RefreshTokenRow) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        token_hash=row.token_hash,
        family_id=row.family_id,
        parent_hash=row.parent_hash,
        scope=row.scope,
        created_at=row.created_at,
        idle_expires_at=row.idle_expires_at,
        used_at=row.used_at,
    )


def _to_session(row: RefreshFamilyRow) -> RefreshSession:
    return RefreshSession(
        id=row.id,
        user_id=row.user_id,
        client_id=row.client_id,
        scope=row.scope,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        user_agent=row.user_agent,
        ip_address=row.ip_address,
        revoked_at=row.revoked_at,
    )
