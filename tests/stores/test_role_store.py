"""The RoleStore contract, on every SQL backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bastion.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from bastion.stores.protocols import NewUser, Role, RoleStore
from bastion.stores.sql import (
    SqlRoleStore,
    SqlUserStore,
    create_engine,
    create_sessionmaker,
)
from bastion.stores.sql.roles import check_permission, check_role_name
from bastion.stores.sql.tables import RoleParentRow, RolePermissionRow, RoleRow, UserRoleRow

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
SEEDED_AT = datetime(2025, 3, 1, tzinfo=UTC)

SEEDED = [
    Role(
        name="admin",
        description="Administers users, roles, sessions and the audit log",
        parents=frozenset({"editor"}),
        permissions=frozenset(
            {"users:admin", "roles:admin", "audit:read", "tokens:introspect", "sessions:admin"}
        ),
        created_at=SEEDED_AT,
        updated_at=SEEDED_AT,
    ),
    Role(
        name="editor",
        description="Reads and writes content",
        parents=frozenset({"user"}),
        permissions=frozenset({"content:read", "content:write"}),
        created_at=SEEDED_AT,
        updated_at=SEEDED_AT,
    ),
    Role(
        name="user",
        description="Every account",
        parents=frozenset(),
        permissions=frozenset({"profile", "email"}),
        created_at=SEEDED_AT,
        updated_at=SEEDED_AT,
    ),
]


def new_role(
    name: str = "support",
    *,
    parents: set[str] | None = None,
    permissions: set[str] | None = None,
    description: str = "Helps users",
    at: datetime = T0,
) -> Role:
    return Role(
        name=name,
        description=description,
        parents=frozenset({"user"} if parents is None else parents),
        permissions=frozenset({"users:read", "tickets:*"} if permissions is None else permissions),
        created_at=at,
        updated_at=at,
    )


async def new_user_id(user_store: SqlUserStore) -> uuid.UUID:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    return (await user_store.add(NewUser(email, None, "$argon2id$x"), now=T0)).id


async def count(sessionmaker: async_sessionmaker[AsyncSession], model: Any) -> int:
    async with sessionmaker() as db:
        return (await db.execute(select(func.count()).select_from(model))).scalar_one()


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])  # (conn, cursor, statement, parameters, context, executemany)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


# ------------------------------------------------------------------ reading


async def test_sql_role_store_satisfies_the_protocol(role_store: SqlRoleStore) -> None:
    """SqlRoleStore is usable wherever a RoleStore is expected."""
    store: RoleStore = role_store
    assert store is role_store


async def test_seeded_roles_are_present_with_parents_and_permissions(
    role_store: SqlRoleStore,
) -> None:
    """A migrated database holds exactly user < editor < admin, by name."""
    assert await role_store.list_roles() == SEEDED
    for role in SEEDED:
        assert await role_store.get_role(role.name) == role


async def test_get_unknown_role_is_none(role_store: SqlRoleStore) -> None:
    """Any name that is not a role, well formed or not, gives None."""
    for name in ["nobody", "", "Admin", "x" * 300]:
        assert await role_store.get_role(name) is None


async def test_list_roles_takes_at_most_three_queries(
    role_store: SqlRoleStore, engine: AsyncEngine
) -> None:
    """Roles, parents, permissions: the query count does not grow with the roles."""
    for i in range(20):
        await role_store.create_role(new_role(f"role-{i:02}", parents={"user", "editor"}))
    with statements(engine) as seen:
        roles = await role_store.list_roles()
    assert len(roles) == 23
    assert len(seen) <= 3, seen
    assert [role.name for role in roles] == sorted(role.name for role in roles)


# ------------------------------------------------------------------ creating


async def test_create_then_get_and_list(role_store: SqlRoleStore) -> None:
    """A created role comes back as given, from get and from list, in name order."""
    role = new_role("support", parents={"user", "editor"})
    assert await role_store.create_role(role) == role
    assert await role_store.get_role("support") == role
    names = [r.name for r in await role_store.list_roles()]
    assert names == ["admin", "editor", "support", "user"]


async def test_create_role_without_parents_or_permissions(role_store: SqlRoleStore) -> None:
    """Empty parents and permissions are fine."""
    role = new_role("empty", parents=set(), permissions=set(), description="")
    await role_store.create_role(role)
    assert await role_store.get_role("empty") == role


async def test_duplicate_name_is_a_conflict(role_store: SqlRoleStore) -> None:
    """Creating a role whose name exists raises Conflict and changes nothing."""
    with pytest.raises(Conflict):
        await role_store.create_role(new_role("admin", permissions={"x"}))
    assert await role_store.list_roles() == SEEDED


async def test_unknown_parent_is_invalid_and_nothing_is_written(
    role_store: SqlRoleStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A parent that does not exist: InvalidInput naming it, and no role, link or grant."""
    with pytest.raises(InvalidInput, match="ghost"):
        await role_store.create_role(new_role("support", parents={"user", "ghost"}))
    assert await role_store.get_role("support") is None
    assert await role_store.list_roles() == SEEDED
    assert await count(sessionmaker, RoleParentRow) == 2
    assert await count(sessionmaker, RolePermissionRow) == 9


