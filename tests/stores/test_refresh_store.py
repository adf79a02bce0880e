"""The RefreshTokenStore contract, on every SQL backend."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import ServiceUnavailable
from bastion.stores.protocols import NewUser, RefreshSession, RefreshTokenRecord, RefreshTokenStore
from bastion.stores.sql import (
    SqlRefreshTokenStore,
    SqlUserStore,
    create_engine,
    create_sessionmaker,
)
from bastion.stores.sql.tables import RefreshFamilyRow, RefreshTokenRow, UserRow

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LIFETIME = timedelta(days=30)
IDLE = timedelta(days=7)


def new_hash() -> str:
    return secrets.token_hex(32)


def new_family(
    user_id: uuid.UUID,
    *,
    created_at: datetime = T0,
    lifetime: timedelta = LIFETIME,
    client_id: str = "web",
    user_agent: str | None = "Firefox",
    ip_address: str | None = "192.0.2.1",
) -> RefreshSession:
    return RefreshSession(
        id=uuid.uuid4(),
        user_id=user_id,
        client_id=client_id,
        scope="openid profile",
        created_at=created_at,
        expires_at=created_at + lifetime,
        last_used_at=created_at,
        user_agent=user_agent,
        ip_address=ip_address,
    )


def new_token(
    family: RefreshSession, *, parent: str | None = None, at: datetime = T0
) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        token_hash=new_hash(),
        family_id=family.id,
        parent_hash=parent,
        scope=family.scope,
        created_at=at,
        idle_expires_at=min(at + IDLE, family.expires_at),
    )


@pytest.fixture
async def user_id(user_store: SqlUserStore) -> uuid.UUID:
    return await new_user_id(user_store)


async def new_user_id(user_store: SqlUserStore) -> uuid.UUID:
    email = f"{secrets.token_hex(4)}@example.com"
    return (await user_store.add(NewUser(email, None, "$argon2id$x"), now=T0)).id


async def login(
    store: SqlRefreshTokenStore, user_id: uuid.UUID, **family: object
) -> tuple[RefreshSession, RefreshTokenRecord]:
    session = new_family(user_id, **family)  # type: ignore[arg-type]
    first = new_token(session, at=session.created_at)
    await store.start_family(session, first)
    return session, first


async def token_count(sessionmaker: async_sessionmaker[AsyncSession], *where: object) -> int:
    stmt = select(func.count()).select_from(RefreshTokenRow).where(*where)  # type: ignore[arg-type]
    async with sessionmaker() as db:
        return (await db.execute(stmt)).scalar_one()


async def test_sql_refresh_store_satisfies_the_protocol(
    refresh_store: SqlRefreshTokenStore,
) -> None:
    """SqlRefreshTokenStore is usable wherever a RefreshTokenStore is expected."""
    store: RefreshTokenStore = refresh_store
    assert store is refresh_store


async def test_start_family_then_find(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """The first token and its family come back exactly as given."""
    session, first = await login(refresh_store, user_id)
    assert await refresh_store.find(first.token_hash) == (first, session)
    assert await refresh_store.get_session(session.id) == session


async def test_find_unknown_token_is_none(refresh_store: SqlRefreshTokenStore) -> None:
    """A hash nobody stored gives None."""
    assert await refresh_store.find(new_hash()) is None


async def test_get_unknown_session_is_none(refresh_store: SqlRefreshTokenStore) -> None:
    """A family id nobody stored gives None."""
    assert await refresh_store.get_session(uuid.uuid4()) is None


async def test_first_token_of_another_family_is_refused(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """start_family refuses a first token that names a different family."""
    session = new_family(user_id)
    stray = replace(new_token(session), family_id=uuid.uuid4())
    with pytest.raises(ValueError, match="family"):
        await refresh_store.start_family(session, stray)
    assert await refresh_store.get_session(session.id) is None


async def test_spend_rotates(refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID) -> None:
    """spend marks the parent used, stores the successor and stamps the family."""
    session, first = await login(refresh_store, user_id)
    now = T0 + timedelta(hours=1)
    successor = new_token(session, parent=first.token_hash, at=now)

    assert await refresh_store.spend(
        first.token_hash, successor, now=now, user_agent="Safari", ip_address="2001:db8::1"
    )

    spent = await refresh_store.find(first.token_hash)
    assert spent is not None
    assert spent[0] == replace(first, used_at=now)
    found = await refresh_store.find(successor.token_hash)
    assert found is not None
    assert found[0] == successor
    assert found[1] == replace(
        session, last_used_at=now, user_agent="Safari", ip_address="2001:db8::1"
    )


async def test_spend_without_client_details_keeps_the_old_ones(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """No user agent or IP given: only last_used_at changes."""
    session, first = await login(refresh_store, user_id)
    now = T0 + timedelta(minutes=5)
    assert await refresh_store.spend(first.token_hash, new_token(session, at=now), now=now)
    assert await refresh_store.get_session(session.id) == replace(session, last_used_at=now)


async def test_successor_can_be_spent_in_turn(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """Rotation chains: each successor is spendable once."""
    session, current = await login(refresh_store, user_id)
    for step in range(1, 4):
        now = T0 + timedelta(hours=step)
        successor = new_token(session, parent=current.token_hash, at=now)
        assert await refresh_store.spend(current.token_hash, successor, now=now)
        current = successor
    found = await refresh_store.find(current.token_hash)
    assert found is not None
    assert found[0].used_at is None


async def test_spending_a_spent_token_fails_and_writes_nothing(
    refresh_store: SqlRefreshTokenStore,
    user_id: uuid.UUID,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The second spend of one token answers False and stores no successor."""
    session, first = await login(refresh_store, user_id)
    one_hour = T0 + timedelta(hours=1)
    assert await refresh_store.spend(first.token_hash, new_token(session), now=one_hour)
    late = new_token(session, parent=first.token_hash)
    assert not await refresh_store.spend(
        first.token_hash, late, now=T0 + timedelta(hours=2), user_agent="thief"
    )
    assert await refresh_store.find(late.token_hash) is None
    stored = await refresh_store.get_session(session.id)
    assert stored is not None
    assert (stored.last_used_at, stored.user_agent) == (one_hour, "Firefox")  # rolled back
    assert await token_count(sessionmaker) == 2


