"""Failed-credential tracking: throttle the guesser, never lock out the owner.

Counters live in the rate limiter's storage (process memory, or Redis shared
by every instance). Two tiers, keyed like rate limits (hashed, namespaced,
accounts canonicalised; see :mod:`bastion.ratelimit`):

1. **Account + IP** (``BASTION_LOCKOUT_IP_FAILURES``, 5): after that many
   failures for one account from one client address within
   ``BASTION_LOCKOUT_WINDOW`` (900 s, counted from the first failure), that
   pair answers 429 until the window ends. A success from the pair resets it.
   One attacker's address therefore costs the owner nothing: they log in from
   their own.
2. **Account** (``BASTION_LOCKOUT_ACCOUNT_FAILURES``, 20, from any addresses
   within the window): the account is *locked*, for
   ``BASTION_LOCKOUT_DURATION`` (60 s) doubling with each further lock within
   a day, capped at ``BASTION_LOCKOUT_MAX_DURATION`` (900 s). The lock is
   soft: it refuses only addresses that have failed on this account during
   the window. An address with no recent failure (the owner's, typically)
   still gets its attempt; if that attempt fails, the address has failed and
   is refused for the rest of the lock. So a distributed guesser gets one guess
   per fresh address while locked instead of a handful, and the owner is
   never locked out by somebody else: no lock is permanent, none outlives the
   cap, and none refuses an address that has not been failing.

A refused attempt is refused *before* the password is checked, so it costs no
Argon2 hash, and answers like any rate limit
(:class:`~bastion.errors.RateLimited`, with ``Retry-After``). Unknown
accounts are counted and locked exactly like real ones: the answers do not
tell which accounts exist. A lock starting is the audit event
``account.locked``; an administrator's :meth:`Lockout.unlock` (every counter
of the account, every address's included) is ``account.unlocked``.

:meth:`Lockout.attempt` is the hook for any credential check (the password
grant, the password change, and later HTTP Basic or client secrets): it checks
the lockout, counts the attempt against an account rate-limit policy, runs the
check and counts its outcome. A store that cannot answer raises
:class:`~bastion.errors.ServiceUnavailable`: credential checks fail closed.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from bastion.audit import AuditLog
from bastion.errors import InvalidCredentials, RateLimited
from bastion.ratelimit import RateLimiter, account_key, ip_key, storage_errors

if TYPE_CHECKING:
    from bastion.settings import Settings

__all__ = ["Lockout"]

STRIKE_MEMORY = 86_400
"""Seconds a lock is remembered for doubling the next one."""
GENERATION_MEMORY = 30 * 86_400
"""Seconds an unlock's generation number is kept (far longer than any window)."""

SubjectLookup = Callable[[str], Awaitable[str | None]]


