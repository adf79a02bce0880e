"""The UserAdminStore contract (listing, deleting, updating users), on every
SQL backend."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.errors import Conflict, InvalidInput, NotFound
from bastion.stores.protocols import (
    NewUser,
    RefreshSession,
    RefreshTokenRecord,
    User,
    UserAdminStore,
)
from bastion.stores.sql import SqlRefreshTokenStore, SqlRoleStore, SqlUserStore
from bastion.stores.sql.tables import RefreshFamilyRow, RefreshTokenRow, UserRoleRow

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HASH = "$argon2id$x"


async def add(
    user_store: SqlUserStore,
    email: str,
    *,
    at: datetime = T0,
    username: str | None = None,
    active: bool = True,
) -> User:
    return await user_store.add(NewUser(email, username, HASH, is_active=active), now=at)


async def emails(user_store: SqlUserStore, **filters: object) -> list[str]:
    page = await user_store.list_users(offset=0, limit=100, **filters)  # type: ignore[arg-type]
    assert page.total == len(page.users)
    return [user.email for user in page.users]


async def test_sql_user_store_satisfies_the_admin_protocol(user_store: SqlUserStore) -> None:
    """SqlUserStore is usable wherever a UserAdminStore is expected."""
    store: UserAdminStore = user_store
    assert store is user_store


# ------------------------------------------------------------------ listing


async def test_pages_walk_every_user_once_in_creation_order(user_store: SqlUserStore) -> None:
    """offset/limit pages follow created_at then id, and each carries the full total."""
    same_instant = [await add(user_store, f"same{i}@example.com", at=T0) for i in range(4)]
    later = [
        await add(user_store, f"later{i}@example.com", at=T0 + timedelta(minutes=i + 1))
        for i in range(3)
    ]
    earliest = await add(user_store, "first@example.com", at=T0 - timedelta(days=1))
    expected = [earliest, *sorted(same_instant, key=lambda u: u.id), *later]

    seen: list[User] = []
    for offset in range(0, 10, 3):
        page = await user_store.list_users(offset=offset, limit=3)
        assert page.total == 8
        seen.extend(page.users)
    assert seen == expected
    assert await user_store.list_users(offset=0, limit=3) == await user_store.list_users(
        offset=0, limit=3
    )


async def test_page_past_the_end_is_empty_with_the_total(user_store: SqlUserStore) -> None:
    """An offset beyond the last user gives no users but still the total."""
    await add(user_store, "a@example.com")
    page = await user_store.list_users(offset=5, limit=10)
    assert page.users == []
    assert page.total == 1


async def test_no_users_gives_an_empty_page(user_store: SqlUserStore) -> None:
    """An empty table is an empty page with total 0."""
    page = await user_store.list_users(offset=0, limit=10)
    assert (page.users, page.total) == ([], 0)


@pytest.mark.parametrize(("offset", "limit"), [(-1, 10), (0, -1)])
async def test_negative_offset_or_limit_is_invalid(
    user_store: SqlUserStore, offset: int, limit: int
) -> None:
    """Negative paging values are InvalidInput, not a database error."""
    with pytest.raises(InvalidInput):
        await user_store.list_users(offset=offset, limit=limit)


EMAIL_NEEDLES = [
    ("EXAMPLE.ORG", ["Bob@Example.org", "100%_sure@example.org", "back\\slash@example.org"]),
    ("bob", ["Bob@Example.org"]),
    ("%", ["100%_sure@example.org"]),
    ("_", ["100%_sure@example.org"]),
    ("%_", ["100%_sure@example.org"]),
    ("0%", ["100%_sure@example.org"]),
    ("1_0", []),  # _ is not "any character"
    ("b%g", []),  # % is not "anything"
    ("\\", ["back\\slash@example.org"]),
    ("K\\S", ["back\\slash@example.org"]),
    ("\\%", []),
    ("STRASSE", ["straße@example.de"]),  # folded like emails are
    ("nobody", []),
]


async def test_email_contains_is_literal_and_case_insensitive(user_store: SqlUserStore) -> None:
    """%, _ and \\ match only themselves; case does not matter (one table of needles)."""
    for i, email in enumerate(
        [
            "Bob@Example.org",
            "100%_sure@example.org",
            "back\\slash@example.org",
            "big@example.com",
            "straße@example.de",
        ]
    ):
        await add(user_store, email, at=T0 + timedelta(seconds=i))
    for needle, expected in EMAIL_NEEDLES:
        assert (needle, await emails(user_store, email_contains=needle)) == (needle, expected)


async def test_role_filter_keeps_users_with_that_direct_role(
    user_store: SqlUserStore, role_store: SqlRoleStore
) -> None:
    """role= keeps users the role is assigned to directly (no closure)."""
    editor = await add(user_store, "editor@example.com", at=T0)
    admin = await add(user_store, "admin@example.com", at=T0 + timedelta(seconds=1))
    await add(user_store, "plain@example.com", at=T0 + timedelta(seconds=2))
    await role_store.set_user_roles(editor.id, frozenset({"editor", "user"}))
    await role_store.set_user_roles(admin.id, frozenset({"admin", "user"}))

    assert await emails(user_store, role="user") == ["editor@example.com", "admin@example.com"]
    assert await emails(user_store, role="editor") == ["editor@example.com"]
    assert await emails(user_store, role="ghost") == []


async def test_is_active_filter(user_store: SqlUserStore) -> None:
    """is_active=True/False keeps only enabled/disabled accounts; None keeps all."""
    await add(user_store, "on@example.com", at=T0)
    await add(user_store, "off@example.com", at=T0 + timedelta(seconds=1), active=False)
    assert await emails(user_store, is_active=True) == ["on@example.com"]
    assert await emails(user_store, is_active=False) == ["off@example.com"]
    assert await emails(user_store) == ["on@example.com", "off@example.com"]


async def test_filters_combine_and_the_total_counts_all_matches(
    user_store: SqlUserStore, role_store: SqlRoleStore
) -> None:
    """All filters apply together, and total counts matches beyond the page."""
    for i in range(5):
        user = await add(
            user_store, f"staff{i}@corp.example", at=T0 + timedelta(seconds=i), active=i != 3
        )
        await role_store.set_user_roles(user.id, frozenset({"editor"}))
    await add(user_store, "staff9@corp.example", at=T0 + timedelta(seconds=9))  # no role

    page = await user_store.list_users(
        offset=1, limit=2, email_contains="STAFF", role="editor", is_active=True
    )
    assert [u.email for u in page.users] == ["staff1@corp.example", "staff2@corp.example"]
    assert page.total == 4


# ------------------------------------------------------------------ deleting


async def test_delete_user_cascades_to_roles_and_sessions(
    user_store: SqlUserStore,
    role_store: SqlRoleStore,
    refresh_store: SqlRefreshTokenStore,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The user goes with their role assignments, refresh families and tokens;
    another user's stay."""
    doomed = await add(user_store, "doomed@example.com")
    kept = await add(user_store, "kept@example.com")
    for user in (doomed, kept):
        await role_store.set_user_roles(user.id, frozenset({"user", "editor"}))
        family = RefreshSession(
            id=uuid.uuid4(),
            user_id=user.id,
            client_id="web",
            scope="openid",
            created_at=T0,
            expires_at=T0 + timedelta(days=30),
            last_used_at=T0,
        )
        token = RefreshTokenRecord(
            token_hash=secrets.token_hex(32),
            family_id=family.id,
            parent_hash=None,
            scope="openid",
            created_at=T0,
            idle_expires_at=T0 + timedelta(days=7),
        )
        await refresh_store.start_family(family, token)

    await user_store.delete_user(doomed.id)

    assert await user_store.get(doomed.id) is None
    assert await role_store.user_roles(doomed.id) == frozenset()
    assert await refresh_store.list_sessions(doomed.id, now=T0) == []
    assert await role_store.user_roles(kept.id) == {"user", "editor"}
    assert len(await refresh_store.list_sessions(kept.id, now=T0)) == 1
    async with sessionmaker() as db:
        rows = {
            model.__tablename__: (
                await db.execute(select(func.count()).select_from(model))
            ).scalar_one()
            for model in (UserRoleRow, RefreshFamilyRow, RefreshTokenRow)
        }
    assert rows == {"user_roles": 2, "refresh_families": 1, "refresh_tokens": 1}


