"""The RevocationStore contract, on memory, SQLite, PostgreSQL and Redis.

Time never passes by sleeping: memory and SQL stores read a ``FrozenClock``
that tests move; Redis expires keys on its own clock, so for Redis the tests
check the lifetime the store gave a key (``PTTL``) instead.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import FrozenClock
from bastion.errors import InvalidInput, ServiceUnavailable
from bastion.stores.memory import MemoryRevocationStore
from bastion.stores.protocols import RevocationStore
from bastion.stores.redis import RedisRevocationStore, create_redis
from bastion.stores.sql import SqlRevocationStore, create_engine, create_sessionmaker

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

KINDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]


@dataclass
class Harness:
    """A store under test, the clock it reads, and for Redis the raw client."""

    kind: str
    store: RevocationStore
    clock: FrozenClock
    redis: Redis | None = None

    @property
    def expires_by_itself(self) -> bool:
        """Redis drops entries by TTL; the others by the clock and purge."""
        return self.redis is not None

    async def ttl_ms(self, key: str) -> int:
        assert self.redis is not None
        return int(await self.redis.pttl(key))


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest) -> Harness:
    """The store on each backend, over an empty database or key prefix.

    Synchronous on purpose: it pulls the async backend fixtures in with
    ``getfixturevalue``, which anyio only allows from a synchronous fixture."""
    kind = str(request.param)
    clock = FrozenClock(T0)
    if kind == "memory":
        return Harness(kind, MemoryRevocationStore(clock), clock)
    if kind == "redis":
        client: Redis = request.getfixturevalue("redis_client")
        prefix: str = request.getfixturevalue("redis_prefix")
        return Harness(
            kind, RedisRevocationStore(client, prefix=prefix, clock=clock), clock, client
        )
    engine: AsyncEngine = request.getfixturevalue(f"{kind}_engine")
    return Harness(kind, SqlRevocationStore(create_sessionmaker(engine), clock=clock), clock)


def jti() -> str:
    return secrets.token_urlsafe(16)


async def test_every_store_satisfies_the_protocol(target: Harness) -> None:
    """Each implementation is usable wherever a RevocationStore is expected."""
    store: RevocationStore = target.store
    assert store is target.store


async def test_nothing_is_revoked_in_an_empty_store(target: Harness) -> None:
    """No denylist entry and no watermark: not revoked, with or without a jti."""
    assert not await target.store.is_revoked(jti(), "alice", T0.timestamp())
    assert not await target.store.is_revoked(None, "alice", T0.timestamp())


async def test_deny_revokes_that_jti_only(target: Harness) -> None:
    """A denied jti is revoked; other jtis of the same subject are not."""
    denied, other = jti(), jti()
    await target.store.deny(denied, expires_at=T0 + MINUTE)
    assert await target.store.is_revoked(denied, "alice", T0.timestamp())
    assert await target.store.is_revoked(denied, "bob", T0.timestamp())  # by jti, any subject
    assert not await target.store.is_revoked(other, "alice", T0.timestamp())
    assert not await target.store.is_revoked(None, "alice", T0.timestamp())


async def test_deny_is_idempotent(target: Harness) -> None:
    """Denying the same jti twice is fine and changes nothing."""
    token = jti()
    await target.store.deny(token, expires_at=T0 + MINUTE)
    await target.store.deny(token, expires_at=T0 + MINUTE)
    assert await target.store.is_revoked(token, "alice", T0.timestamp())


async def test_concurrent_denials_of_one_jti(target: Harness) -> None:
    """Twenty racing denials of one jti all succeed."""
    token = jti()
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(lambda: target.store.deny(token, expires_at=T0 + MINUTE))
    assert await target.store.is_revoked(token, "alice", T0.timestamp())


async def test_denial_lasts_until_the_token_expires(target: Harness) -> None:
    """A denylist entry counts until expires_at and not after (Redis: its TTL)."""
    token = jti()
    await target.store.deny(token, expires_at=T0 + MINUTE)
    if isinstance(target.store, RedisRevocationStore):
        assert 59_000 < await target.ttl_ms(target.store.jti_key(token)) <= 60_000
        return
    target.clock.advance(59)
    assert await target.store.is_revoked(token, "alice", T0.timestamp())
    target.clock.advance(1)
    assert not await target.store.is_revoked(token, "alice", T0.timestamp())


@pytest.mark.parametrize("ago", [timedelta(0), timedelta(seconds=1), timedelta(days=1)])
async def test_denying_an_expired_token_stores_nothing(target: Harness, ago: timedelta) -> None:
    """A token already expired needs no entry: deny is a no-op."""
    token = jti()
    await target.store.deny(token, expires_at=T0 - ago)
    assert not await target.store.is_revoked(token, "alice", T0.timestamp())
    assert await target.store.purge(now=T0) == 0
    if isinstance(target.store, RedisRevocationStore):
        assert target.redis is not None
        assert await target.redis.exists(target.store.jti_key(token)) == 0


@pytest.mark.parametrize(
    ("issued", "revoked"),
    [
        (-3600.0, True),
        (-1.0, True),
        (-0.001, True),
        (0.0, True),  # exactly at the watermark
        (0.001, False),
        (1.0, False),
        (3600.0, False),
    ],
)
async def test_watermark_revokes_tokens_issued_at_or_before_it(
    target: Harness, issued: float, revoked: bool
) -> None:
    """Issued at or before the watermark: revoked; after it: not (millisecond precision)."""
    moment = T0 + timedelta(microseconds=123_456)
    await target.store.set_watermark("alice", moment, keep_until=T0 + 15 * MINUTE)
    issued_at = moment.timestamp() + issued
    assert await target.store.is_revoked(None, "alice", issued_at) is revoked
    assert await target.store.is_revoked(jti(), "alice", issued_at) is revoked


async def test_watermark_accepts_whole_second_issued_at(target: Harness) -> None:
    """A JWT's iat is usually an integer; it compares like the float."""
    await target.store.set_watermark("alice", T0, keep_until=T0 + MINUTE)
    assert await target.store.is_revoked(None, "alice", int(T0.timestamp()))
    assert not await target.store.is_revoked(None, "alice", int(T0.timestamp()) + 1)


