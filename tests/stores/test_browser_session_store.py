"""The BrowserSessionStore contract, on memory, SQLite, PostgreSQL and Redis.

Memory and SQL judge liveness by the records' own deadlines against the time
the test passes in; Redis drops a session by TTL on its own clock, so for
Redis the tests check the lifetime the store gave a key (``PTTL``) instead of
waiting for it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import FrozenClock
from bastion.errors import ServiceUnavailable
from bastion.stores.memory import MemoryBrowserSessionStore
from bastion.stores.protocols import BrowserSession, BrowserSessionStore, NewUser
from bastion.stores.redis import RedisBrowserSessionStore, create_redis
from bastion.stores.sql import SqlBrowserSessionStore, SqlUserStore, create_sessionmaker

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=12)

KINDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]


@dataclass
class Harness:
    """A store under test, the clock Redis turns deadlines into TTLs with, a
    way to make users (real rows for SQL: the foreign key), and for Redis the
    raw client."""

    kind: str
    store: BrowserSessionStore
    clock: FrozenClock
    new_user: Callable[[], Awaitable[uuid.UUID]]
    redis: Redis | None = None
    users: SqlUserStore | None = None


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest) -> Harness:
    """The store on each backend, over an empty database or key prefix.
    Synchronous: anyio allows ``getfixturevalue`` of async fixtures only here."""
    kind = str(request.param)
    clock = FrozenClock(T0)

    async def random_user() -> uuid.UUID:
        return uuid.uuid4()

    if kind == "memory":
        return Harness(kind, MemoryBrowserSessionStore(), clock, random_user)
    if kind == "redis":
        client: Redis = request.getfixturevalue("redis_client")
        prefix: str = request.getfixturevalue("redis_prefix")
        store = RedisBrowserSessionStore(client, prefix=prefix, clock=clock)
        return Harness(kind, store, clock, random_user, redis=client)
    engine: AsyncEngine = request.getfixturevalue(f"{kind}_engine")
    sessions = create_sessionmaker(engine)
    users = SqlUserStore(sessions)

    async def real_user() -> uuid.UUID:
        email = f"{secrets.token_hex(6)}@example.com"
        return (await users.add(NewUser(email, None, "$argon2id$x"), now=T0)).id

    return Harness(kind, SqlBrowserSessionStore(sessions), clock, real_user, users=users)


def make_session(
    user_id: uuid.UUID,
    *,
    created_at: datetime = T0,
    ip: str | None = "203.0.113.7",
    user_agent: str | None = "Mozilla/5.0 (X11; Linux x86_64)",
) -> BrowserSession:
    return BrowserSession(
        id_hash=secrets.token_hex(32),
        public_id=secrets.token_urlsafe(16),
        user_id=user_id,
        created_at=created_at,
        last_seen_at=created_at,
        idle_expires_at=created_at + IDLE,
        expires_at=created_at + ABSOLUTE,
        ip_address=ip,
        user_agent=user_agent,
    )


async def test_a_session_reads_back_exactly(target: Harness) -> None:
    """Every field survives the round trip, microseconds and time zone included."""
    session = make_session(await target.new_user())
    await target.store.add(session)
    assert await target.store.get(session.id_hash) == session


@pytest.mark.parametrize(
    ("ip", "user_agent"), [(None, None), ("2001:db8::1", "x" * 512), ("198.51.100.1", "")]
)
async def test_optional_fields_round_trip(
    target: Harness, ip: str | None, user_agent: str | None
) -> None:
    """No address or agent, an IPv6 address, a 512-character agent: kept as given."""
    session = make_session(await target.new_user(), ip=ip, user_agent=user_agent)
    await target.store.add(session)
    found = await target.store.get(session.id_hash)
    assert found is not None
    assert (found.ip_address, found.user_agent) == (ip, user_agent)


async def test_an_unknown_session_is_none(target: Harness) -> None:
    """A hash nobody stored reads as nothing."""
    assert await target.store.get(secrets.token_hex(32)) is None


async def test_touch_moves_the_activity_fields(target: Harness) -> None:
    """touch stores the new last_seen_at and idle deadline; the rest stays."""
    session = make_session(await target.new_user())
    await target.store.add(session)
    later = T0 + timedelta(minutes=5)
    touched = replace(session, last_seen_at=later, idle_expires_at=later + IDLE)
    assert await target.store.touch(touched)
    assert await target.store.get(session.id_hash) == touched


async def test_touch_never_recreates_an_ended_session(target: Harness) -> None:
    """Touching a deleted session answers False and leaves it deleted."""
    session = make_session(await target.new_user())
    await target.store.add(session)
    assert await target.store.delete(session.id_hash)
    assert not await target.store.touch(replace(session, last_seen_at=T0 + IDLE / 2))
    assert await target.store.get(session.id_hash) is None


async def test_delete_ends_one_session_once(target: Harness) -> None:
    """delete answers True, then False; the user's other sessions stay."""
    user = await target.new_user()
    one, other = make_session(user), make_session(user)
    await target.store.add(one)
    await target.store.add(other)
    assert await target.store.delete(one.id_hash)
    assert not await target.store.delete(one.id_hash)
    assert await target.store.get(one.id_hash) is None
    assert await target.store.get(other.id_hash) == other


