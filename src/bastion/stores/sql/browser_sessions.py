"""Browser sessions in SQL: :class:`~bastion.stores.protocols.BrowserSessionStore`
for SQLite and PostgreSQL.

One row per signed-in browser, keyed by the SHA-256 of the cookie value. The
row goes with its user (``ON DELETE CASCADE``). Each method is one statement
in one transaction; the hot path is :meth:`SqlBrowserSessionStore.get` (a
primary-key read) plus, at most once per touch interval, a one-row
``UPDATE``. :meth:`purge` deletes rows dead by either timeout, which the
indexes on ``idle_expires_at`` and ``expires_at`` serve.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.stores.protocols import BrowserSession
from bastion.stores.sql.engine import database_errors, write_serializer
from bastion.stores.sql.tables import (
    IP_ADDRESS_MAX_LENGTH,
    USER_AGENT_MAX_LENGTH,
    BrowserSessionRow,
    as_utc,
)

__all__ = ["SqlBrowserSessionStore"]


class SqlBrowserSessionStore:
    """Browser sessions in a SQL database reached through ``sessionmaker``.

    User agents and addresses longer than their columns are cut to fit:
    they are shown to the user, never trusted. Database outages raise
    :class:`~bastion.errors.ServiceUnavailable` (the guard fails closed).
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._write_lock = write_serializer(sessionmaker)

    async def add(self, session: BrowserSession) -> None:
        values = {
            "id_hash": session.id_hash,
            "public_id": session.public_id,
            "user_id": session.user_id,
            "created_at": as_utc(session.created_at),
            "last_seen_at": as_utc(session.last_seen_at),
            "idle_expires_at": as_utc(session.idle_expires_at),
            "expires_at": as_utc(session.expires_at),
            "ip_address": _fit(session.ip_address, IP_ADDRESS_MAX_LENGTH),
            "user_agent": _fit(session.user_agent, USER_AGENT_MAX_LENGTH),
        }
        async with self._write_lock:
            with database_errors():
                async with self._sessionmaker.begin() as db:
                    await db.execute(insert(BrowserSessionRow), values)

    async def get(self, id_hash: str) -> BrowserSession | None:
        with database_errors():
            async with self._sessionmaker() as db:
                row = await db.get(BrowserSessionRow, id_hash)
                return _to_session(row) if row is not None else None

    async def touch(self, session: BrowserSession) -> bool:
        stmt = (
            update(BrowserSessionRow)
            .where(BrowserSessionRow.id_hash == session.id_hash)
            .values(
                last_seen_at=as_utc(session.last_seen_at),
                idle_expires_at=as_utc(session.idle_expires_at),
            )
            .execution_options(synchronize_session=False)
        )
        return await self._write(stmt) > 0

    async def delete(self, id_hash: str) -> bool:
        stmt = delete(BrowserSessionRow).where(BrowserSessionRow.id_hash == id_hash)
        return await self._write(stmt.execution_options(synchronize_session=False)) > 0

    async def delete_by_public_id(self, user_id: uuid.UUID, public_id: str) -> bool:
        stmt = delete(BrowserSessionRow).where(
            BrowserSessionRow.user_id == user_id, BrowserSessionRow.public_id == public_id
        )
        return await self._write(stmt.execution_options(synchronize_session=False)) > 0

    async def delete_all(self, user_id: uuid.UUID, *, now: datetime) -> int:
        """One ``DELETE … RETURNING`` (SQLite ≥ 3.35 and PostgreSQL): every
        row of the user goes, and the live ones among them are counted."""
        now = as_utc(now)
        stmt = (
            delete(BrowserSessionRow)
            .where(BrowserSessionRow.user_id == user_id)
            .returning(BrowserSessionRow.idle_expires_at, BrowserSessionRow.expires_at)
        )
        async with self._write_lock:
            with database_errors():
                async with self._sessionmaker.begin() as db:
                    ended = (await db.execute(stmt)).all()
        return sum(1 for idle, absolute in ended if now < idle and now < absolute)

    async def list_for_user(self, user_id: uuid.UUID, *, now: datetime) -> list[BrowserSession]:
        now = as_utc(now)
        stmt = (
            select(BrowserSessionRow)
            .where(
                BrowserSessionRow.user_id == user_id,
                BrowserSessionRow.idle_expires_at > now,
                BrowserSessionRow.expires_at > now,
            )
            .order_by(BrowserSessionRow.created_at.desc(), BrowserSessionRow.id_hash)
        )
        with database_errors():
            async with self._sessionmaker() as db:
                return [_to_session(row) for row in (await db.scalars(stmt)).all()]

    async def purge(self, *, now: datetime) -> int:
        now = as_utc(now)
        stmt = delete(BrowserSessionRow).where(
            or_(BrowserSessionRow.idle_expires_at <= now, BrowserSessionRow.expires_at <= now)
        )
        return await self._write(stmt.execution_options(synchronize_session=False))

    async def _write(self, stmt: Any) -> int:
        """Run one data-changing statement in its own transaction; rows hit."""
        async with self._write_lock:
            with database_errors():
                async with self._sessionmaker.begin() as db:
                    result = cast(CursorResult[Any], await db.execute(stmt))
        return result.rowcount


def _fit(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None else None


def _to_session(row: BrowserSessionRow) -> BrowserSession:
    return BrowserSession(
        id_hash=row.id_hash,
        public_id=row.public_id,
        user_id=row.user_id,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        idle_expires_at=row.idle_expires_at,
        expires_at=row.expires_at,
        ip_address=row.ip_address,
        user_agent=row.user_agent,
    )