async def test_watermarks_of_different_subjects_are_independent(target: Harness) -> None:
    """Alice's watermark says nothing about Bob's tokens."""
    await target.store.set_watermark("alice", T0, keep_until=T0 + MINUTE)
    assert await target.store.is_revoked(None, "alice", T0.timestamp() - 1)
    assert not await target.store.is_revoked(None, "bob", T0.timestamp() - 1)
    assert not await target.store.is_revoked(None, "alice2", T0.timestamp() - 1)


async def test_watermark_only_moves_forward(target: Harness) -> None:
    """An earlier moment or a shorter life never replaces a later one."""
    later, earlier = T0 + timedelta(seconds=10), T0 + timedelta(seconds=5)
    await target.store.set_watermark("alice", later, keep_until=T0 + 10 * MINUTE)
    await target.store.set_watermark("alice", earlier, keep_until=T0 + 5 * MINUTE)
    assert await target.store.is_revoked(None, "alice", T0.timestamp() + 7)
    assert await target.store.is_revoked(None, "alice", later.timestamp())
    if isinstance(target.store, RedisRevocationStore):
        assert await target.ttl_ms(target.store.watermark_key("alice")) > 9 * 60_000
        return
    target.clock.advance(minutes=6)
    assert await target.store.is_revoked(None, "alice", T0.timestamp() + 7)


async def test_later_watermark_replaces_an_earlier_one(target: Harness) -> None:
    """A later moment wins, and a longer life extends the entry."""
    await target.store.set_watermark("alice", T0, keep_until=T0 + 5 * MINUTE)
    await target.store.set_watermark("alice", T0 + MINUTE, keep_until=T0 + 10 * MINUTE)
    assert await target.store.is_revoked(None, "alice", T0.timestamp() + 30)
    assert not await target.store.is_revoked(None, "alice", T0.timestamp() + 61)
    if isinstance(target.store, RedisRevocationStore):
        assert 9 * 60_000 < await target.ttl_ms(target.store.watermark_key("alice")) <= 600_000
        return
    target.clock.advance(minutes=9)
    assert await target.store.is_revoked(None, "alice", T0.timestamp() + 30)
    target.clock.advance(minutes=1)
    assert not await target.store.is_revoked(None, "alice", T0.timestamp() + 30)


async def test_concurrent_watermarks_keep_the_latest(target: Harness) -> None:
    """Watermarks racing in any order leave the latest moment in place."""
    moments = [T0 + timedelta(seconds=s) for s in (3, 9, 1, 7, 5, 8, 2, 6, 4, 0)]

    async def set_watermark(moment: datetime) -> None:
        await target.store.set_watermark("alice", moment, keep_until=T0 + MINUTE)

    async with anyio.create_task_group() as tg:
        for moment in moments:
            tg.start_soon(set_watermark, moment)
    assert await target.store.is_revoked(None, "alice", T0.timestamp() + 9)
    assert not await target.store.is_revoked(None, "alice", T0.timestamp() + 9.001)


async def test_expired_watermark_is_not_stored(target: Harness) -> None:
    """A watermark whose life is already over is a no-op."""
    await target.store.set_watermark("alice", T0, keep_until=T0)
    assert not await target.store.is_revoked(None, "alice", T0.timestamp() - 1)