async def test_delete_by_public_id_only_for_its_owner(target: Harness) -> None:
    """Another user's public id, or an unknown one, deletes nothing."""
    alice, mallory = await target.new_user(), await target.new_user()
    session = make_session(alice)
    await target.store.add(session)
    assert not await target.store.delete_by_public_id(mallory, session.public_id)
    assert not await target.store.delete_by_public_id(alice, "no-such-session")
    assert await target.store.get(session.id_hash) == session
    assert await target.store.delete_by_public_id(alice, session.public_id)
    assert await target.store.get(session.id_hash) is None


async def test_delete_all_ends_every_session_of_the_user(target: Harness) -> None:
    """Every session of the user goes and is counted; other users keep theirs."""
    alice, bob = await target.new_user(), await target.new_user()
    mine = [make_session(alice) for _ in range(3)]
    theirs = make_session(bob)
    for session in [*mine, theirs]:
        await target.store.add(session)
    assert await target.store.delete_all(alice, now=T0) == 3
    assert all([await target.store.get(s.id_hash) is None for s in mine])
    assert await target.store.get(theirs.id_hash) == theirs
    assert await target.store.delete_all(alice, now=T0) == 0
    again = make_session(alice)
    await target.store.add(again)
    assert await target.store.list_for_user(alice, now=T0) == [again]


async def test_delete_all_counts_concurrent_adds(target: Harness) -> None:
    """Twenty sessions added at once are all there for delete_all to end."""
    user = await target.new_user()
    sessions = [make_session(user) for _ in range(20)]
    async with anyio.create_task_group() as tg:
        for session in sessions:
            tg.start_soon(target.store.add, session)
    assert await target.store.delete_all(user, now=T0) == 20
    assert await target.store.list_for_user(user, now=T0) == []


async def test_list_is_newest_first_and_the_users_own(target: Harness) -> None:
    """A user's live sessions, newest first; nobody else's."""
    alice, bob = await target.new_user(), await target.new_user()
    older = make_session(alice)
    newer = make_session(alice, created_at=T0 + timedelta(seconds=1))
    await target.store.add(older)
    await target.store.add(newer)
    await target.store.add(make_session(bob))
    now = T0 + timedelta(seconds=1)
    assert await target.store.list_for_user(alice, now=now) == [newer, older]
    assert await target.store.list_for_user(uuid.uuid4(), now=now) == []