MALFORMED_NAMES = [
    "",
    "Admin",
    "1admin",
    "-admin",
    "_admin",
    "ad min",
    "admin!",
    "admin:read",
    "adm\u00efn",
    "admin\n",
    "a" * 65,
]
WELL_FORMED_NAMES = ["a", "a" * 64, "support-2", "read_only", "z9"]
MALFORMED_PERMISSIONS = [
    "",
    "content read",
    "content:read\n",
    'say:"hi"',
    "back\\slash",
    "caf\u00e9:read",
    "tab\tbed",
    "x" * 129,
]
WELL_FORMED_PERMISSIONS = ["content:*", "*", "a", "x" * 128, "a:b:c", "!#$%&'()"]


@pytest.mark.parametrize("name", MALFORMED_NAMES)
def test_malformed_role_names_are_invalid(name: str) -> None:
    """Names outside [a-z][a-z0-9_-]{0,63} are InvalidInput."""
    with pytest.raises(InvalidInput):
        check_role_name(name)


@pytest.mark.parametrize("name", WELL_FORMED_NAMES)
def test_well_formed_role_names_pass(name: str) -> None:
    """The edges of the name grammar are allowed."""
    check_role_name(name)


@pytest.mark.parametrize("permission", MALFORMED_PERMISSIONS)
def test_malformed_permissions_are_invalid(permission: str) -> None:
    """A permission must be one RFC 6749 §3.3 scope-token of at most 128 characters."""
    with pytest.raises(InvalidInput):
        check_permission(permission)


@pytest.mark.parametrize("permission", WELL_FORMED_PERMISSIONS)
def test_well_formed_permissions_pass(permission: str) -> None:
    """Wildcards and the edges of the scope-token grammar are allowed."""
    check_permission(permission)


async def test_store_refuses_malformed_names_and_permissions_writing_nothing(
    role_store: SqlRoleStore,
) -> None:
    """create_role and replace_role check every name, parent and permission
    (the tables above) before anything is written."""
    for name in MALFORMED_NAMES:
        with pytest.raises(InvalidInput):
            await role_store.create_role(new_role(name))
        with pytest.raises(InvalidInput):
            await role_store.create_role(new_role("ok", parents={name}))
        with pytest.raises(InvalidInput):
            await role_store.replace_role(replace(SEEDED[0], parents=frozenset({name})))
    for permission in MALFORMED_PERMISSIONS:
        with pytest.raises(InvalidInput):
            await role_store.create_role(new_role(permissions={"ok:read", permission}))
        with pytest.raises(InvalidInput):
            await role_store.replace_role(replace(SEEDED[0], permissions=frozenset({permission})))
    assert await role_store.list_roles() == SEEDED


