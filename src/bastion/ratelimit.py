"""Rate limits: named policies over a moving window, in memory or in Redis.

A policy is a quota per window in the `limits` notation (``"30/minute"``),
read from the setting ``BASTION_RATE_LIMIT_<NAME>``:

================  ===========================  =================================
policy            default                      counted per
================  ===========================  =================================
``token_ip``      ``30/minute``                client IP, every ``/oauth/token``
``token_account`` ``10/minute``                account, every password checked
``register_ip``   ``10/hour``                  client IP, ``/auth/register``
``password_change`` ``5/minute``               account, ``POST /me/password``
``basic_ip``      ``60/minute``                client IP, every HTTP Basic attempt
``basic_client``  ``20/minute``                client id, failed HTTP Basic attempts
================  ===========================  =================================

The strategy is `limits`' moving window: a request passes when fewer than the
quota passed in the last window, so there is no burst at a window's edge.
Counters live in process memory, or in Redis when ``BASTION_REDIS_URL`` is set
(sharing :attr:`Bastion.redis <bastion.core.Bastion.redis>`'s connection
pool), so a limit holds across every instance. Time is the storages' own
(``time.time()`` in memory, the same for the Redis scripts' arguments): these
are wall-clock windows, not the application's clock.

Keys are never the raw values: :func:`ip_key` and :func:`account_key` put a
namespace in front of a SHA-256 digest, so an attacker-chosen account name can
neither collide with an IP's key nor inject separators into a storage key, and
Redis holds no email addresses. Accounts are canonicalised first
(:func:`bastion.emails.canonical_email`); IPv6 clients are counted per /64,
the block one subscriber usually holds.

A refused request raises :class:`~bastion.errors.RateLimited` carrying what
the HTTP edge needs for ``Retry-After`` and the ``RateLimit-Policy`` /
``RateLimit`` fields of draft-ietf-httpapi-ratelimit-headers (``q`` the quota,
``w`` the window, ``r`` remaining, ``t`` seconds until one more passes). A
store that cannot answer (Redis down) raises
:class:`~bastion.errors.ServiceUnavailable`: limits fail closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, NewType

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.storage import Storage as LimitsStorage
from limits.aio.strategies import MovingWindowRateLimiter

from bastion.emails import canonical_email
from bastion.errors import ConfigurationError, RateLimited, ServiceUnavailable
from bastion.stores.redis import redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bastion.settings import Settings

__all__ = [
    "POLICIES",
    "LimitKey",
    "RateLimiter",
    "account_key",
    "client_key",
    "ip_key",
    "storage_errors",
]

POLICIES = (
    "token_ip",
    "token_account",
    "register_ip",
    "password_change",
    "basic_ip",
    "basic_client",
)
"""Every policy name; the setting of ``name`` is ``BASTION_RATE_LIMIT_<NAME>``."""

LimitKey = NewType("LimitKey", str)
"""A namespaced, hashed counter key; build one with :func:`ip_key` or :func:`account_key`."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def ip_key(ip: str | None) -> LimitKey:
    """The key of a client address: IPv4 as is, IPv6 by its /64, an unknown
    address (no socket peer) as one shared ``unknown`` key."""
    if ip is None:
        return LimitKey("ip:unknown")
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        value = ip
    else:
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                value = str(address.ipv4_mapped)
            else:
                value = str(ipaddress.IPv6Network((address, 64), strict=False))
        else:
            value = str(address)
    return LimitKey(f"ip:{_digest(value)}")


def account_key(identifier: str) -> LimitKey:
    """The key of an account identifier (an email as typed, or a user id),
    canonicalised so ``Alice@Example.com`` and ``alice@example.com`` share it."""
    return LimitKey(f"account:{_digest(canonical_email(identifier))}")


def client_key(client_id: str) -> LimitKey:
    """The key of an OAuth client id, exactly as presented (client ids are
    case-sensitive)."""
    return LimitKey(f"client:{_digest(client_id)}")


