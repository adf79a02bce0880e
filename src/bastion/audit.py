"""Security audit events.

Each event is one JSON log line on the ``bastion.audit`` logger: what happened,
who did it, to what, and plain details. Never a secret: callers pass ids and
outcomes, not tokens or passwords, and :meth:`AuditLog.record` accepts only
scalar details so a token object cannot slip in by accident. (A queryable
audit table joins in the hardening work; the event names stay.)
"""

from __future__ import annotations

import json
import logging

from bastion.clock import Clock

Scalar = str | int | float | bool | None

logger = logging.getLogger("bastion.audit")


class AuditLog:
    def __init__(self, clock: Clock, *, log: logging.Logger = logger) -> None:
        self._clock = clock
        self._log = log

    def record(
        self, action: str, *, actor: str | None = None, target: str | None = None, **details: Scalar
    ) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        event = {
            "event": action,
            "at": self._clock.now().isoformat(),
            "actor": actor,
            "target": target,
            **details,
        }
        self._log.info(json.dumps(event, separators=(",", ":"), default=str))
