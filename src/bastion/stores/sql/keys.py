"""Signing keys in SQL: :class:`~bastion.stores.protocols.KeyStore` for SQLite
and PostgreSQL.

Rotation must never leave two active keys, even when two server instances
rotate at the same moment:

* PostgreSQL: :meth:`SqlKeyStore.activate` first takes ``LOCK TABLE
  signing_keys IN SHARE ROW EXCLUSIVE MODE``. That mode conflicts with itself
  and with every write but not with plain reads, so rotations queue one
  behind the other while JWKS reads go on. A row lock (``SELECT ... FOR
  UPDATE`` on the active rows) would not do: the second rotation's snapshot
  cannot see the key the first one inserts, so it would not retire it.
* SQLite: a transaction's first write takes the database's single write lock,
  and ``activate`` starts with its write, so rotations are serialised too
  (waiting up to ``busy_timeout``).
* Both: the partial unique index ``uq_signing_keys_one_active`` makes a
  second active row impossible whatever the code does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import Conflict
from bastion.stores.protocols import SigningKeyRecord
from bastion.stores.sql.engine import database_errors
from bastion.stores.sql.tables import SigningKeyRow, as_utc

__all__ = ["SqlKeyStore"]


class SqlKeyStore:
    """Signing keys in a SQL database reached through ``sessionmaker``."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def list_keys(self) -> list[SigningKeyRecord]:
        """Every stored key, newest (by ``created_at``) first."""
        stmt = select(SigningKeyRow).order_by(
            SigningKeyRow.created_at.desc(), SigningKeyRow.kid.desc()
        )
        with database_errors():
            async with self._sessionmaker() as session:
                rows = (await session.execute(stmt)).scalars().all()
        return [_to_record(row) for row in rows]

    async def activate(self, key: SigningKeyRecord, *, now: datetime) -> None:
        """Retire every active key at ``now`` and insert ``key`` as the active
        one, in one transaction. ``key.retired_at`` must be ``None``; a ``kid``
        that already exists is a :class:`Conflict`."""
        if key.retired_at is not None:
            raise ValueError("cannot activate a key that has retired_at set")
        now = as_utc(now)
        row = SigningKeyRow(
            kid=key.kid,
            algorithm=key.algorithm,
            public_jwk=dict(key.public_jwk),
            encrypted_private_key=bytes(key.encrypted_private_key),
            created_at=as_utc(key.created_at),
            retired_at=None,
        )
        try:
            with database_errors():
                async with self._sessionmaker.begin() as session:
                    if session.get_bind().dialect.name == "postgresql":
                        await session.execute(
                            text("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
                        )
                    await session.execute(
                        update(SigningKeyRow)
                        .where(SigningKeyRow.retired_at.is_(None))
                        .values(retired_at=now)
                        .execution_options(synchronize_session=False)
                    )
                    session.add(row)
        except IntegrityError as e:
            if "one_active" in str(e.orig):  # cannot happen behind the lock; a bug if it does
                raise
            raise Conflict("A signing key with this kid already exists.") from e

    async def delete_retired_before(self, moment: datetime) -> int:
        """Remove keys retired strictly before ``moment``; returns how many.
        The active key is never removed."""
        stmt = (
            delete(SigningKeyRow)
            .where(SigningKeyRow.retired_at.is_not(None), SigningKeyRow.retired_at < as_utc(moment))
            .execution_options(synchronize_session=False)
        )
        with database_errors():
            async with self._sessionmaker.begin() as session:
                result = cast(CursorResult[Any], await session.execute(stmt))
        return result.rowcount


def _to_record(row: SigningKeyRow) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=row.kid,
        algorithm=row.algorithm,
        public_jwk=row.public_jwk,
        encrypted_private_key=row.encrypted_private_key,
        created_at=row.created_at,
        retired_at=row.retired_at,
    )