async def test_spend_in_a_revoked_family_fails(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """After revoke_family no token of the family can be spent."""
    session, first = await login(refresh_store, user_id)
    assert await refresh_store.revoke_family(session.id, now=T0 + timedelta(minutes=1))
    successor = new_token(session, parent=first.token_hash)
    assert not await refresh_store.spend(first.token_hash, successor, now=T0 + timedelta(minutes=2))
    assert await refresh_store.find(successor.token_hash) is None
    found = await refresh_store.find(first.token_hash)
    assert found is not None
    assert found[0].used_at is None


@pytest.mark.parametrize("after", [timedelta(0), timedelta(seconds=1)], ids=["at", "after"])
async def test_spend_at_or_after_the_family_expiry_fails(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID, after: timedelta
) -> None:
    """The family's absolute expiry ends it, even for a token not idle-expired."""
    session, first = await login(refresh_store, user_id, lifetime=timedelta(hours=1))
    now = session.expires_at + after
    assert not await refresh_store.spend(first.token_hash, new_token(session), now=now)


async def test_spend_after_the_idle_timeout_fails(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """A token left unused past idle_expires_at cannot be spent."""
    session, first = await login(refresh_store, user_id)
    assert not await refresh_store.spend(
        first.token_hash, new_token(session), now=first.idle_expires_at
    )


async def test_spend_of_an_unknown_token_fails(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """A hash nobody stored is False, not an error."""
    session, _ = await login(refresh_store, user_id)
    assert not await refresh_store.spend(new_hash(), new_token(session), now=T0)


async def test_successor_in_another_family_is_refused(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """A successor naming another family is a bug: ValueError, nothing written."""
    _, first = await login(refresh_store, user_id)
    other, _ = await login(refresh_store, user_id)
    stray = new_token(other, parent=first.token_hash)
    with pytest.raises(ValueError, match="family"):
        await refresh_store.spend(first.token_hash, stray, now=T0)
    found = await refresh_store.find(first.token_hash)
    assert found is not None
    assert found[0].used_at is None
    assert await refresh_store.find(stray.token_hash) is None


async def test_concurrent_spends_of_one_token_let_exactly_one_win(
    refresh_store: SqlRefreshTokenStore,
    user_id: uuid.UUID,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """20 racing spends, each on its own connection: one True, one successor."""
    session, first = await login(refresh_store, user_id)
    results: list[bool] = []

    async def spend(i: int) -> None:
        successor = new_token(session, parent=first.token_hash)
        now = T0 + timedelta(seconds=1)
        results.append(
            await refresh_store.spend(first.token_hash, successor, now=now, user_agent=f"ua{i}")
        )

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(spend, i)

    assert sorted(results) == [False] * 19 + [True]
    assert await token_count(sessionmaker, RefreshTokenRow.parent_hash == first.token_hash) == 1
    assert await token_count(sessionmaker) == 2


@pytest.mark.parametrize(
    ("user_agent", "ip_address"),
    [("Mozilla/5.0 " + "x" * 2000, "192.0.2.1"), ("curl", "2001:db8::" + "f" * 100)],
    ids=["user-agent", "ip"],
)
async def test_overlong_client_details_are_cut_to_fit(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID, user_agent: str, ip_address: str
) -> None:
    """A long User-Agent or address is truncated to its column, on login and on rotation."""
    session, first = await login(
        refresh_store, user_id, user_agent=user_agent, ip_address=ip_address
    )
    stored = await refresh_store.get_session(session.id)
    assert stored is not None
    assert stored.user_agent == user_agent[:512]
    assert stored.ip_address == ip_address[:64]

    now = T0 + timedelta(minutes=1)
    rotated = await refresh_store.spend(
        first.token_hash,
        new_token(session),
        now=now,
        user_agent=user_agent[::-1],
        ip_address=ip_address[::-1],
    )
    assert rotated
    stored = await refresh_store.get_session(session.id)
    assert stored is not None
    assert stored.user_agent == user_agent[::-1][:512]
    assert stored.ip_address == ip_address[::-1][:64]


async def test_revoke_family_is_idempotent(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """The first revocation wins and keeps its time; later ones answer False."""
    session, _ = await login(refresh_store, user_id)
    first_at = T0 + timedelta(minutes=1)
    assert await refresh_store.revoke_family(session.id, now=first_at)
    assert not await refresh_store.revoke_family(session.id, now=first_at + timedelta(minutes=1))
    stored = await refresh_store.get_session(session.id)
    assert stored == replace(session, revoked_at=first_at)
    assert not stored.is_live(first_at)


async def test_revoke_unknown_family_is_false(refresh_store: SqlRefreshTokenStore) -> None:
    """Revoking a family that does not exist answers False."""
    assert not await refresh_store.revoke_family(uuid.uuid4(), now=T0)


async def test_revoke_user_families_counts_only_that_users_live_families(
    refresh_store: SqlRefreshTokenStore, user_store: SqlUserStore, user_id: uuid.UUID
) -> None:
    """Live families of the user are revoked; revoked, expired and others' are untouched."""
    other = await new_user_id(user_store)
    now = T0 + timedelta(days=2)
    live = [(await login(refresh_store, user_id))[0] for _ in range(2)]
    revoked, _ = await login(refresh_store, user_id)
    await refresh_store.revoke_family(revoked.id, now=T0)
    expired, _ = await login(refresh_store, user_id, lifetime=timedelta(days=1))
    others, _ = await login(refresh_store, other)

    assert await refresh_store.revoke_user_families(user_id, now=now) == 2

    for session in live:
        assert await refresh_store.get_session(session.id) == replace(session, revoked_at=now)
    assert await refresh_store.get_session(revoked.id) == replace(revoked, revoked_at=T0)
    assert await refresh_store.get_session(expired.id) == expired
    assert await refresh_store.get_session(others.id) == others
    assert await refresh_store.revoke_user_families(user_id, now=now) == 0


async def test_list_sessions_shows_live_families_newest_first(
    refresh_store: SqlRefreshTokenStore, user_store: SqlUserStore, user_id: uuid.UUID
) -> None:
    """Only the user's live families, by created_at descending."""
    other = await new_user_id(user_store)
    now = T0 + timedelta(days=3)
    older, _ = await login(refresh_store, user_id, created_at=T0)
    newest, _ = await login(refresh_store, user_id, created_at=T0 + timedelta(days=2))
    middle, _ = await login(refresh_store, user_id, created_at=T0 + timedelta(days=1))
    revoked, _ = await login(refresh_store, user_id, created_at=T0 + timedelta(days=2, hours=1))
    await refresh_store.revoke_family(revoked.id, now=now)
    await login(refresh_store, user_id, lifetime=timedelta(days=3))  # expires exactly at now
    await login(refresh_store, other, created_at=T0 + timedelta(days=2, hours=2))

    assert await refresh_store.list_sessions(user_id, now=now) == [newest, middle, older]
    assert await refresh_store.list_sessions(uuid.uuid4(), now=now) == []


async def test_purge_removes_dead_families_and_their_tokens(
    refresh_store: SqlRefreshTokenStore,
    user_id: uuid.UUID,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Families expired or revoked before now go with all their tokens; live ones stay."""
    now = T0 + timedelta(days=10)
    live, live_first = await login(refresh_store, user_id)
    live_next = new_token(live, parent=live_first.token_hash, at=T0 + timedelta(days=1))
    assert await refresh_store.spend(live_first.token_hash, live_next, now=live_next.created_at)
    expired, expired_first = await login(refresh_store, user_id, lifetime=timedelta(days=9))
    revoked, revoked_first = await login(refresh_store, user_id)
    await refresh_store.revoke_family(revoked.id, now=T0 + timedelta(days=5))
    revoked_now, _ = await login(refresh_store, user_id)
    await refresh_store.revoke_family(revoked_now.id, now=now)  # not *before* now
    expiring_now, _ = await login(refresh_store, user_id, lifetime=timedelta(days=10))

    assert await refresh_store.purge(now=now) == 2

    assert await refresh_store.get_session(expired.id) is None
    assert await refresh_store.get_session(revoked.id) is None
    assert await refresh_store.find(expired_first.token_hash) is None
    assert await refresh_store.find(revoked_first.token_hash) is None
    for kept in (live, revoked_now, expiring_now):
        assert await refresh_store.get_session(kept.id) is not None
    assert await refresh_store.find(live_first.token_hash) is not None
    assert await refresh_store.find(live_next.token_hash) is not None
    assert await token_count(sessionmaker) == 4  # live's two, one each for the other two
    assert await refresh_store.purge(now=now) == 0


async def test_deleting_a_user_deletes_their_families_and_tokens(
    refresh_store: SqlRefreshTokenStore,
    user_store: SqlUserStore,
    user_id: uuid.UUID,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """refresh_families and refresh_tokens cascade from users."""
    other = await new_user_id(user_store)
    session, first = await login(refresh_store, user_id)
    kept, kept_first = await login(refresh_store, other)
    async with sessionmaker.begin() as db:
        await db.execute(delete(UserRow).where(UserRow.id == user_id))

    assert await refresh_store.get_session(session.id) is None
    assert await refresh_store.find(first.token_hash) is None
    assert await refresh_store.find(kept_first.token_hash) == (kept_first, kept)
    async with sessionmaker() as db:
        families = (await db.execute(select(func.count()).select_from(RefreshFamilyRow))).scalar()
    assert families == 1
    assert await token_count(sessionmaker) == 1


async def test_family_of_an_unknown_user_is_refused(refresh_store: SqlRefreshTokenStore) -> None:
    """The foreign key to users holds: no session for a user who does not exist."""
    session = new_family(uuid.uuid4())
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        await refresh_store.start_family(session, new_token(session))
    assert await refresh_store.get_session(session.id) is None


async def test_naive_datetime_is_refused(
    refresh_store: SqlRefreshTokenStore, user_id: uuid.UUID
) -> None:
    """A naive `now` is a programming error, caught before anything is written."""
    session, first = await login(refresh_store, user_id)
    with pytest.raises(ValueError, match="naive"):
        await refresh_store.spend(first.token_hash, new_token(session), now=datetime(2030, 1, 2))
    with pytest.raises(ValueError, match="naive"):
        await refresh_store.revoke_family(session.id, now=datetime(2030, 1, 2))


async def test_database_outage_raises(broken_database_url: str) -> None:
    """An unreachable database is ServiceUnavailable, never 'no such token'."""
    engine = create_engine(broken_database_url)
    store = SqlRefreshTokenStore(create_sessionmaker(engine))
    session = new_family(uuid.uuid4())
    try:
        with pytest.raises(ServiceUnavailable):
            await store.find(new_hash())
        with pytest.raises(ServiceUnavailable):
            await store.spend(new_hash(), new_token(session), now=T0)
        with pytest.raises(ServiceUnavailable):
            await store.list_sessions(session.user_id, now=T0)
    finally:
        await engine.dispose()