class Lockout:
    """Per-account failure counters and soft, capped, temporary locks.

    ``subject_of`` maps an account identifier to the user id the audit event
    names (``None`` for an unknown account); it is called only when a lock
    starts. ``enabled=False`` turns the counting off (tests); the
    rate-limit policy of :meth:`attempt` still applies.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        audit: AuditLog,
        *,
        ip_failures: int = 5,
        account_failures: int = 20,
        window: int = 900,
        duration: int = 60,
        max_duration: int = 900,
        enabled: bool = True,
        subject_of: SubjectLookup | None = None,
    ) -> None:
        self._limiter = limiter
        self._storage = limiter.storage
        self._audit = audit
        self.ip_failures = ip_failures
        self.account_failures = account_failures
        self.window = window
        self.duration = duration
        self.max_duration = max_duration
        self.enabled = enabled
        self._subject_of = subject_of

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        limiter: RateLimiter,
        audit: AuditLog,
        *,
        subject_of: SubjectLookup | None = None,
    ) -> Lockout:
        return cls(
            limiter,
            audit,
            ip_failures=settings.lockout_ip_failures,
            account_failures=settings.lockout_account_failures,
            window=settings.lockout_window,
            duration=settings.lockout_duration,
            max_duration=settings.lockout_max_duration,
            enabled=settings.lockout_enabled,
            subject_of=subject_of,
        )

    @asynccontextmanager
    async def attempt(
        self,
        account: str,
        ip: str | None,
        *,
        policy: str | None = "token_account",
        subject: str | None = None,
    ) -> AsyncIterator[None]:
        """Wrap one credential check for ``account`` from ``ip``.

        Before the body: :meth:`check`, then one hit on the rate-limit
        ``policy`` for the account (after the lockout, so refused attempts do
        not spend the owner's quota). :class:`~bastion.errors.InvalidCredentials`
        out of the body counts a failure (and propagates); a body that returns
        counts a success.
        """
        await self.check(account, ip)
        if policy is not None:
            await self._limiter.hit(policy, account_key(account))
        try:
            yield
        except InvalidCredentials:
            await self.failed(account, ip, subject=subject)
            raise
        await self.succeeded(account, ip)

    async def check(self, account: str, ip: str | None) -> None:
        """Raise :class:`~bastion.errors.RateLimited` if ``ip`` may not try
        ``account`` now: the pair failed too often, or the account is locked
        and this address failed on it during the window."""
        if not self.enabled:
            return
        keys = _Keys(account, ip)
        with storage_errors():
            pair_key = keys.pair(await self._storage.get(keys.generation))
            failures = await self._storage.get(pair_key)
            if failures >= self.ip_failures:
                raise RateLimited(await self._seconds_left(pair_key))
            if failures and await self._storage.get(keys.lock):
                raise RateLimited(await self._seconds_left(keys.lock))

    async def failed(self, account: str, ip: str | None, *, subject: str | None = None) -> None:
        """Count a failure; the ``account_failures``-th in the window starts a lock."""
        if not self.enabled:
            return
        keys = _Keys(account, ip)
        with storage_errors():
            pair_key = keys.pair(await self._storage.get(keys.generation))
            await self._storage.incr(pair_key, self.window)
            count = await self._storage.incr(keys.failures, self.window)
            if count != self.account_failures:
                return  # exactly one failure, on one instance, starts each lock
            strikes = await self._storage.incr(keys.strikes, STRIKE_MEMORY)
            duration = min(self.duration * 2 ** min(strikes - 1, 20), self.max_duration)
            await self._storage.clear(keys.lock)
            await self._storage.incr(keys.lock, duration)
            await self._storage.clear(keys.failures)  # the next lock needs as many again
        if subject is None and self._subject_of is not None:
            subject = await self._subject_of(account)
        await self._audit.record(
            "account.locked",
            target=subject,
            account=keys.account,
            ip=ip,
            failures=count,
            duration=duration,
            lock=strikes,
        )

    async def succeeded(self, account: str, ip: str | None) -> None:
        """Reset the pair's failures; the account's count and any lock stay,
        so one good login does not hide an attack from elsewhere."""
        if not self.enabled:
            return
        keys = _Keys(account, ip)
        with storage_errors():
            await self._storage.clear(keys.pair(await self._storage.get(keys.generation)))

    async def unlock(self, account: str, *, actor: str | None, subject: str | None) -> None:
        """Clear every counter of ``account``: its lock, its failures, its
        strikes, its account rate limits and the failures of every address.

        Addresses' counters cannot be listed in every storage, so they are
        orphaned instead: the account's generation number, part of each pair
        key, moves by a random step and the old keys expire by themselves.
        """
        keys = _Keys(account, None)
        with storage_errors():
            step = secrets.randbelow(2**31) + 1
            await self._storage.incr(keys.generation, GENERATION_MEMORY, amount=step)
            for key in (keys.lock, keys.failures, keys.strikes):
                await self._storage.clear(key)
        for policy in ("token_account", "password_change"):
            await self._limiter.clear(policy, account_key(account))
        await self._audit.record(
            "account.unlocked", actor=actor, target=subject, account=keys.account
        )

    async def _seconds_left(self, key: str) -> int:
        return max(1, math.ceil(await self._storage.get_expiry(key) - time.time()))


class _Keys:
    """The storage keys of one account (and one address)."""

    def __init__(self, account: str, ip: str | None) -> None:
        self.account = account_key(account)
        self.ip = ip_key(ip)
        self.generation = f"lockout/generation/{self.account}"
        self.failures = f"lockout/failures/{self.account}"
        self.lock = f"lockout/lock/{self.account}"
        self.strikes = f"lockout/strikes/{self.account}"

    def pair(self, generation: int) -> str:
        return f"lockout/pair/{self.account}/{generation}/{self.ip}"