async def test_store_accepts_well_formed_names_and_permissions(role_store: SqlRoleStore) -> None:
    """Names and permissions at the edges of the grammars are stored as given."""
    for name in WELL_FORMED_NAMES:
        role = new_role(name, permissions=set(WELL_FORMED_PERMISSIONS))
        await role_store.create_role(role)
        assert await role_store.get_role(name) == role


async def test_a_role_cannot_include_itself(role_store: SqlRoleStore) -> None:
    """A role listed among its own parents is InvalidInput (the database refuses it too)."""
    with pytest.raises(InvalidInput):
        await role_store.create_role(new_role("support", parents={"support"}))
    with pytest.raises(InvalidInput):
        await role_store.replace_role(new_role("editor", parents={"editor"}))


async def test_overlong_description_is_invalid(role_store: SqlRoleStore) -> None:
    """Descriptions longer than 500 characters are refused on every backend."""
    with pytest.raises(InvalidInput):
        await role_store.create_role(new_role(description="d" * 501))
    await role_store.create_role(new_role(description="d" * 500))


async def test_naive_timestamps_are_refused(role_store: SqlRoleStore) -> None:
    """A naive datetime is a programming error, caught before anything is written."""
    with pytest.raises(ValueError, match="naive"):
        await role_store.create_role(new_role(at=datetime(2030, 1, 1)))
    assert await role_store.get_role("support") is None


# ------------------------------------------------------------------ replacing


async def test_replace_role_swaps_description_parents_and_permissions(
    role_store: SqlRoleStore,
) -> None:
    """Everything but the name and created_at is overwritten; the result is what is stored."""
    await role_store.create_role(new_role("support", parents={"user"}, permissions={"a", "b"}))
    changed = new_role(
        "support", parents={"editor"}, permissions={"b", "c:*"}, description="New", at=T1
    )
    stored = await role_store.replace_role(replace(changed, created_at=T1 + timedelta(days=9)))
    assert stored == replace(changed, created_at=T0)
    assert await role_store.get_role("support") == stored


async def test_replace_role_with_empty_sets_clears_links(role_store: SqlRoleStore) -> None:
    """Replacing with no parents and no permissions removes them all."""
    stored = await role_store.replace_role(
        replace(SEEDED[0], parents=frozenset(), permissions=frozenset(), updated_at=T1)
    )
    assert stored.parents == frozenset()
    assert stored.permissions == frozenset()
    assert await role_store.get_role("admin") == stored


async def test_replace_unknown_role_is_not_found(role_store: SqlRoleStore) -> None:
    """Replacing a role that does not exist is NotFound, not an insert."""
    with pytest.raises(NotFound):
        await role_store.replace_role(new_role("ghost"))
    with pytest.raises(NotFound):
        await role_store.replace_role(new_role("ghost"), expected_updated_at=T0)
    assert await role_store.get_role("ghost") is None


async def test_replace_with_unknown_parent_changes_nothing(role_store: SqlRoleStore) -> None:
    """A failed replace leaves description, parents and permissions as they were."""
    before = await role_store.get_role("editor")
    with pytest.raises(InvalidInput, match="ghost"):
        await role_store.replace_role(
            new_role("editor", parents={"ghost"}, permissions={"x"}, description="New", at=T1)
        )
    assert await role_store.get_role("editor") == before


@pytest.mark.parametrize("bad", [{"name": "Editor"}, {"permissions": frozenset({"a b"})}])
async def test_replace_with_malformed_values_is_invalid(
    role_store: SqlRoleStore, bad: dict[str, Any]
) -> None:
    """replace_role validates like create_role."""
    with pytest.raises(InvalidInput):
        await role_store.replace_role(replace(SEEDED[1], **bad))
    assert await role_store.list_roles() == SEEDED


