"""Security audit events.

Each event is written twice: a row in the audit table (``GET /admin/audit``
pages through them) and a JSON line on the ``bastion.audit`` logger for log
shippers. An event says what happened, who did it (``actor``), to what
(``target``), the state before and after where something changed, and the id
of the request that caused it (:data:`bastion.middleware.request_id_var`).

Never a secret: callers pass ids, names and outcomes, never tokens or
passwords; details are scalars and ``before``/``after`` are plain JSON
snapshots of public fields, so a token object cannot slip in by accident.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from bastion.clock import Clock
from bastion.middleware import request_id_var
from bastion.stores.protocols import AuditEvent, AuditPage, AuditStore

Scalar = str | int | float | bool | None
Snapshot = Mapping[str, Any]

logger = logging.getLogger("bastion.audit")


class AuditLog:
    def __init__(
        self, clock: Clock, store: AuditStore | None = None, *, log: logging.Logger = logger
    ) -> None:
        self._clock = clock
        self._store = store
        self._log = log

    async def record(
        self,
        action: str,
        *,
        actor: str | None = None,
        target: str | None = None,
        before: Snapshot | None = None,
        after: Snapshot | None = None,
        **details: Scalar,
    ) -> AuditEvent:
        event = AuditEvent(
            id=uuid.uuid4(),
            at=self._clock.now(),
            action=action,
            actor=actor,
            target=target,
            request_id=request_id_var.get(),
            before=dict(before) if before is not None else None,
            after=dict(after) if after is not None else None,
            details=dict(details),
        )
        if self._store is not None:
            await self._store.add(event)
        if self._log.isEnabledFor(logging.INFO):
            line = {
                "event": action,
                "at": event.at.isoformat(),
                "actor": actor,
                "target": target,
                "request_id": event.request_id,
                **({"before": event.before} if before is not None else {}),
                **({"after": event.after} if after is not None else {}),
                **details,
            }
            self._log.info(json.dumps(line, separators=(",", ":"), default=str))
        return event

    async def page(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
    ) -> AuditPage:
        """Recorded events, newest first (see :meth:`AuditStore.page`)."""
        if self._store is None:
            return AuditPage(events=[], next_cursor=None)
        return await self._store.page(
            limit=limit, cursor=cursor, action=action, actor=actor, target=target
        )
