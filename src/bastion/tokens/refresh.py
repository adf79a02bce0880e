"""Refresh tokens: rotation with reuse detection (RFC 6749 §6, RFC 9700 §4.14).

A refresh token is ``brt_`` + 256 random bits (the prefix lets secret scanners
find leaked ones). Only its SHA-256 is stored. Tokens of one login form a
*family*; every refresh spends the presented token and returns its successor.
Presenting a spent token again means two parties hold it, one of them a thief
(RFC 9700 §4.14.2): the whole family is revoked and the event audited.

Concurrency: the spend is a conditional write in the store, so of N
simultaneous refreshes with one token exactly one wins. A request that read
the token as unspent but lost the write race is answered ``invalid_grant``
without revoking the family: that is one client racing itself, not a replay
of a token spent earlier.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from bastion.audit import AuditLog
from bastion.clock import Clock
from bastion.errors import InvalidGrant, InvalidScope, NotFound
from bastion.scopes import format_scope, parse_scope
from bastion.stores.protocols import RefreshSession, RefreshTokenRecord, RefreshTokenStore

REFRESH_TOKEN_PREFIX = "brt_"
_SHAPE = re.compile(r"brt_[A-Za-z0-9_-]{43}")


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    """SHA-256 is enough: the token has 256 bits of entropy, so there is
    nothing for a slow hash to protect against."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def looks_like_refresh_token(token: str) -> bool:
    return _SHAPE.fullmatch(token) is not None


@dataclass(frozen=True, slots=True)
class ClientContext:
    """Where a request came from, shown to the user in their session list."""

    user_agent: str | None = None
    ip_address: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedRefreshToken:
    token: str
    session: RefreshSession
    scopes: frozenset[str]


class RefreshTokenService:
    def __init__(
        self,
        store: RefreshTokenStore,
        audit: AuditLog,
        clock: Clock,
        *,
        ttl: int,
        idle_timeout: int,
        reuse_grace: int = 0,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._ttl = timedelta(seconds=ttl)
        self._idle = timedelta(seconds=idle_timeout)
        self._grace = timedelta(seconds=reuse_grace)

    async def start(
        self,
        *,
        user_id: UUID,
        client_id: str,
        scopes: frozenset[str],
        context: ClientContext = ClientContext(),
    ) -> IssuedRefreshToken:
        """A new family (a new session) and its first token, at login."""
        now = self._clock.now()
        token = new_refresh_token()
        scope = format_scope(scopes)
        session = RefreshSession(
            id=uuid.uuid4(),
            user_id=user_id,
            client_id=client_id,
            scope=scope,
            created_at=now,
            expires_at=now + self._ttl,
            last_used_at=now,
            user_agent=context.user_agent,
            ip_address=context.ip_address,
        )
        first = RefreshTokenRecord(
            token_hash=hash_refresh_token(token),
            family_id=session.id,
            parent_hash=None,
            scope=scope,
            created_at=now,
            idle_expires_at=min(now + self._idle, session.expires_at),
        )
        await self._store.start_family(session, first)
        return IssuedRefreshToken(token, session, scopes)

    async def rotate(
        self,
        token: str,
        *,
        client_id: str,
        scope: str | None = None,
        context: ClientContext = ClientContext(),
    ) -> IssuedRefreshToken:
        """Spend ``token`` and return its successor in the same family.

        ``scope`` may ask for any part of the family's scope (granted at login),
        never more; omitted, it means all of it (RFC 6749 §6).
        """
        now = self._clock.now()
        found = (
            await self._store.find(hash_refresh_token(token))
            if looks_like_refresh_token(token)
            else None
        )
        if found is None:
            raise InvalidGrant("The refresh token is invalid.")
        record, session = found
        if session.client_id != client_id:  # RFC 6749 §6: bound to its client
            raise InvalidGrant("The refresh token was issued to another client.")
        if not session.is_live(now):
            raise InvalidGrant("The refresh token has expired or was revoked.")
        if record.used_at is not None:
            await self._on_reuse(record.used_at, session, now)
        if now >= record.idle_expires_at:
            raise InvalidGrant("The refresh token has expired.")

        # RFC 6749 §6: the ceiling, and the scope an omitted one stands for, is
        # what the user granted at login (the family's), not the last token's:
        # a client that narrowed once may widen back up to it.
        granted = parse_scope(session.scope)
        wanted = parse_scope(scope)
        if wanted and not wanted <= granted:
            raise InvalidScope("The requested scope exceeds the scope originally granted.")
        scopes = wanted or granted

        successor_token = new_refresh_token()
        successor = RefreshTokenRecord(
            token_hash=hash_refresh_token(successor_token),
            family_id=session.id,
            parent_hash=record.token_hash,
            scope=format_scope(scopes),
            created_at=now,
            idle_expires_at=min(now + self._idle, session.expires_at),
        )
        spent = await self._store.spend(
            record.token_hash,
            successor,
            now=now,
            user_agent=context.user_agent,
            ip_address=context.ip_address,
        )
        if not spent:
            raise InvalidGrant("The refresh token was just used by another request.")
        return IssuedRefreshToken(successor_token, session, scopes)

    async def _on_reuse(self, used_at: datetime, session: RefreshSession, now: datetime) -> None:
        if self._grace and now - used_at <= self._grace:
            raise InvalidGrant("The refresh token was already used.")
        await self._store.revoke_family(session.id, now=now)
        await self._audit.record(
            "refresh_token.reuse_detected",
            actor=str(session.user_id),
            target=str(session.id),
            client_id=session.client_id,
        )
        raise InvalidGrant("The refresh token was already used.")

    async def find_session(self, token: str) -> RefreshSession | None:
        """The live family ``token`` belongs to, spent or not; for revocation."""
        if not looks_like_refresh_token(token):
            return None
        found = await self._store.find(hash_refresh_token(token))
        if found is None or not found[1].is_live(self._clock.now()):
            return None
        return found[1]

    async def inspect(self, token: str) -> tuple[RefreshTokenRecord, RefreshSession] | None:
        """The token and its family if the token could still be used now (RFC 7662)."""
        if not looks_like_refresh_token(token):
            return None
        found = await self._store.find(hash_refresh_token(token))
        if found is None:
            return None
        record, session = found
        now = self._clock.now()
        if record.used_at is not None or not session.is_live(now) or now >= record.idle_expires_at:
            return None
        return found

    async def revoke_session(self, session_id: UUID, *, user_id: UUID | None = None) -> None:
        """End one session. With ``user_id``, only that user's: another user's
        session id answers :class:`NotFound`, exactly like an unknown one."""
        session = await self._store.get_session(session_id)
        if session is None or (user_id is not None and session.user_id != user_id):
            raise NotFound("No such session.")
        await self._store.revoke_family(session_id, now=self._clock.now())

    async def revoke_all(self, user_id: UUID) -> int:
        return await self._store.revoke_user_families(user_id, now=self._clock.now())

    async def sessions(self, user_id: UUID) -> list[RefreshSession]:
        return await self._store.list_sessions(user_id, now=self._clock.now())

    async def purge(self) -> int:
        return await self._store.purge(now=self._clock.now())
