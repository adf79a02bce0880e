"""Revoked access tokens in SQL: :class:`~bastion.stores.protocols.RevocationStore`
for SQLite and PostgreSQL.

Two tables: ``revoked_tokens`` (the denylist, one row per ``jti`` until the
token's ``exp``) and ``token_watermarks`` (per subject, "tokens issued at or
before this moment are dead", until every such token has expired). Writes are
upserts (``INSERT … ON CONFLICT``), so denying twice or racing is harmless and
a watermark only ever moves forward, decided by the database in one statement.
:meth:`SqlRevocationStore.is_revoked` is one ``SELECT`` of two ``EXISTS``.

Entries count until their expiry per the store's clock; :meth:`purge` deletes
them afterwards, so the tables do not grow without bound.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, case, delete, exists, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from bastion.clock import Clock, SystemClock
from bastion.errors import InvalidInput
from bastion.stores.sql.engine import database_errors
from bastion.stores.sql.tables import (
    JTI_MAX_LENGTH,
    SUBJECT_MAX_LENGTH,
    RevokedTokenRow,
    TokenWatermarkRow,
    as_utc,
)

__all__ = ["SqlRevocationStore"]


class SqlRevocationStore:
    """The denylist and watermarks in a SQL database reached through
    ``sessionmaker``.

    ``clock`` decides when an entry has expired (it stops counting then, and
    :meth:`purge` may drop it); it defaults to the system clock. Database
    outages raise :class:`~bastion.errors.ServiceUnavailable`: a check that
    cannot be made is never answered "not revoked".
    """

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock | None = None
    ) -> None:
        self._sessionmaker = sessionmaker
        self._clock: Clock = clock or SystemClock()

    async def deny(self, jti: str, *, expires_at: datetime) -> None:
        """Denylist ``jti`` until ``expires_at``. Idempotent; a token that has
        already expired is not stored (it is refused anyway)."""
        if len(jti) > JTI_MAX_LENGTH:
            raise InvalidInput(f"The token id is longer than {JTI_MAX_LENGTH} characters.")
        expires_at = as_utc(expires_at)
        if expires_at <= self._clock.now():
            return
        values = {"jti": jti, "expires_at": expires_at}
        with database_errors():
            async with self._sessionmaker.begin() as db:
                if db.get_bind().dialect.name == "postgresql":
                    pg = postgresql.insert(RevokedTokenRow).values(values)
                    await db.execute(pg.on_conflict_do_nothing(index_elements=["jti"]))
                else:
                    lite = sqlite.insert(RevokedTokenRow).values(values)
                    await db.execute(lite.on_conflict_do_nothing(index_elements=["jti"]))

    async def set_watermark(self, subject: str, moment: datetime, *, keep_until: datetime) -> None:
        """Revoke ``subject``'s tokens issued at or before ``moment``, until
        ``keep_until``. An existing watermark keeps the later of the two moments
        and the later of the two expiries, whatever order calls arrive in."""
        if len(subject) > SUBJECT_MAX_LENGTH:
            raise InvalidInput(f"The subject is longer than {SUBJECT_MAX_LENGTH} characters.")
        keep_until = as_utc(keep_until)
        if keep_until <= self._clock.now():
            return
        values = {
            "subject": subject,
            "moment": as_utc(moment).timestamp(),
            "keep_until": keep_until,
        }
        with database_errors():
            async with self._sessionmaker.begin() as db:
                if db.get_bind().dialect.name == "postgresql":
                    pg = postgresql.insert(TokenWatermarkRow).values(values)
                    stmt: Any = pg.on_conflict_do_update(
                        index_elements=["subject"], set_=_forward_only(pg.excluded)
                    )
                else:
                    lite = sqlite.insert(TokenWatermarkRow).values(values)
                    stmt = lite.on_conflict_do_update(
                        index_elements=["subject"], set_=_forward_only(lite.excluded)
                    )
                await db.execute(stmt)

    async def is_revoked(self, jti: str | None, subject: str, issued_at: float) -> bool:
        """One query: ``jti`` is denylisted, or ``issued_at`` (seconds since
        the epoch) is at or before ``subject``'s watermark."""
        now = self._clock.now()
        revoked: ColumnElement[bool] = exists().where(
            TokenWatermarkRow.subject == subject,
            TokenWatermarkRow.moment >= float(issued_at),
            TokenWatermarkRow.keep_until > now,
        )
        if jti is not None:
            denied = exists().where(RevokedTokenRow.jti == jti, RevokedTokenRow.expires_at > now)
            revoked = or_(denied, revoked)
        with database_errors():
            async with self._sessionmaker() as db:
                return bool((await db.execute(select(revoked))).scalar_one())

    async def purge(self, *, now: datetime) -> int:
        """Delete denylist entries and watermarks whose expiry is at or before
        ``now``; returns how many rows went."""
        now = as_utc(now)
        with database_errors():
            async with self._sessionmaker.begin() as db:
                denied = cast(
                    CursorResult[Any],
                    await db.execute(
                        delete(RevokedTokenRow)
                        .where(RevokedTokenRow.expires_at <= now)
                        .execution_options(synchronize_session=False)
                    ),
                )
                watermarks = cast(
                    CursorResult[Any],
                    await db.execute(
                        delete(TokenWatermarkRow)
                        .where(TokenWatermarkRow.keep_until <= now)
                        .execution_options(synchronize_session=False)
                    ),
                )
        return denied.rowcount + watermarks.rowcount


def _forward_only(excluded: Any) -> dict[str, Any]:
    """``SET`` clauses keeping the later moment and the later expiry."""
    return {
        "moment": case(
            (excluded.moment > TokenWatermarkRow.moment, excluded.moment),
            else_=TokenWatermarkRow.moment,
        ),
        "keep_until": case(
            (excluded.keep_until > TokenWatermarkRow.keep_until, excluded.keep_until),
            else_=TokenWatermarkRow.keep_until,
        ),
    }
