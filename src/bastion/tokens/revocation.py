"""Revoking tokens: logout, RFC 7009 revocation, "sign out everywhere", and
the strict guard's check.

Access tokens are self-contained, so revoking one means remembering it until
it would have expired anyway: its ``jti`` goes on a denylist until its
``exp``. Revoking *every* token of a user (password change, account disabled,
"sign out everywhere") sets a watermark instead: tokens of that subject issued
at or before it are dead. Both live in a :class:`RevocationStore` that every
instance shares; :class:`RevocationChecker` reads it for the strict guard.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

from bastion.audit import AuditLog
from bastion.clock import Clock
from bastion.jwt import AccessTokenClaims
from bastion.stores.protocols import RevocationStore
from bastion.tokens.refresh import RefreshTokenService, looks_like_refresh_token

logger = logging.getLogger("bastion.revocation")

_Key = tuple[str | None, str, float]


class ForgetListener(Protocol):
    """Called by :meth:`RevocationChecker.forget` with its arguments."""

    def __call__(self, *, jti: str | None, subject: str | None) -> None: ...


class RevocationChecker:
    """Strict mode's question "was this token revoked?", asked of the shared
    store at most once per ``max_staleness`` seconds per token.

    The bound is the promise: a token revoked on any instance is refused on
    every instance within ``max_staleness`` (1 s by default), while a busy
    route pays one store round trip per token per second, not per request.
    Revocations made through this process are seen at once (:meth:`forget`).
    """

    def __init__(
        self,
        store: RevocationStore,
        clock: Clock,
        *,
        max_staleness: float = 1.0,
        cache_size: int = 10_000,
    ) -> None:
        self.store = store
        self._clock = clock
        self._staleness = max_staleness
        self._cache_size = cache_size
        self._cache: OrderedDict[_Key, tuple[float, bool]] = OrderedDict()
        self._pending: dict[_Key, asyncio.Future[bool]] = {}
        self._generation = 0  # bumped by forget(): older lookups must not be cached
        self._listeners: list[ForgetListener] = []

    def add_listener(self, listener: ForgetListener) -> None:
        """Tell ``listener`` of every :meth:`forget` too: other caches of a
        user's standing (API keys, :mod:`bastion.api_keys`) drop theirs."""
        self._listeners.append(listener)

    async def is_revoked(self, claims: AccessTokenClaims) -> bool:
        key = (claims.jwt_id, claims.subject, claims.issued_at)
        entry = self._cache.get(key)
        if entry is not None and self._clock.timestamp() < entry[0]:
            return entry[1]
        # Single flight: when the remembered answer lapses, the requests already
        # in flight with this token share one store lookup instead of each
        # sending their own (a burst of N would otherwise queue N queries).
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._look_up(key, claims))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(pending)

    def _settled(self, key: _Key, done: asyncio.Future[bool]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]

    async def _look_up(self, key: _Key, claims: AccessTokenClaims) -> bool:
        generation = self._generation
        revoked = await self.store.is_revoked(claims.jwt_id, claims.subject, claims.issued_at)
        if self._staleness and self._cache_size and generation == self._generation:
            while len(self._cache) >= self._cache_size:
                self._cache.popitem(last=False)
            self._cache[key] = (self._clock.timestamp() + self._staleness, revoked)
        return revoked

    def forget(self, *, jti: str | None = None, subject: str | None = None) -> None:
        """Drop the remembered answers a revocation made here has changed: those
        for ``jti``, or every token of ``subject`` (a watermark). A lookup still
        in flight may have read the store before the revocation, so none of
        those are shared or cached any more either. Without arguments, all."""

        def stale(key: _Key) -> bool:
            everything = jti is None and subject is None
            return everything or key[0] == jti or key[1] == subject

        self._generation += 1
        for key in [key for key in self._cache if stale(key)]:
            del self._cache[key]
        self._pending.clear()
        for listener in self._listeners:
            listener(jti=jti, subject=subject)


