"""The ClientStore contract, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import Conflict, NotFound
from bastion.stores.protocols import OAuthClient
from bastion.stores.sql import SqlClientStore

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
HASH = "a" * 64


@pytest.fixture
def client_store(sessionmaker: async_sessionmaker[AsyncSession]) -> SqlClientStore:
    return SqlClientStore(sessionmaker)


def make(client_id: str = "svc", **changes: object) -> OAuthClient:
    values: dict[str, object] = {
        "client_id": client_id,
        "name": "Reporting service",
        "secret_hash": HASH,
        "grant_types": frozenset({"client_credentials"}),
        "scopes": frozenset({"content:read", "reports:*"}),
        "redirect_uris": ("https://app.example/cb", "http://127.0.0.1:8080/cb"),
        "created_at": NOW,
        "updated_at": NOW,
        "secret_rotated_at": None,
    }
    values.update(changes)
    return OAuthClient(**values)  # type: ignore[arg-type]


async def test_the_builtin_client_is_seeded(client_store: SqlClientStore) -> None:
    """Migration 0004 seeds ``bastion``: public, password and refresh-token grants."""
    client = await client_store.get("bastion")
    assert client is not None
    assert client.secret_hash is None
    assert not client.is_confidential
    assert client.grant_types == {"password", "refresh_token"}
    assert client.scopes == frozenset()
    assert client.redirect_uris == ()


async def test_add_then_get_round_trips_every_field(client_store: SqlClientStore) -> None:
    """Lists, sets and aware UTC timestamps come back as they went in."""
    added = await client_store.add(make())
    got = await client_store.get("svc")
    assert got == added == make()
    assert got is not None
    assert got.created_at.tzinfo is not None
    assert got.is_confidential


async def test_ids_are_case_sensitive(client_store: SqlClientStore) -> None:
    """``SVC`` is not ``svc`` (RFC 6749 client ids are compared as strings)."""
    await client_store.add(make())
    assert await client_store.get("SVC") is None
    assert await client_store.get("svc ") is None


async def test_a_taken_id_is_a_conflict_and_writes_nothing(client_store: SqlClientStore) -> None:
    """Adding an existing id raises Conflict and leaves the first client as it was."""
    await client_store.add(make())
    with pytest.raises(Conflict):
        await client_store.add(make(name="Impostor", secret_hash="b" * 64))
    got = await client_store.get("svc")
    assert got is not None
    assert got.name == "Reporting service"
    assert got.secret_hash == HASH


async def test_concurrent_adds_of_one_id_let_exactly_one_win(client_store: SqlClientStore) -> None:
    """Two creations racing for one id: one succeeds, the other is a Conflict."""
    results = await asyncio.gather(
        *(client_store.add(make(name=f"n{i}")) for i in range(2)), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "OAuthClient"]


async def test_list_is_by_id_and_includes_the_builtin(client_store: SqlClientStore) -> None:
    """Every client, ordered by id."""
    await client_store.add(make("zeta"))
    await client_store.add(make("alpha", secret_hash=None, grant_types=frozenset({"password"})))
    ids = [c.client_id for c in await client_store.list_clients()]
    assert ids == ["alpha", "bastion", "zeta"]


async def test_set_secret_hash_stamps_rotation(client_store: SqlClientStore) -> None:
    """A new hash, ``secret_rotated_at`` and ``updated_at`` at ``now``; the rest untouched."""
    await client_store.add(make())
    later = NOW + timedelta(hours=1)
    rotated = await client_store.set_secret_hash("svc", "c" * 64, now=later)
    assert rotated.secret_hash == "c" * 64
    assert rotated.secret_rotated_at == later
    assert rotated.updated_at == later
    assert rotated.created_at == NOW
    assert await client_store.get("svc") == rotated


@pytest.mark.parametrize("operation", ["set_secret_hash", "delete"])
async def test_unknown_ids_are_not_found(client_store: SqlClientStore, operation: str) -> None:
    """Rotating or deleting a client that does not exist raises NotFound."""
    call = (
        client_store.delete("ghost")
        if operation == "delete"
        else client_store.set_secret_hash("ghost", HASH, now=NOW)
    )
    with pytest.raises(NotFound):
        await call


async def test_delete_removes_only_that_client(client_store: SqlClientStore) -> None:
    """After delete the id is gone and free again; other clients stay."""
    await client_store.add(make())
    await client_store.add(make("other"))
    await client_store.delete("svc")
    assert await client_store.get("svc") is None
    assert await client_store.get("other") is not None
    await client_store.add(make())
    assert await client_store.get("svc") is not None