@contextmanager
def storage_errors() -> Iterator[None]:
    """Turn "the limits store cannot answer" into :class:`ServiceUnavailable`."""
    try:
        with redis_errors():
            yield
    except ServiceUnavailable as e:
        raise ServiceUnavailable("The rate-limit store is unavailable.") from e.__cause__


def parse_policy(setting: str, value: str) -> RateLimitItem:
    """One limit such as ``"30/minute"``; :class:`ValueError` names ``setting``."""
    try:
        items = parse_many(value)
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        raise ValueError(f"{setting}: {value!r} is not one limit such as '30/minute'")
    return items[0]


class RateLimiter:
    """Named moving-window policies over one `limits` storage.

    ``policies`` maps a policy name to its limit string; a string that does not
    parse refuses start-up with :class:`~bastion.errors.ConfigurationError`
    naming its setting. ``redis`` (borrowed, not closed here) selects the Redis
    storage under ``prefix``; without it counters live in this process.
    ``enabled=False`` lets every request through (tests, or a gateway that
    limits in front of Bastion) but still checks the policies.
    """

    def __init__(
        self,
        policies: Mapping[str, str],
        *,
        redis: Redis | None = None,
        prefix: str = "bastion:limits",
        enabled: bool = True,
    ) -> None:
        items: dict[str, RateLimitItem] = {}
        problems: list[str] = []
        for name, value in policies.items():
            try:
                items[name] = parse_policy(f"BASTION_RATE_LIMIT_{name.upper()}", value)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            raise ConfigurationError(problems)
        self.policies: Mapping[str, RateLimitItem] = items
        self.enabled = enabled
        self.storage: LimitsStorage
        if redis is None:
            self.storage = MemoryStorage()
        else:
            # The Redis storage builds its client on the pool it is given, so it
            # shares Bastion's connections, timeouts and retries; the URL is
            # only parsed, never dialled.
            self.storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=prefix,
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]  # typed too narrowly
            )
        self._limiter = MovingWindowRateLimiter(self.storage)

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis | None = None) -> RateLimiter:
        return cls(
            {name: getattr(settings, f"rate_limit_{name}") for name in POLICIES},
            redis=redis,
            prefix=settings.rate_limit_key_prefix,
            enabled=settings.rate_limits_enabled,
        )

    async def hit(self, policy: str, key: LimitKey) -> None:
        """Count one request against ``policy`` for ``key``.

        Raises :class:`~bastion.errors.RateLimited` when the quota is spent
        (the refused request is not counted) and
        :class:`~bastion.errors.ServiceUnavailable` when the store cannot answer.
        """
        item = self.policies[policy]
        if not self.enabled:
            return
        with storage_errors():
            if await self._limiter.hit(item, policy, key):
                return
            stats = await self._limiter.get_window_stats(item, policy, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(retry_after, policy=policy, quota=item.amount, window=item.get_expiry())

    async def check(self, policy: str, key: LimitKey) -> None:
        """Raise :class:`~bastion.errors.RateLimited` if ``key`` has spent its
        ``policy`` quota, without counting this request: for policies that
        count failures only (:meth:`hit` after each) but refuse every attempt
        once spent."""
        item = self.policies[policy]
        if not self.enabled:
            return
        with storage_errors():
            if await self._limiter.test(item, policy, key):
                return
            stats = await self._limiter.get_window_stats(item, policy, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(retry_after, policy=policy, quota=item.amount, window=item.get_expiry())

    async def clear(self, policy: str, key: LimitKey) -> None:
        """Forget every request counted against ``policy`` for ``key``."""
        with storage_errors():
            await self._limiter.clear(self.policies[policy], policy, key)

    async def reset(self) -> None:
        """Forget every counter of this storage (tests; the whole Redis prefix)."""
        with storage_errors():
            await self.storage.reset()

    async def aclose(self) -> None:
        """Stop the memory storage's expiry task; the Redis client is the owner's."""
        if isinstance(self.storage, MemoryStorage):
            timer = self.storage.timer
            if timer is not None and not timer.done():
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer
