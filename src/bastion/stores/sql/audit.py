"""The audit trail in SQL: :class:`~bastion.stores.protocols.AuditStore` for
SQLite and PostgreSQL.

Events are paged newest first by keyset, not by offset: a page is "the next
``limit`` events strictly before ``(at, id)`` of the last one shown", which the
``(at, id)`` index answers directly however deep the page, and which neither
skips nor repeats an event when new ones arrive between pages. ``id`` breaks
ties between events recorded at the same instant.

The cursor handed out is opaque to clients: URL-safe base64 (unpadded) of the
JSON ``[at, id]``, ``at`` in ISO 8601 with its offset. Anything that does not
decode to exactly that is :class:`~bastion.errors.InvalidInput`, never a
server error.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from sqlalchemy import insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import InvalidInput
from bastion.stores.protocols import AuditEvent, AuditPage
from bastion.stores.sql.engine import database_errors
from bastion.stores.sql.tables import (
    AUDIT_ACTION_MAX_LENGTH,
    AUDIT_PARTY_MAX_LENGTH,
    REQUEST_ID_MAX_LENGTH,
    AuditEventRow,
    as_utc,
)

__all__ = ["MAX_PAGE_SIZE", "SqlAuditStore", "decode_cursor", "encode_cursor"]

MAX_PAGE_SIZE = 500
""":meth:`SqlAuditStore.page` clamps ``limit`` to ``1..MAX_PAGE_SIZE``."""

_MAX_CURSOR_LENGTH = 200
"""A real cursor is about 100 characters; anything much longer is refused
before it is decoded."""

_BAD_CURSOR = "The cursor is not valid; start again from the first page."


def encode_cursor(at: datetime, event_id: uuid.UUID) -> str:
    """The opaque cursor for "events before ``(at, event_id)``"."""
    raw = json.dumps([as_utc(at).isoformat(), str(event_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The ``(at, id)`` inside ``cursor``; :class:`InvalidInput` for anything
    :func:`encode_cursor` would not have produced."""
    if len(cursor) > _MAX_CURSOR_LENGTH:
        raise InvalidInput(_BAD_CURSOR)
    try:
        data = cursor.encode("ascii")
        raw = base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
        value = json.loads(raw)
        if not (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(part, str) for part in value)
        ):
            raise InvalidInput(_BAD_CURSOR)
        at = datetime.fromisoformat(value[0])
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidInput(_BAD_CURSOR)
        return as_utc(at), uuid.UUID(value[1])
    except (ValueError, TypeError, OverflowError, binascii.Error, RecursionError) as e:
        # UnicodeError and json.JSONDecodeError are ValueErrors.
        raise InvalidInput(_BAD_CURSOR) from e


def _fit(value: str | None, length: int) -> str | None:
    return value[:length] if value is not None else None


class SqlAuditStore:
    """Audit events in a SQL database reached through ``sessionmaker``.

    ``actor``, ``target`` and ``request_id`` longer than their columns are cut
    to fit rather than refused: recording an event must not fail because a
    client sent a long value. An ``action`` longer than 64 characters is a
    programming error (:class:`InvalidInput`). ``before``, ``after`` and
    ``details`` must be JSON-serialisable. Database outages raise
    :class:`~bastion.errors.ServiceUnavailable`.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add(self, event: AuditEvent) -> None:
        if not 0 < len(event.action) <= AUDIT_ACTION_MAX_LENGTH:
            raise InvalidInput(
                f"An audit action has between 1 and {AUDIT_ACTION_MAX_LENGTH} characters."
            )
        values = {
            "id": event.id,
            "at": as_utc(event.at),
            "action": event.action,
            "actor": _fit(event.actor, AUDIT_PARTY_MAX_LENGTH),
            "target": _fit(event.target, AUDIT_PARTY_MAX_LENGTH),
            "request_id": _fit(event.request_id, REQUEST_ID_MAX_LENGTH),
            "before": event.before,
            "after": event.after,
            "details": event.details,
        }
        with database_errors():
            async with self._sessionmaker.begin() as db:
                await db.execute(insert(AuditEventRow).values(values))

    async def page(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
    ) -> AuditPage:
        """Up to ``limit`` events (clamped to ``1..500``) matching the filters,
        newest first (by ``at``, then ``id``), starting after ``cursor``.
        ``next_cursor`` is ``None`` on the last page."""
        limit = min(max(limit, 1), MAX_PAGE_SIZE)
        stmt = select(AuditEventRow)
        if cursor is not None:
            at, event_id = decode_cursor(cursor)
            stmt = stmt.where(tuple_(AuditEventRow.at, AuditEventRow.id) < (at, event_id))
        if action is not None:
            stmt = stmt.where(AuditEventRow.action == action)
        if actor is not None:
            stmt = stmt.where(AuditEventRow.actor == actor)
        if target is not None:
            stmt = stmt.where(AuditEventRow.target == target)
        stmt = stmt.order_by(AuditEventRow.at.desc(), AuditEventRow.id.desc()).limit(limit + 1)
        with database_errors():
            async with self._sessionmaker() as db:
                rows = (await db.execute(stmt)).scalars().all()
        events = [_to_event(row) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(events[-1].at, events[-1].id) if more else None
        return AuditPage(events=events, next_cursor=next_cursor)


def _to_event(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        at=row.at,
        action=row.action,
        actor=row.actor,
        target=row.target,
        request_id=row.request_id,
        before=row.before,
        after=row.after,
        details=row.details,
    )