async def test_delete_unknown_user_is_not_found(user_store: SqlUserStore) -> None:
    """Deleting a user who does not exist is NotFound."""
    await add(user_store, "a@example.com")
    with pytest.raises(NotFound):
        await user_store.delete_user(uuid.uuid4())
    assert await user_store.count() == 1


# ------------------------------------------------------------------ updating


async def test_update_user_changes_only_the_given_fields(user_store: SqlUserStore) -> None:
    """Each field given is stored, the others stay, updated_at moves."""
    user = await add(user_store, "a@example.com", username="alice")
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)

    disabled = await user_store.update_user(user.id, now=t1, is_active=False)
    assert disabled == replace(user, is_active=False, updated_at=t1)
    verified = await user_store.update_user(user.id, now=t2, email_verified=True, username="Ally")
    assert verified == replace(
        user, is_active=False, email_verified=True, username="Ally", updated_at=t2
    )
    assert await user_store.get(user.id) == verified


async def test_update_user_with_no_fields_writes_nothing(user_store: SqlUserStore) -> None:
    """No field given: the stored user comes back unchanged, updated_at included."""
    user = await add(user_store, "a@example.com")
    assert await user_store.update_user(user.id, now=T0 + timedelta(hours=1)) == user
    assert await user_store.get(user.id) == user


