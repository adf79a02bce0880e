"""The ApiKeyStore contract, on every SQL backend."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import NotFound, ServiceUnavailable
from bastion.stores.protocols import ApiKeyRecord, ApiKeyStore, NewUser
from bastion.stores.sql import SqlApiKeyStore, SqlUserStore, create_engine, create_sessionmaker
from bastion.stores.sql.tables import ApiKeyRow

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
CAP = 50


def new_key(
    user_id: uuid.UUID,
    *,
    created_at: datetime = T0,
    expires_at: datetime | None = None,
    revoked_at: datetime | None = None,
    name: str = "ci",
    permissions: frozenset[str] = frozenset({"profile", "invoices:*"}),
) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=secrets.token_hex(8),
        user_id=user_id,
        name=name,
        permissions=permissions,
        secret_hash=secrets.token_hex(32),
        created_at=created_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
    )


@pytest.fixture
def store(sessionmaker: async_sessionmaker[AsyncSession]) -> SqlApiKeyStore:
    return SqlApiKeyStore(sessionmaker)


async def new_user_id(user_store: SqlUserStore) -> uuid.UUID:
    email = f"{secrets.token_hex(4)}@example.com"
    return (await user_store.add(NewUser(email, None, "$argon2id$x"), now=T0)).id


@pytest.fixture
async def user_id(user_store: SqlUserStore) -> uuid.UUID:
    return await new_user_id(user_store)


async def count_rows(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)


async def test_sql_store_satisfies_the_protocol(store: SqlApiKeyStore) -> None:
    """SqlApiKeyStore is an ApiKeyStore (checked by mypy through this assignment)."""
    typed: ApiKeyStore = store
    assert typed is store


async def test_add_then_get_round_trips_every_field(
    store: SqlApiKeyStore, user_id: uuid.UUID
) -> None:
    """What goes in comes back: permissions as a set, times as aware UTC."""
    record = new_key(user_id, expires_at=T0 + timedelta(days=30))
    assert await store.add(record, max_live=CAP, now=T0)
    assert await store.get(record.key_id) == record
    found = await store.get(record.key_id)
    assert found is not None
    assert found.created_at.tzinfo is not None
    assert await store.get(secrets.token_hex(8)) is None


async def test_secret_hash_is_not_in_the_repr(user_id: uuid.UUID) -> None:
    """A record's repr (in a log or a traceback) leaves the hash out."""
    record = new_key(user_id)
    assert record.secret_hash not in repr(record)