async def test_replace_with_the_version_read_succeeds(role_store: SqlRoleStore) -> None:
    """expected_updated_at equal to the stored updated_at lets the write through."""
    role = await role_store.get_role("editor")
    assert role is not None
    changed = replace(role, description="Edits", updated_at=T1)
    stored = await role_store.replace_role(changed, expected_updated_at=role.updated_at)
    assert stored == changed
    assert await role_store.get_role("editor") == changed


async def test_replace_with_a_stale_version_is_a_conflict(role_store: SqlRoleStore) -> None:
    """A second writer holding the old updated_at is refused and nothing changes."""
    read_by_both = await role_store.get_role("editor")
    assert read_by_both is not None
    first = replace(read_by_both, permissions=frozenset({"first"}), updated_at=T1)
    await role_store.replace_role(first, expected_updated_at=read_by_both.updated_at)
    second = replace(read_by_both, permissions=frozenset({"second"}), updated_at=T1)
    with pytest.raises(Conflict):
        await role_store.replace_role(second, expected_updated_at=read_by_both.updated_at)
    assert await role_store.get_role("editor") == first


async def test_conditional_replace_always_moves_the_version(role_store: SqlRoleStore) -> None:
    """With a clock that stands still, a conditional write still gets a new
    updated_at, so a second writer holding the old one is refused."""
    role = await role_store.get_role("user")
    assert role is not None
    same_time = replace(role, description="Changed", updated_at=role.updated_at)
    stored = await role_store.replace_role(same_time, expected_updated_at=role.updated_at)
    assert stored.updated_at > role.updated_at
    with pytest.raises(Conflict):
        await role_store.replace_role(same_time, expected_updated_at=role.updated_at)
    assert await role_store.replace_role(same_time, expected_updated_at=stored.updated_at)


async def test_concurrent_conditional_replaces_let_exactly_one_win(
    role_store: SqlRoleStore,
) -> None:
    """10 writers holding the same version: one succeeds, nine get Conflict."""
    read = await role_store.get_role("editor")
    assert read is not None
    won: list[Role] = []
    lost: list[Conflict] = []

    async def write(i: int) -> None:
        mine = replace(read, permissions=frozenset({f"p{i}:write"}), updated_at=T1)
        try:
            won.append(await role_store.replace_role(mine, expected_updated_at=read.updated_at))
        except Conflict as e:
            lost.append(e)

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(write, i)

    assert (len(won), len(lost)) == (1, 9)
    assert await role_store.get_role("editor") == won[0]


# ------------------------------------------------------------------ deleting


