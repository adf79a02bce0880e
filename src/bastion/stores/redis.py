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

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from redis import exceptions as redis_exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from bastion.clock import Clock
from bastion.errors import ServiceUnavailable
from bastion.stores.protocols import BrowserSession

__all__ = ["RedisBrowserSessionStore", "RedisRevocationStore", "create_redis", "redis_errors"]

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


# KEYS[1] the session, KEYS[2] the user's set; ARGV[1] the record, ARGV[2] its
# lifetime (ms), ARGV[3] the id hash, ARGV[4] the set's minimum lifetime (ms).
_ADD_SESSION = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local left = redis.call('PTTL', KEYS[2])
if left < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
"""

# KEYS[1] the user's set; ARGV[1] the prefix of session keys. Deletes every
# member's session and the set; returns how many sessions existed (were live).
_DELETE_ALL_SESSIONS = """
local ended = 0
for _, id_hash in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    ended = ended + redis.call('DEL', ARGV[1] .. id_hash)
end
redis.call('DEL', KEYS[1])
return ended
"""


@contextmanager
def _session_store_errors() -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as e:
        raise ServiceUnavailable("The session store is unavailable.") from e


class RedisBrowserSessionStore:
    """:class:`~bastion.stores.protocols.BrowserSessionStore` in Redis.

    =============================  ==========================  =========================
    key                            value                       expires
    =============================  ==========================  =========================
    ``<prefix>s:<id_hash>``        the session, as JSON        when it would die: the
                                                               sooner of idle and absolute
    ``<prefix>u:<user_id>``        set of the user's id        with the user's longest
                                   hashes                      absolute expiry
    =============================  ==========================  =========================

    A session key dies by itself (TTL = min(idle remaining, absolute
    remaining), renewed by :meth:`touch`), so :meth:`purge` has nothing to do.
    The per-user set serves :meth:`list_for_user` and :meth:`delete_all`; a
    member whose session has expired is dropped when next seen. :meth:`add`
    and :meth:`delete_all` are Lua scripts, so "sign out everywhere" cannot
    miss a session added while it runs. Keys are computed inside the scripts:
    a single Redis (or Sentinel primary), not Redis Cluster. The client is
    borrowed; ``clock`` turns expiry moments into lifetimes.
    """

    def __init__(self, client: Redis, *, prefix: str = "bastion:session:", clock: Clock) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._add = client.register_script(_ADD_SESSION)
        self._delete_all = client.register_script(_DELETE_ALL_SESSIONS)

    def session_key(self, id_hash: str) -> str:
        return f"{self._prefix}s:{id_hash}"

    def user_key(self, user_id: UUID) -> str:
        return f"{self._prefix}u:{user_id}"

    async def add(self, session: BrowserSession) -> None:
        ttl = self._ms_until(min(session.idle_expires_at, session.expires_at))
        if ttl <= 0:
            return
        keys = [self.session_key(session.id_hash), self.user_key(session.user_id)]
        args: list[str | int] = [
            _dump(session),
            ttl,
            session.id_hash,
            self._ms_until(session.expires_at),
        ]
        with _session_store_errors():
            await self._add(keys=keys, args=args)

    async def get(self, id_hash: str) -> BrowserSession | None:
        with _session_store_errors():
            raw = await self._client.get(self.session_key(id_hash))
        return _load(id_hash, raw) if raw is not None else None

    async def touch(self, session: BrowserSession) -> bool:
        """``SET … XX PX``: rewrites the record and renews its lifetime only if
        the key still exists, so a session ended meanwhile stays ended."""
        key = self.session_key(session.id_hash)
        ttl = self._ms_until(min(session.idle_expires_at, session.expires_at))
        with _session_store_errors():
            if ttl <= 0:
                await self._client.delete(key)
                return False
            return bool(await self._client.set(key, _dump(session), px=ttl, xx=True))

    async def delete(self, id_hash: str) -> bool:
        with _session_store_errors():
            raw = await self._client.getdel(self.session_key(id_hash))
            if raw is None:
                return False
            await self._client.srem(self.user_key(_load(id_hash, raw).user_id), id_hash)
        return True

    async def delete_by_public_id(self, user_id: UUID, public_id: str) -> bool:
        for session in await self._sessions_of(user_id):
            if session.public_id == public_id:
                return await self.delete(session.id_hash)
        return False

    async def delete_all(self, user_id: UUID, *, now: datetime) -> int:
        del now  # what Redis still holds is what was live
        with _session_store_errors():
            ended = await self._delete_all(
                keys=[self.user_key(user_id)], args=[self.session_key("")]
            )
        return int(ended)

    async def list_for_user(self, user_id: UUID, *, now: datetime) -> list[BrowserSession]:
        now = _as_utc(now)
        live = [s for s in await self._sessions_of(user_id) if s.is_live(now)]
        return sorted(live, key=lambda s: (-s.created_at.timestamp(), s.id_hash))

    async def purge(self, *, now: datetime) -> int:
        """Nothing to do: Redis expires sessions by themselves. Returns 0."""
        del now
        return 0

    async def _sessions_of(self, user_id: UUID) -> list[BrowserSession]:
        """Every session the user's set still names; members whose session
        has gone are removed from the set on the way."""
        user_key = self.user_key(user_id)
        with _session_store_errors():
            members = sorted(_text(m) for m in await self._client.smembers(user_key))
            if not members:
                return []
            values = await self._client.mget([self.session_key(m) for m in members])
            gone = [m for m, raw in zip(members, values, strict=True) if raw is None]
            if gone:
                await self._client.srem(user_key, *gone)
        return [_load(m, raw) for m, raw in zip(members, values, strict=True) if raw is not None]

    def _ms_until(self, moment: datetime) -> int:
        return math.ceil((_as_utc(moment) - self._clock.now()).total_seconds() * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _dump(session: BrowserSession) -> str:
    record: dict[str, Any] = {
        "p": session.public_id,
        "u": str(session.user_id),
        "c": _as_utc(session.created_at).isoformat(),
        "l": _as_utc(session.last_seen_at).isoformat(),
        "i": _as_utc(session.idle_expires_at).isoformat(),
        "e": _as_utc(session.expires_at).isoformat(),
        "ip": session.ip_address,
        "ua": session.user_agent,
    }
    return json.dumps(record, separators=(",", ":"))


def _load(id_hash: str, raw: bytes | str) -> BrowserSession:
    record = json.loads(raw)
    return BrowserSession(
        id_hash=id_hash,
        public_id=record["p"],
        user_id=UUID(record["u"]),
        created_at=datetime.fromisoformat(record["c"]),
        last_seen_at=datetime.fromisoformat(record["l"]),
        idle_expires_at=datetime.fromisoformat(record["i"]),
        expires_at=datetime.fromisoformat(record["e"]),
        ip_address=record["ip"],
        user_agent=record["ua"],
    )