async def test_dead_sessions_are_not_listed_and_purge_removes_them(target: Harness) -> None:
    """Idle-dead and absolute-dead sessions drop out of the list; purge deletes them."""
    user = await target.new_user()
    idle_dead = make_session(user)
    busy = make_session(user)
    await target.store.add(idle_dead)
    await target.store.add(busy)
    if isinstance(target.store, RedisBrowserSessionStore):
        assert target.redis is not None
        ttl = await target.redis.pttl(target.store.session_key(idle_dead.id_hash))
        assert IDLE.total_seconds() * 1000 - 1000 < ttl <= IDLE.total_seconds() * 1000
        assert await target.store.purge(now=T0 + ABSOLUTE) == 0  # Redis expires by itself
        return
    moment = T0 + IDLE - timedelta(minutes=1)
    assert await target.store.touch(
        replace(busy, last_seen_at=moment, idle_expires_at=moment + IDLE)
    )
    now = T0 + IDLE
    listed = await target.store.list_for_user(user, now=now)
    assert [s.id_hash for s in listed] == [busy.id_hash]
    assert await target.store.purge(now=now) == 1
    assert await target.store.get(idle_dead.id_hash) is None
    assert await target.store.purge(now=T0 + ABSOLUTE) == 1  # absolute end, whatever the activity
    assert await target.store.list_for_user(user, now=T0 + ABSOLUTE) == []


@pytest.mark.redis
async def test_redis_lifetimes_follow_the_deadlines(redis_client: Redis, redis_prefix: str) -> None:
    """Redis: a session key lives until the sooner deadline, touch renews it,
    and the user's set lives at least until the absolute end."""
    clock = FrozenClock(T0)
    store = RedisBrowserSessionStore(redis_client, prefix=redis_prefix, clock=clock)
    session = make_session(uuid.uuid4())
    await store.add(session)
    key, users = store.session_key(session.id_hash), store.user_key(session.user_id)
    assert abs(await redis_client.pttl(key) - IDLE.total_seconds() * 1000) <= 1000
    assert abs(await redis_client.pttl(users) - ABSOLUTE.total_seconds() * 1000) <= 1000
    # Near the absolute end, the idle deadline would outlive it: the absolute one wins.
    clock.set(session.expires_at - timedelta(minutes=5))
    now = clock.now()
    assert await store.touch(replace(session, last_seen_at=now, idle_expires_at=now + IDLE))
    assert abs(await redis_client.pttl(key) - 5 * 60 * 1000) <= 1000


@pytest.mark.redis
async def test_redis_forgets_set_members_whose_session_expired(
    redis_client: Redis, redis_prefix: str
) -> None:
    """Redis: a member of the user's set whose key has gone is dropped on listing."""
    store = RedisBrowserSessionStore(redis_client, prefix=redis_prefix, clock=FrozenClock(T0))
    user = uuid.uuid4()
    gone, kept = make_session(user), make_session(user)
    await store.add(gone)
    await store.add(kept)
    await redis_client.delete(store.session_key(gone.id_hash))  # as its TTL would
    assert await store.list_for_user(user, now=T0) == [kept]
    assert await redis_client.smembers(store.user_key(user)) == {kept.id_hash.encode()}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_engine(request: pytest.FixtureRequest) -> AsyncEngine:
    """An emptied engine per SQL backend (synchronous, like ``target``)."""
    engine: AsyncEngine = request.getfixturevalue(f"{request.param}_engine")
    return engine


async def test_deleting_the_user_deletes_the_sessions(sql_engine: AsyncEngine) -> None:
    """SQL: the foreign key cascades; a deleted user leaves no session behind."""
    sessions = create_sessionmaker(sql_engine)
    users, store = SqlUserStore(sessions), SqlBrowserSessionStore(sessions)
    user = await users.add(NewUser("gone@example.com", None, "$argon2id$x"), now=T0)
    session = make_session(user.id)
    await store.add(session)
    async with sql_engine.begin() as connection:
        await connection.execute(text("DELETE FROM users WHERE email = 'gone@example.com'"))
    assert await store.get(session.id_hash) is None


@pytest.mark.redis
async def test_an_unreachable_redis_is_unavailable_not_unknown() -> None:
    """Redis down: ServiceUnavailable, never "no such session"."""
    client = create_redis("redis://127.0.0.1:1/0", timeout=0.2, retries=0)
    store = RedisBrowserSessionStore(client, clock=FrozenClock(T0))
    try:
        with pytest.raises(ServiceUnavailable):
            await store.get(secrets.token_hex(32))
        with pytest.raises(ServiceUnavailable):
            await store.add(make_session(uuid.uuid4()))
    finally:
        await client.aclose()