async def test_add_for_an_unknown_user_is_not_found_and_writes_nothing(
    store: SqlApiKeyStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The owner must exist: NotFound, no row."""
    with pytest.raises(NotFound):
        await store.add(new_key(uuid.uuid4()), max_live=CAP, now=T0)
    assert await count_rows(sessionmaker) == 0


async def test_the_cap_counts_live_keys_only(store: SqlApiKeyStore, user_id: uuid.UUID) -> None:
    """Revoked and expired keys do not count; over the cap nothing is written."""
    assert await store.add(new_key(user_id, revoked_at=T0), max_live=1, now=T0)
    assert await store.add(
        new_key(user_id, expires_at=T0 - timedelta(seconds=1)), max_live=1, now=T0
    )
    assert await store.add(new_key(user_id), max_live=1, now=T0)
    refused = new_key(user_id)
    assert not await store.add(refused, max_live=1, now=T0)
    assert await store.get(refused.key_id) is None


async def test_the_cap_is_per_user(
    store: SqlApiKeyStore, user_store: SqlUserStore, user_id: uuid.UUID
) -> None:
    """Another user's keys do not use up this user's allowance."""
    other = await new_user_id(user_store)
    assert await store.add(new_key(other), max_live=1, now=T0)
    assert await store.add(new_key(user_id), max_live=1, now=T0)


async def test_concurrent_adds_never_exceed_the_cap(
    store: SqlApiKeyStore, user_id: uuid.UUID
) -> None:
    """Racing creations at the cap: exactly as many succeed as it allows."""
    results: list[bool] = []

    async def add_one() -> None:
        results.append(await store.add(new_key(user_id), max_live=2, now=T0))

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(add_one)
    assert sorted(results) == [False] * 4 + [True] * 2
    assert len(await store.list_for_user(user_id)) == 2


async def test_list_is_newest_first_without_revoked_or_others_keys(
    store: SqlApiKeyStore, user_store: SqlUserStore, user_id: uuid.UUID
) -> None:
    """The owner's unrevoked keys, expired ones included, newest first."""
    old = new_key(user_id, created_at=T0, expires_at=T0 + timedelta(hours=1))
    new = new_key(user_id, created_at=T0 + timedelta(days=2))
    revoked = new_key(user_id, created_at=T0 + timedelta(days=1), revoked_at=T0)
    foreign = new_key(await new_user_id(user_store))
    for record in (old, new, revoked, foreign):
        assert await store.add(record, max_live=CAP, now=T0)
    listed = await store.list_for_user(user_id)
    assert [r.key_id for r in listed] == [new.key_id, old.key_id]


async def test_revoke_marks_the_key_once(store: SqlApiKeyStore, user_id: uuid.UUID) -> None:
    """The first revocation answers the revoked record; a second finds nothing."""
    record = new_key(user_id)
    await store.add(record, max_live=CAP, now=T0)
    at = T0 + timedelta(minutes=5)
    revoked = await store.revoke(record.key_id, now=at)
    assert revoked is not None
    assert revoked.revoked_at == at
    assert await store.revoke(record.key_id, now=at) is None
    assert await store.revoke(secrets.token_hex(8), now=at) is None


async def test_revoke_for_another_owner_changes_nothing(
    store: SqlApiKeyStore, user_store: SqlUserStore, user_id: uuid.UUID
) -> None:
    """With ``user_id``, another user's key is not found and stays live."""
    record = new_key(user_id)
    await store.add(record, max_live=CAP, now=T0)
    other = await new_user_id(user_store)
    assert await store.revoke(record.key_id, now=T0, user_id=other) is None
    found = await store.get(record.key_id)
    assert found is not None
    assert found.revoked_at is None


async def test_revoke_all_revokes_only_that_users_unrevoked_keys(
    store: SqlApiKeyStore, user_store: SqlUserStore, user_id: uuid.UUID
) -> None:
    """Every live key of the user, their ids answered; others untouched."""
    mine = [new_key(user_id) for _ in range(3)]
    already = new_key(user_id, revoked_at=T0)
    foreign = new_key(await new_user_id(user_store))
    for record in (*mine, already, foreign):
        await store.add(record, max_live=CAP, now=T0)
    at = T0 + timedelta(hours=1)
    assert await store.revoke_all(user_id, now=at) == sorted(r.key_id for r in mine)
    assert await store.list_for_user(user_id) == []
    untouched = await store.get(already.key_id)
    assert untouched is not None
    assert untouched.revoked_at == T0
    assert await store.list_for_user(foreign.user_id) == [foreign]


async def test_replace_revokes_and_inserts_in_one_step(
    store: SqlApiKeyStore, user_id: uuid.UUID
) -> None:
    """Rotation: the old key revoked at ``now``, the successor stored."""
    old = new_key(user_id)
    await store.add(old, max_live=CAP, now=T0)
    successor = new_key(user_id, created_at=T0 + timedelta(minutes=1))
    assert await store.replace(old.key_id, successor, now=successor.created_at, user_id=user_id)
    retired = await store.get(old.key_id)
    assert retired is not None
    assert retired.revoked_at == successor.created_at
    assert await store.get(successor.key_id) == successor


@pytest.mark.parametrize("case", ["revoked", "expired", "other owner", "unknown"])
async def test_replace_of_a_dead_or_foreign_key_writes_nothing(
    store: SqlApiKeyStore,
    user_store: SqlUserStore,
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: uuid.UUID,
    case: str,
) -> None:
    """No live key of that owner: False, and no successor appears."""
    old = new_key(
        user_id,
        revoked_at=T0 if case == "revoked" else None,
        expires_at=T0 if case == "expired" else None,
    )
    await store.add(old, max_live=CAP, now=T0)
    owner = await new_user_id(user_store) if case == "other owner" else user_id
    key_id = secrets.token_hex(8) if case == "unknown" else old.key_id
    successor = new_key(user_id)
    assert not await store.replace(key_id, successor, now=T0, user_id=owner)
    assert await store.get(successor.key_id) is None
    assert await count_rows(sessionmaker) == 1


async def test_concurrent_rotations_leave_one_successor(
    store: SqlApiKeyStore, sessionmaker: async_sessionmaker[AsyncSession], user_id: uuid.UUID
) -> None:
    """Two rotations of one key at once: exactly one succeeds."""
    old = new_key(user_id)
    await store.add(old, max_live=CAP, now=T0)
    results: list[bool] = []

    async def rotate() -> None:
        results.append(await store.replace(old.key_id, new_key(user_id), now=T0))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(rotate)
    assert sorted(results) == [False, False, False, True]
    assert await count_rows(sessionmaker) == 2


async def test_touch_sets_last_used_and_never_goes_back(
    store: SqlApiKeyStore, user_id: uuid.UUID
) -> None:
    """``last_used_at`` moves forward only; an unknown key is no error."""
    record = new_key(user_id)
    await store.add(record, max_live=CAP, now=T0)
    later = T0 + timedelta(minutes=10)
    await store.touch(record.key_id, at=later)
    await store.touch(record.key_id, at=T0)
    found = await store.get(record.key_id)
    assert found is not None
    assert found.last_used_at == later
    await store.touch(secrets.token_hex(8), at=later)


async def test_purge_deletes_long_dead_keys_only(store: SqlApiKeyStore, user_id: uuid.UUID) -> None:
    """Keys expired or revoked before the cut-off go; live and recent ones stay."""
    cut = T0 + timedelta(days=30)
    expired_long_ago = new_key(user_id, expires_at=cut - timedelta(seconds=1))
    revoked_long_ago = new_key(user_id, revoked_at=cut - timedelta(days=1))
    revoked_lately = new_key(user_id, revoked_at=cut + timedelta(seconds=1))
    live = new_key(user_id, expires_at=cut + timedelta(days=1))
    forever = new_key(user_id)
    for record in (expired_long_ago, revoked_long_ago, revoked_lately, live, forever):
        await store.add(record, max_live=CAP, now=T0)
    assert await store.purge(before=cut) == 2
    remaining = {r.key_id for r in await store.list_for_user(user_id)}
    assert remaining == {live.key_id, forever.key_id}
    assert await store.get(revoked_lately.key_id) is not None


async def test_deleting_the_owner_deletes_their_keys(
    store: SqlApiKeyStore, user_store: SqlUserStore, user_id: uuid.UUID
) -> None:
    """The foreign key cascades: no key outlives its user."""
    record = new_key(user_id)
    await store.add(record, max_live=CAP, now=T0)
    await user_store.delete_user(user_id)
    assert await store.get(record.key_id) is None


async def test_database_outage_raises(broken_database_url: str) -> None:
    """An unreachable database is ServiceUnavailable, never 'no such key'."""
    engine = create_engine(broken_database_url)
    store = SqlApiKeyStore(create_sessionmaker(engine))
    record = new_key(uuid.uuid4())
    try:
        with pytest.raises(ServiceUnavailable):
            await store.get(record.key_id)
        with pytest.raises(ServiceUnavailable):
            await store.add(record, max_live=CAP, now=T0)
        with pytest.raises(ServiceUnavailable):
            await store.touch(record.key_id, at=T0)
        with pytest.raises(ServiceUnavailable):
            await store.revoke(record.key_id, now=T0)
    finally:
        await engine.dispose()