@pytest.mark.parametrize("taken", ["bob", "BOB", "Bob"])
async def test_update_to_a_taken_username_is_a_conflict(
    user_store: SqlUserStore, taken: str
) -> None:
    """A username another user has (case-insensitively) is Conflict; nothing changes."""
    await add(user_store, "bob@example.com", username="bob")
    alice = await add(user_store, "alice@example.com", username="alice")
    with pytest.raises(Conflict, match="username"):
        await user_store.update_user(
            alice.id, now=T0 + timedelta(hours=1), username=taken, is_active=False
        )
    assert await user_store.get(alice.id) == alice


async def test_update_to_ones_own_username_in_another_case(user_store: SqlUserStore) -> None:
    """Changing only the case of one's own username is not a conflict."""
    alice = await add(user_store, "alice@example.com", username="alice")
    updated = await user_store.update_user(alice.id, now=T0, username="Alice")
    assert updated.username == "Alice"


async def test_update_to_an_overlong_username_is_invalid(user_store: SqlUserStore) -> None:
    """Usernames longer than the column are InvalidInput on every backend."""
    alice = await add(user_store, "alice@example.com")
    with pytest.raises(InvalidInput):
        await user_store.update_user(alice.id, now=T0, username="u" * 65)
    assert await user_store.get(alice.id) == alice


async def test_update_unknown_user_is_not_found(user_store: SqlUserStore) -> None:
    """Updating a user who does not exist is NotFound, with or without fields."""
    with pytest.raises(NotFound):
        await user_store.update_user(uuid.uuid4(), now=T0, is_active=False)
    with pytest.raises(NotFound):
        await user_store.update_user(uuid.uuid4(), now=T0)


async def test_update_user_refuses_a_naive_now(user_store: SqlUserStore) -> None:
    """A naive `now` is a programming error, caught before anything is written."""
    user = await add(user_store, "a@example.com")
    with pytest.raises(ValueError, match="naive"):
        await user_store.update_user(user.id, now=datetime(2030, 1, 2), is_active=False)
    assert await user_store.get(user.id) == user
