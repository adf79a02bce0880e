"""The KeyStore contract, on every SQL backend."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import Conflict, ServiceUnavailable
from bastion.stores.protocols import KeyStore, SigningKeyRecord
from bastion.stores.sql import SqlKeyStore, create_engine, create_sessionmaker
from bastion.stores.sql.tables import SigningKeyRow

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def make_key(kid: str, created_at: datetime = T0, **jwk: Any) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=kid,
        algorithm="EdDSA",
        public_jwk={"kty": "OKP", "crv": "Ed25519", "x": f"x-{kid}", "kid": kid, **jwk},
        encrypted_private_key=os.urandom(64),
        created_at=created_at,
    )


def active(keys: list[SigningKeyRecord]) -> list[SigningKeyRecord]:
    return [k for k in keys if k.is_active]


async def test_sql_key_store_satisfies_the_protocol(key_store: SqlKeyStore) -> None:
    """SqlKeyStore is usable wherever a KeyStore is expected."""
    store: KeyStore = key_store
    assert store is key_store


async def test_empty_store_lists_nothing(key_store: SqlKeyStore) -> None:
    """A new database has no keys."""
    assert await key_store.list_keys() == []


async def test_activate_first_key(key_store: SqlKeyStore) -> None:
    """The first key is stored active, exactly as given."""
    key = make_key("k1")
    await key_store.activate(key, now=T0)
    assert await key_store.list_keys() == [key]


async def test_rotation_retires_the_old_key_at_now(key_store: SqlKeyStore) -> None:
    """Activating a second key retires the first at `now`; exactly one stays active."""
    old, new = make_key("k1", T0), make_key("k2", T0 + timedelta(days=30))
    await key_store.activate(old, now=T0)
    rotated_at = T0 + timedelta(days=30, seconds=1)
    await key_store.activate(new, now=rotated_at)

    keys = await key_store.list_keys()
    assert [k.kid for k in keys] == ["k2", "k1"]
    assert active(keys) == [new]
    assert keys[1].retired_at == rotated_at
    assert keys[1].retired_at is not None
    assert keys[1].retired_at.tzinfo is UTC


async def test_list_keys_newest_first(key_store: SqlKeyStore) -> None:
    """Keys come back by created_at, newest first, whatever the kid order."""
    for i, kid in enumerate(["b", "c", "a", "d"]):
        await key_store.activate(make_key(kid, T0 + timedelta(days=i)), now=T0 + timedelta(days=i))
    assert [k.kid for k in await key_store.list_keys()] == ["d", "a", "c", "b"]


async def test_concurrent_activations_leave_exactly_one_active_key(
    key_store: SqlKeyStore,
) -> None:
    """Ten rotations racing each other all land, and only one key stays active."""
    await key_store.activate(make_key("seed"), now=T0)

    async def rotate(i: int) -> None:
        await key_store.activate(make_key(f"k{i:02}", T0 + timedelta(seconds=i)), now=T0)

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(rotate, i)

    keys = await key_store.list_keys()
    assert len(keys) == 11
    assert len(active(keys)) == 1


async def test_database_refuses_a_second_active_key(
    key_store: SqlKeyStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The one-active-key rule holds even for writes that bypass the store."""
    await key_store.activate(make_key("k1"), now=T0)
    with pytest.raises(IntegrityError):
        async with sessionmaker.begin() as session:
            await session.execute(
                insert(SigningKeyRow).values(
                    kid="rogue",
                    algorithm="EdDSA",
                    public_jwk={},
                    encrypted_private_key=b"x",
                    created_at=T0,
                    retired_at=None,
                )
            )
    assert [k.kid for k in await key_store.list_keys()] == ["k1"]


async def test_activating_an_existing_kid_is_a_conflict(key_store: SqlKeyStore) -> None:
    """A kid is unique; the failed activation leaves the active key alone."""
    await key_store.activate(make_key("k1"), now=T0)
    with pytest.raises(Conflict):
        await key_store.activate(make_key("k1"), now=T0 + timedelta(days=1))
    keys = await key_store.list_keys()
    assert [(k.kid, k.is_active) for k in keys] == [("k1", True)]


async def test_activating_a_retired_record_is_refused(key_store: SqlKeyStore) -> None:
    """A record that says it is retired cannot become the active key."""
    key = SigningKeyRecord("k1", "EdDSA", {}, b"x", T0, retired_at=T0)
    with pytest.raises(ValueError, match="retired_at"):
        await key_store.activate(key, now=T0)


async def test_delete_retired_before(key_store: SqlKeyStore) -> None:
    """Only keys retired strictly before the moment go; the active key stays."""
    for day in range(4):  # k0..k2 retired at days 1..3, k3 active
        await key_store.activate(
            make_key(f"k{day}", T0 + timedelta(days=day)), now=T0 + timedelta(days=day)
        )
    assert await key_store.delete_retired_before(T0 + timedelta(days=2)) == 1  # k0
    assert [k.kid for k in await key_store.list_keys()] == ["k3", "k2", "k1"]
    assert await key_store.delete_retired_before(T0 + timedelta(days=365)) == 2
    assert [k.kid for k in await key_store.list_keys()] == ["k3"]
    assert await key_store.delete_retired_before(T0 + timedelta(days=365)) == 0


async def test_public_jwk_round_trips_as_json(key_store: SqlKeyStore) -> None:
    """Nested JSON, unicode and numbers in the JWK come back equal."""
    key = make_key("k1", key_ops=["verify"], ext=True, n=12345, note="clé ✓", nested={"a": [1]})
    await key_store.activate(key, now=T0)
    [stored] = await key_store.list_keys()
    assert stored.public_jwk == key.public_jwk


@pytest.mark.parametrize("ciphertext", [b"", b"\x00", bytes(range(256)), os.urandom(4096)], ids=len)
async def test_private_key_ciphertext_round_trips_byte_for_byte(
    key_store: SqlKeyStore, ciphertext: bytes
) -> None:
    """Any bytes, NULs and high bytes included, are stored unchanged."""
    key = SigningKeyRecord("k1", "ES256", {"kty": "EC"}, ciphertext, T0)
    await key_store.activate(key, now=T0)
    [stored] = await key_store.list_keys()
    assert stored.encrypted_private_key == ciphertext
    assert isinstance(stored.encrypted_private_key, bytes)
    assert stored.algorithm == "ES256"


async def test_database_outage_raises(broken_database_url: str) -> None:
    """An unreachable database is ServiceUnavailable, never an empty key list."""
    engine = create_engine(broken_database_url)
    try:
        with pytest.raises(ServiceUnavailable):
            await SqlKeyStore(create_sessionmaker(engine)).list_keys()
    finally:
        await engine.dispose()
