"""Redis stores: the state several server instances must share quickly.

:class:`RedisRevocationStore` keeps the access-token denylist and the
per-subject watermarks as plain keys that Redis expires by itself:

=============================  ==========================  ======================
key                            value                       expires
=============================  ==========================  ======================
``<prefix>jti:<jti>``          ``1``                       at the token's ``exp``
``<prefix>wm:<subject>``       epoch seconds (a decimal)   at ``keep_until``
=============================  ==========================  ======================

The guard's check is one round trip (``MGET`` of both keys). A watermark only
moves forward: a small Lua script compares and sets it atomically on the
server. Expiries are sent relative to the store's clock (``PX``), so Redis and
the application agree on how long an entry has left even if their wall clocks
differ.

The two keys of one check may live on different slots, so this targets a
single Redis (or a Sentinel-managed primary), not Redis Cluster.

Failure is closed: a Redis that cannot answer raises
:class:`~bastion.errors.ServiceUnavailable`, never "not revoked".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from redis import exceptions as redis_exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from bastion.clock import Clock
from bastion.errors import ServiceUnavailable

__all__ = ["RedisRevocationStore", "create_redis", "redis_errors"]

_UNAVAILABLE = (
    redis_exceptions.ConnectionError,  # also authentication, loading, pool exhausted
    redis_exceptions.TimeoutError,
    redis_exceptions.ReadOnlyError,  # a replica after failover
    redis_exceptions.OutOfMemoryError,  # maxmemory reached with noeviction
    redis_exceptions.ClusterDownError,
    redis_exceptions.TryAgainError,
    OSError,  # includes the built-in TimeoutError
)

# KEYS[1] the watermark; ARGV[1] the new moment (epoch seconds), ARGV[2] its
# lifetime in milliseconds. Keeps the later moment and the later expiry.
_FORWARD_ONLY_WATERMARK = """
local moment = ARGV[1]
local ttl = tonumber(ARGV[2])
local current = redis.call('GET', KEYS[1])
if current then
    local old = tonumber(current)
    if old and old > tonumber(moment) then
        moment = current
    end
    local left = redis.call('PTTL', KEYS[1])
    if left > ttl then
        ttl = left
    end
end
redis.call('SET', KEYS[1], moment, 'PX', ttl)
return 1
"""


def create_redis(
    url: str, *, timeout: float = 2.0, retries: int = 2, max_connections: int = 50
) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``) that
    fails fast: connects and commands time out after ``timeout`` seconds and
    are retried ``retries`` times with a short backoff, so an outage becomes a
    503 quickly instead of holding requests. The caller owns it and must
    ``await client.aclose()`` (which closes its pool too).

    The pool holds at most ``max_connections`` (``BASTION_REDIS_MAX_CONNECTIONS``)
    and is a *blocking* one: under a burst a command waits up to ``timeout``
    for a free connection instead of failing at once, as redis-py's default
    pool does when it is full."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries),
        health_check_interval=30,
    )
    return Redis.from_pool(pool)


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn "Redis cannot answer" into :class:`ServiceUnavailable`, cause
    chained; other Redis errors (a wrong argument, a script bug) pass through."""
    try:
        yield
    except _UNAVAILABLE as e:
        raise ServiceUnavailable("The revocation store is unavailable.") from e


class RedisRevocationStore:
    """:class:`~bastion.stores.protocols.RevocationStore` in Redis.

    ``prefix`` namespaces the keys (several deployments or tests can share a
    database); ``clock`` is the application's time, used to turn expiry
    moments into lifetimes. The client is borrowed, not owned: closing it is
    the caller's job.
    """

    def __init__(self, client: Redis, *, prefix: str = "bastion:", clock: Clock) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._set_watermark = client.register_script(_FORWARD_ONLY_WATERMARK)

    def jti_key(self, jti: str) -> str:
        return f"{self._prefix}jti:{jti}"

    def watermark_key(self, subject: str) -> str:
        return f"{self._prefix}wm:{subject}"

    async def deny(self, jti: str, *, expires_at: datetime) -> None:
        """``SET <prefix>jti:<jti> 1 PX <ms until expires_at>``; idempotent, and
        nothing is sent for a token that has already expired."""
        ttl = self._ms_until(expires_at)
        if ttl <= 0:
            return
        with redis_errors():
            await self._client.set(self.jti_key(jti), b"1", px=ttl)

    async def set_watermark(self, subject: str, moment: datetime, *, keep_until: datetime) -> None:
        """Atomically keep the later moment and the later expiry (a Lua
        script); nothing is sent when ``keep_until`` has already passed."""
        ttl = self._ms_until(keep_until)
        if ttl <= 0:
            return
        stamp = _as_utc(moment).timestamp()
        with redis_errors():
            await self._set_watermark(keys=[self.watermark_key(subject)], args=[repr(stamp), ttl])

    async def is_revoked(self, jti: str | None, subject: str, issued_at: float) -> bool:
        """One round trip: ``MGET`` of the jti key and the watermark key."""
        with redis_errors():
            if jti is None:
                denied, moment = None, await self._client.get(self.watermark_key(subject))
            else:
                denied, moment = await self._client.mget(
                    [self.jti_key(jti), self.watermark_key(subject)]
                )
        return denied is not None or (moment is not None and issued_at <= float(moment))

    async def purge(self, *, now: datetime) -> int:
        """Nothing to do: Redis expires every entry by itself. Returns 0."""
        del now
        return 0

    def _ms_until(self, moment: datetime) -> int:
        """Milliseconds from the clock's now until ``moment``, rounded up."""
        return math.ceil((_as_utc(moment) - self._clock.now()).total_seconds() * 1000)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime given; pass an aware UTC datetime")
    return moment.astimezone(UTC)