async def test_delete_role_cascades_everywhere(
    role_store: SqlRoleStore,
    user_store: SqlUserStore,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Deleting a role removes its grants, its links as child and as parent,
    and its assignments; other roles and users stay."""
    user_id = await new_user_id(user_store)
    await role_store.set_user_roles(user_id, frozenset({"editor", "user"}))

    await role_store.delete_role("editor")

    assert await role_store.get_role("editor") is None
    admin = await role_store.get_role("admin")
    assert admin == replace(SEEDED[0], parents=frozenset())
    assert await role_store.user_roles(user_id) == {"user"}
    assert await role_store.users_with_role("editor") == []
    async with sessionmaker() as db:
        left = await db.scalars(select(RolePermissionRow.role).distinct())
        assert set(left) == {"admin", "user"}
        assert (await db.execute(select(RoleParentRow.role, RoleParentRow.parent))).all() == []
    assert await count(sessionmaker, RoleRow) == 2
    assert await user_store.get(user_id) is not None


async def test_delete_unknown_role_is_not_found(role_store: SqlRoleStore) -> None:
    """Deleting a role that does not exist is NotFound."""
    with pytest.raises(NotFound):
        await role_store.delete_role("ghost")
    assert await role_store.list_roles() == SEEDED


# ------------------------------------------------------------------ users' roles


async def test_set_user_roles_replaces_the_whole_set(
    role_store: SqlRoleStore, user_store: SqlUserStore
) -> None:
    """Each call makes the given set exactly the user's direct roles."""
    user_id = await new_user_id(user_store)
    other = await new_user_id(user_store)
    await role_store.set_user_roles(other, frozenset({"admin"}))
    assert await role_store.user_roles(user_id) == frozenset()

    await role_store.set_user_roles(user_id, frozenset({"user", "editor"}))
    assert await role_store.user_roles(user_id) == {"user", "editor"}
    await role_store.set_user_roles(user_id, frozenset({"admin"}))
    assert await role_store.user_roles(user_id) == {"admin"}
    await role_store.set_user_roles(user_id, frozenset())
    assert await role_store.user_roles(user_id) == frozenset()
    assert await role_store.user_roles(other) == {"admin"}


async def test_concurrent_set_user_roles_end_with_one_whole_set(
    role_store: SqlRoleStore, user_store: SqlUserStore
) -> None:
    """Racing replacements of one user's roles never fail or mix: one set wins whole."""
    user_id = await new_user_id(user_store)
    sets = [frozenset({"user"}), frozenset({"user", "editor"}), frozenset({"admin", "user"})] * 3

    async with anyio.create_task_group() as tg:
        for roles in sets:
            tg.start_soon(role_store.set_user_roles, user_id, roles)

    assert await role_store.user_roles(user_id) in sets


async def test_set_user_roles_with_an_unknown_role_changes_nothing(
    role_store: SqlRoleStore, user_store: SqlUserStore
) -> None:
    """One unknown role: InvalidInput naming it, and the user keeps the old set."""
    user_id = await new_user_id(user_store)
    await role_store.set_user_roles(user_id, frozenset({"user"}))
    with pytest.raises(InvalidInput, match="ghost"):
        await role_store.set_user_roles(user_id, frozenset({"admin", "ghost"}))
    with pytest.raises(InvalidInput):
        await role_store.set_user_roles(user_id, frozenset({"Not A Name"}))
    assert await role_store.user_roles(user_id) == {"user"}


async def test_set_user_roles_of_an_unknown_user_is_not_found(
    role_store: SqlRoleStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Assigning roles to a user who does not exist is NotFound; nothing is written."""
    with pytest.raises(NotFound):
        await role_store.set_user_roles(uuid.uuid4(), frozenset({"user"}))
    assert await count(sessionmaker, UserRoleRow) == 0


async def test_user_roles_of_an_unknown_user_is_empty(role_store: SqlRoleStore) -> None:
    """Reading the roles of nobody gives the empty set."""
    assert await role_store.user_roles(uuid.uuid4()) == frozenset()


async def test_users_with_role_lists_direct_assignments(
    role_store: SqlRoleStore, user_store: SqlUserStore
) -> None:
    """Only users the role is assigned to directly (no closure), in id order."""
    editors = [await new_user_id(user_store) for _ in range(3)]
    admin = await new_user_id(user_store)
    for user_id in editors:
        await role_store.set_user_roles(user_id, frozenset({"editor"}))
    await role_store.set_user_roles(admin, frozenset({"admin", "user"}))

    assert await role_store.users_with_role("editor") == sorted(editors)
    assert await role_store.users_with_role("user") == [admin]
    assert await role_store.users_with_role("ghost") == []


async def test_deleting_a_user_removes_their_role_assignments(
    role_store: SqlRoleStore, user_store: SqlUserStore
) -> None:
    """user_roles cascades from users."""
    user_id = await new_user_id(user_store)
    await role_store.set_user_roles(user_id, frozenset({"admin"}))
    await user_store.delete_user(user_id)
    assert await role_store.users_with_role("admin") == []


async def test_database_outage_raises(broken_database_url: str) -> None:
    """An unreachable database is ServiceUnavailable, never 'no roles'."""
    engine = create_engine(broken_database_url)
    store = SqlRoleStore(create_sessionmaker(engine))
    try:
        with pytest.raises(ServiceUnavailable):
            await store.list_roles()
        with pytest.raises(ServiceUnavailable):
            await store.user_roles(uuid.uuid4())
    finally:
        await engine.dispose()
