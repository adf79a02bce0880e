"""OAuth clients in SQL: :class:`~bastion.stores.protocols.ClientStore` for
SQLite and PostgreSQL.

A taken client id is the primary key's job, not a read before the write: two
creations racing for one id both insert, and exactly one commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import Conflict, NotFound
from bastion.stores.protocols import OAuthClient
from bastion.stores.sql.engine import database_errors
from bastion.stores.sql.tables import OAuthClientRow, as_utc

__all__ = ["SqlClientStore"]

UNKNOWN_CLIENT = "The client does not exist."


class SqlClientStore:
    """OAuth clients in a SQL database reached through ``sessionmaker``; each
    method is one transaction, outages raise
    :class:`~bastion.errors.ServiceUnavailable`."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add(self, client: OAuthClient) -> OAuthClient:
        """Insert ``client``; :class:`Conflict` when the id is taken."""
        values = _values(client)
        try:
            with database_errors():
                async with self._sessionmaker.begin() as session:
                    await session.execute(insert(OAuthClientRow).values(values))
        except IntegrityError as e:
            raise Conflict(f"A client with the id {client.client_id!r} already exists.") from e
        return _to_client(OAuthClientRow(**values))

    async def get(self, client_id: str) -> OAuthClient | None:
        with database_errors():
            async with self._sessionmaker() as session:
                row = await session.get(OAuthClientRow, client_id)
        return _to_client(row) if row is not None else None

    async def list_clients(self) -> list[OAuthClient]:
        stmt = select(OAuthClientRow).order_by(OAuthClientRow.client_id)
        with database_errors():
            async with self._sessionmaker() as session:
                rows = (await session.execute(stmt)).scalars().all()
        return [_to_client(row) for row in rows]

    async def set_secret_hash(
        self, client_id: str, secret_hash: str, *, now: datetime
    ) -> OAuthClient:
        """One conditional ``UPDATE … RETURNING``: the new hash and both stamps."""
        now = as_utc(now)
        stmt = (
            update(OAuthClientRow)
            .where(OAuthClientRow.client_id == client_id)
            .values(secret_hash=secret_hash, secret_rotated_at=now, updated_at=now)
            .returning(*OAuthClientRow.__table__.columns)
        )
        with database_errors():
            async with self._sessionmaker.begin() as session:
                found = (await session.execute(stmt)).mappings().first()
        if found is None:
            raise NotFound(UNKNOWN_CLIENT)
        return _to_client(OAuthClientRow(**found))

    async def delete(self, client_id: str) -> None:
        stmt = delete(OAuthClientRow).where(OAuthClientRow.client_id == client_id)
        with database_errors():
            async with self._sessionmaker.begin() as session:
                result = cast(CursorResult[Any], await session.execute(stmt))
        if result.rowcount == 0:
            raise NotFound(UNKNOWN_CLIENT)


def _values(client: OAuthClient) -> dict[str, Any]:
    rotated = client.secret_rotated_at
    return {
        "client_id": client.client_id,
        "name": client.name,
        "secret_hash": client.secret_hash,
        "grant_types": sorted(client.grant_types),
        "scopes": sorted(client.scopes),
        "redirect_uris": list(client.redirect_uris),
        "created_at": as_utc(client.created_at),
        "updated_at": as_utc(client.updated_at),
        "secret_rotated_at": as_utc(rotated) if rotated is not None else None,
    }


def _to_client(row: OAuthClientRow) -> OAuthClient:
    return OAuthClient(
        client_id=row.client_id,
        name=row.name,
        secret_hash=row.secret_hash,
        grant_types=frozenset(row.grant_types),
        scopes=frozenset(row.scopes),
        redirect_uris=tuple(row.redirect_uris),
        created_at=row.created_at,
        updated_at=row.updated_at,
        secret_rotated_at=row.secret_rotated_at,
    )
