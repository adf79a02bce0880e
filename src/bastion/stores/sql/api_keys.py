"""API keys in SQL: :class:`~bastion.stores.protocols.ApiKeyStore` for SQLite
and PostgreSQL.

Two writes must not race:

- :meth:`SqlApiKeyStore.add` enforces the per-user cap inside the insert's
  transaction. PostgreSQL locks the owner's row first, so two creations for
  one user queue and the second counts the first. SQLite inserts first (the
  write takes the database's write lock), then counts, and rolls back over
  the cap.
- :meth:`SqlApiKeyStore.replace` (rotation) is a conditional ``UPDATE`` of the
  old key and the successor's ``INSERT`` in one transaction: a key rotated
  twice at once yields one successor, and a crash between the two leaves the
  old key working, never neither.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import ColumnElement, CursorResult, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import NotFound
from bastion.stores.protocols import ApiKeyRecord
from bastion.stores.sql.engine import database_errors, write_serializer
from bastion.stores.sql.tables import ApiKeyRow, UserRow, as_utc

__all__ = ["SqlApiKeyStore"]

UNKNOWN_USER = "The user does not exist."


class _CapReached(Exception):
    """Rolls back an insert that went over the per-user cap."""


class SqlApiKeyStore:
    """API keys in a SQL database reached through ``sessionmaker``; each method
    is one transaction, outages raise :class:`~bastion.errors.ServiceUnavailable`."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._write_lock = write_serializer(sessionmaker)

    async def add(self, record: ApiKeyRecord, *, max_live: int, now: datetime) -> bool:
        """Insert ``record`` unless its owner holds ``max_live`` live keys (see
        the module docstring); :class:`NotFound` for an unknown owner."""
        now = as_utc(now)
        try:
            async with self._write_lock:
                with database_errors():
                    async with self._sessionmaker.begin() as db:
                        if db.get_bind().dialect.name == "postgresql":
                            owner = await db.scalar(
                                select(UserRow.id)
                                .where(UserRow.id == record.user_id)
                                .with_for_update()
                            )
                            if owner is None:
                                raise NotFound(UNKNOWN_USER)
                        try:
                            await db.execute(insert(ApiKeyRow).values(_values(record)))
                        except IntegrityError as e:  # the owner's foreign key
                            raise NotFound(UNKNOWN_USER) from e
                        live = await db.scalar(
                            select(func.count())
                            .select_from(ApiKeyRow)
                            .where(ApiKeyRow.user_id == record.user_id, _live(now))
                        )
                        if (live or 0) > max_live:
                            raise _CapReached
        except _CapReached:
            return False
        return True

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        with database_errors():
            async with self._sessionmaker() as db:
                row = await db.get(ApiKeyRow, key_id)
        return _to_record(row) if row is not None else None

    async def list_for_user(self, user_id: UUID) -> list[ApiKeyRecord]:
        stmt = (
            select(ApiKeyRow)
            .where(ApiKeyRow.user_id == user_id, ApiKeyRow.revoked_at.is_(None))
            .order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.key_id)
        )
        with database_errors():
            async with self._sessionmaker() as db:
                rows = (await db.execute(stmt)).scalars().all()
        return [_to_record(row) for row in rows]

    async def revoke(
        self, key_id: str, *, now: datetime, user_id: UUID | None = None
    ) -> ApiKeyRecord | None:
        now = as_utc(now)
        conditions = [ApiKeyRow.key_id == key_id, ApiKeyRow.revoked_at.is_(None)]
        if user_id is not None:
            conditions.append(ApiKeyRow.user_id == user_id)
        stmt = update(ApiKeyRow).where(*conditions).values(revoked_at=now)
        async with self._write_lock:
            with database_errors():
                async with self._sessionmaker.begin() as db:
                    result = cast(
                        CursorResult[Any],
                        await db.execute(stmt.execution_options(synchronize_session=False)),
                    )
                    if result.rowcount != 1:
                        return None
                    row = await db.get(ApiKeyRow, key_id)
        return _to_record(row) if row is not None else None

    async def revoke_all(self, user_id: UUID, *, now: datetime) -> list[str]:
        now = as_utc(now)
        stmt = (
            update(ApiKeyRow)
            .where(ApiKeyRow.user_id == user_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(ApiKeyRow.key_id)
        )
        async with self._write_lock:
            with database_errors():
                async with self._sessionmaker.begin() as db:
                    ids = (
                        await db.execute(stmt.execution_options(synchronize_session=False))
                    ).scalars()
                    return sorted(ids)

    async def replace(
        self, key_id: str, successor: ApiKeyRecord, *, now: datetime, user_id: UUID | None = None
    ) -> bool:
        now = as_utc(now)
        conditions = [ApiKeyRow.key_id == key_id, _live(now)]
        if user_id is not None:
            conditions.append(ApiKeyRow.user_id == user_id)
        retire = update(ApiKeyRow).where(*conditions).values(revoked_at=now)
        retire = retire.execution_options(synchronize_session=False)
        async with self._write_lock:
            with database_errors():
                async with self._sessionmaker.begin() as db:
                    result = cast(CursorResult[Any], await db.execute(retire))
                    if result.rowcount != 1:
                        return False
                    old = await db.get(ApiKeyRow, key_id)
                    if old is None or old.user_id != successor.user_id:
                        raise ValueError("the successor must belong to the old key's owner")
                    await db.execute(insert(ApiKeyRow).values(_values(successor)))
        return True

    async def touch(self, key_id: str, *, at: datetime) -> None:
        at = as_utc(at)
        stmt = (
            update(ApiKeyRow)
            .where(
                ApiKeyRow.key_id == key_id,
                or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < at),
            )
            .values(last_used_at=at)
            .execution_options(synchronize_session=False)
        )
        async with self._write_lock:
            with database_errors():
                async with self._sessionmaker.begin() as db:
                    await db.execute(stmt)

    async def purge(self, *, before: datetime) -> int:
        before = as_utc(before)
        stmt = delete(ApiKeyRow).where(
            or_(ApiKeyRow.expires_at < before, ApiKeyRow.revoked_at < before)
        )
        async with self._write_lock:
            with database_errors():
                async with self._sessionmaker.begin() as db:
                    result = cast(
                        CursorResult[Any],
                        await db.execute(stmt.execution_options(synchronize_session=False)),
                    )
                    return int(result.rowcount)


def _live(now: datetime) -> ColumnElement[bool]:
    return and_(
        ApiKeyRow.revoked_at.is_(None),
        or_(ApiKeyRow.expires_at.is_(None), ApiKeyRow.expires_at > now),
    )


def _values(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "user_id": record.user_id,
        "name": record.name,
        "permissions": sorted(record.permissions),
        "secret_hash": record.secret_hash,
        "created_at": as_utc(record.created_at),
        "expires_at": _maybe_utc(record.expires_at),
        "last_used_at": _maybe_utc(record.last_used_at),
        "revoked_at": _maybe_utc(record.revoked_at),
    }


def _maybe_utc(moment: datetime | None) -> datetime | None:
    return as_utc(moment) if moment is not None else None


def _to_record(row: ApiKeyRow) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row.key_id,
        user_id=row.user_id,
        name=row.name,
        permissions=frozenset(row.permissions),
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