async def test_purge_drops_expired_entries_and_counts_them(target: Harness) -> None:
    """purge removes entries whose expiry is at or before now and says how many."""
    gone, kept = jti(), jti()
    await target.store.deny(gone, expires_at=T0 + MINUTE)
    await target.store.deny(kept, expires_at=T0 + 10 * MINUTE)
    await target.store.set_watermark("alice", T0, keep_until=T0 + MINUTE)
    await target.store.set_watermark("bob", T0, keep_until=T0 + 10 * MINUTE)
    if target.expires_by_itself:
        assert await target.store.purge(now=T0 + MINUTE) == 0  # Redis expires keys itself
        return

    assert await target.store.purge(now=T0 + MINUTE) == 2
    assert await target.store.purge(now=T0 + MINUTE) == 0
    assert await target.store.is_revoked(kept, "bob", T0.timestamp())
    assert await target.store.is_revoked(None, "bob", T0.timestamp())
    target.clock.set(T0 + 30 * MINUTE)
    assert not await target.store.is_revoked(gone, "alice", T0.timestamp())
    assert await target.store.purge(now=T0 + 30 * MINUTE) == 2


async def test_naive_datetimes_are_refused(target: Harness) -> None:
    """A naive expiry is a programming error on every target."""
    with pytest.raises(ValueError, match="naive"):
        await target.store.deny(jti(), expires_at=datetime(2030, 1, 2))
    with pytest.raises(ValueError, match="naive"):
        await target.store.set_watermark("alice", T0, keep_until=datetime(2030, 1, 2))


@pytest.mark.parametrize(
    "target", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_sql_refuses_ids_longer_than_the_columns(target: Harness) -> None:
    """Both SQL backends reject an overlong jti or subject alike (SQLite would store it)."""
    store = target.store
    with pytest.raises(InvalidInput):
        await store.deny("j" * 256, expires_at=T0 + MINUTE)
    with pytest.raises(InvalidInput):
        await store.set_watermark("s" * 256, T0, keep_until=T0 + MINUTE)
    assert not await store.is_revoked("j" * 256, "s" * 256, T0.timestamp())


async def test_sql_outage_raises_instead_of_answering_not_revoked(
    broken_database_url: str,
) -> None:
    """An unreachable database is ServiceUnavailable: the check fails closed."""
    engine = create_engine(broken_database_url)
    store = SqlRevocationStore(create_sessionmaker(engine), clock=FrozenClock(T0))
    try:
        with pytest.raises(ServiceUnavailable):
            await store.is_revoked(jti(), "alice", T0.timestamp())
        with pytest.raises(ServiceUnavailable):
            await store.deny(jti(), expires_at=T0 + MINUTE)
    finally:
        await engine.dispose()


async def test_redis_outage_raises_instead_of_answering_not_revoked() -> None:
    """A Redis nobody listens on is ServiceUnavailable for every operation."""
    client = create_redis("redis://127.0.0.1:1/0", timeout=1, retries=0)
    store = RedisRevocationStore(client, clock=FrozenClock(T0))
    try:
        with pytest.raises(ServiceUnavailable):
            await store.is_revoked(jti(), "alice", T0.timestamp())
        with pytest.raises(ServiceUnavailable):
            await store.is_revoked(None, "alice", T0.timestamp())
        with pytest.raises(ServiceUnavailable):
            await store.deny(jti(), expires_at=T0 + MINUTE)
        with pytest.raises(ServiceUnavailable):
            await store.set_watermark("alice", T0, keep_until=T0 + MINUTE)
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_keys_carry_the_prefix(redis_client: Redis, redis_prefix: str) -> None:
    """Every key the store writes is under its prefix, so deployments can share a database."""
    store = RedisRevocationStore(redis_client, prefix=redis_prefix, clock=FrozenClock(T0))
    await store.deny("abc", expires_at=T0 + MINUTE)
    await store.set_watermark("alice", T0, keep_until=T0 + MINUTE)
    keys = sorted([key async for key in redis_client.scan_iter(match=f"{redis_prefix}*")])
    assert keys == [f"{redis_prefix}jti:abc".encode(), f"{redis_prefix}wm:alice".encode()]


@pytest.mark.parametrize(
    "target", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_sql_check_is_one_statement(target: Harness, request: pytest.FixtureRequest) -> None:
    """is_revoked asks the denylist and the watermark in a single query."""
    engine: AsyncEngine = request.getfixturevalue(f"{target.kind}_engine")
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    await target.store.is_revoked(jti(), "alice", T0.timestamp())  # connect and warm up first
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await target.store.is_revoked(jti(), "alice", T0.timestamp())
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert len(statements) == 1
    assert "revoked_tokens" in statements[0]
    assert "token_watermarks" in statements[0]