class RevocationService:
    def __init__(
        self,
        store: RevocationStore,
        refresh: RefreshTokenService,
        checker: RevocationChecker,
        audit: AuditLog,
        clock: Clock,
        *,
        access_token_ttl: int,
        leeway: int,
    ) -> None:
        self._store = store
        self._refresh = refresh
        self._checker = checker
        self._audit = audit
        self._clock = clock
        self._watermark_life = timedelta(seconds=access_token_ttl + leeway)
        self._session_enders: list[Callable[[UUID], Awaitable[int]]] = []

    def also_end_sessions_with(self, end_all: Callable[[UUID], Awaitable[int]]) -> None:
        """:meth:`revoke_everything` also calls ``end_all(user_id)`` (browser
        sessions: :meth:`bastion.browser_sessions.BrowserSessionService.end_all`)
        and counts what it ended."""
        self._session_enders.append(end_all)

    async def revoke_access_token(self, claims: AccessTokenClaims) -> None:
        """Denylist the token until its ``exp``; only tokens with a ``jti`` can be."""
        if claims.jwt_id is None:
            return
        expires_at = datetime.fromtimestamp(claims.expires_at, UTC)
        await self._store.deny(claims.jwt_id, expires_at=expires_at)
        self._checker.forget(jti=claims.jwt_id)

    async def logout(self, claims: AccessTokenClaims, refresh_token: str | None) -> None:
        """End the caller's access token and, if given, its refresh family.

        A refresh token of another user is ignored, not revoked: logout must
        not become a way to end other people's sessions."""
        await self.revoke_access_token(claims)
        if refresh_token:
            session = await self._refresh.find_session(refresh_token)
            if session is not None and str(session.user_id) == claims.subject:
                await self._refresh.revoke_session(session.id)
        await self._audit.record("logout", actor=claims.subject, target=claims.jwt_id)

    async def revoke(
        self,
        token: str,
        *,
        hint: str | None,
        access_token_claims: AccessTokenClaims | None,
        client_id: str | None = None,
    ) -> None:
        """RFC 7009 §2.1: revoke whatever ``token`` is; silently nothing when it
        is unknown, invalid or already revoked (§2.2 answers 200 regardless).

        The hint only orders the search (§2.1). A refresh token revokes its
        whole family; an access token (already verified by the caller into
        ``access_token_claims``) is denylisted. With ``client_id`` (the
        requesting client), only that client's tokens are revoked (§2.1:
        "the token was issued to the client making the revocation request").
        """
        del hint  # a refresh token is recognised by its prefix: no search to order
        if looks_like_refresh_token(token):
            session = await self._refresh.find_session(token)
            if session is not None and (client_id is None or session.client_id == client_id):
                await self._refresh.revoke_session(session.id)
                await self._audit.record(
                    "token.revoked", actor=str(session.user_id), target=str(session.id)
                )
            return
        if access_token_claims is not None and (
            client_id is None or access_token_claims.client_id == client_id
        ):
            await self.revoke_access_token(access_token_claims)
            await self._audit.record("token.revoked", actor=access_token_claims.subject)

    async def revoke_everything(
        self, user_id: UUID, *, reason: str, actor: str | None = None
    ) -> int:
        """Every refresh family of the user, and every access token issued until
        now (a watermark); returns how many sessions ended."""
        # The watermark first: if a session store fails below, every access
        # token issued until now is already dead (strict mode).
        await self._set_watermark(user_id)
        ended = await self._refresh.revoke_all(user_id)
        for end_all in self._session_enders:
            ended += await end_all(user_id)
        await self._audit.record(
            "sessions.revoked_all",
            actor=actor,
            target=str(user_id),
            reason=reason,
            count=ended,
        )
        return ended

    async def expire_access_tokens(self, user_ids: Iterable[UUID]) -> None:
        """Make every access token issued until now to these users stop working
        in strict mode, and leave their sessions alone: after a change of
        roles, the next refresh issues tokens with the new permissions."""
        for user_id in user_ids:
            await self._set_watermark(user_id)

    async def _set_watermark(self, user_id: UUID) -> None:
        now = self._clock.now()
        await self._store.set_watermark(str(user_id), now, keep_until=now + self._watermark_life)
        self._checker.forget(subject=str(user_id))
