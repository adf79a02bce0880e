"""AuthorizationService over the real SQL role store (a temporary SQLite file
migrated to head, so the seeded roles ``user`` ⊂ ``editor`` ⊂ ``admin`` exist):
effective permissions, scope grants, role administration and its audit trail."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio
import pytest

from bastion.audit import AuditLog
from bastion.authz import AuthorizationService, Effective
from bastion.clock import FrozenClock
from bastion.errors import Conflict, InvalidInput, InvalidScope, NotFound
from bastion.stores.protocols import NewUser
from bastion.stores.sql import SqlUserStore, create_engine, create_sessionmaker, upgrade
from bastion.stores.sql.roles import SqlRoleStore

pytestmark = pytest.mark.anyio

USER_PERMISSIONS = {"profile", "email"}
EDITOR_PERMISSIONS = USER_PERMISSIONS | {"content:read", "content:write"}
ADMIN_PERMISSIONS = EDITOR_PERMISSIONS | {
    "users:admin",
    "roles:admin",
    "audit:read",
    "tokens:introspect",
    "sessions:admin",
}


class CountingRoleStore:
    """The real store, counting the calls that reach it."""

    def __init__(self, inner: SqlRoleStore) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.inner, name)


@dataclass
class World:
    service: AuthorizationService
    roles: CountingRoleStore
    users: SqlUserStore
    clock: FrozenClock

    async def user(self, *roles: str) -> UUID:
        """A new account holding ``roles`` directly."""
        user = await self.users.add(
            NewUser(email=f"{uuid4().hex}@example.com", username=None, password_hash="x"),
            now=self.clock.now(),
        )
        if roles:
            await self.roles.inner.set_user_roles(user.id, frozenset(roles))
        return user.id


@pytest.fixture
async def world(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[World]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'authz.db'}"
    await upgrade(url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    roles = CountingRoleStore(SqlRoleStore(sessions))
    service = AuthorizationService(roles, AuditLog(clock), clock)
    try:
        yield World(service, roles, SqlUserStore(sessions), clock)
    finally:
        await engine.dispose()


AuditEvents = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture) -> AuditEvents:
    """The audit events recorded so far in the test, decoded from the `bastion.audit` log."""
    caplog.set_level(logging.INFO, logger="bastion.audit")

    def events() -> list[dict[str, Any]]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == "bastion.audit"]

    return events


# ------------------------------------------------------------------ effective


@pytest.mark.parametrize(
    ("direct", "roles", "permissions"),
    [
        pytest.param((), set(), set(), id="no-roles"),
        pytest.param(("user",), {"user"}, USER_PERMISSIONS, id="user"),
        pytest.param(("editor",), {"editor", "user"}, EDITOR_PERMISSIONS, id="editor"),
        pytest.param(("admin",), {"admin", "editor", "user"}, ADMIN_PERMISSIONS, id="admin"),
        pytest.param(("user", "admin"), {"admin", "editor", "user"}, ADMIN_PERMISSIONS, id="both"),
    ],
)
async def test_effective_follows_the_seeded_hierarchy(
    world: World, direct: tuple[str, ...], roles: set[str], permissions: set[str]
) -> None:
    """The closure of the user's roles and the union of their permissions."""
    user_id = await world.user(*direct)
    assert await world.service.effective(user_id) == Effective(
        roles=frozenset(roles), permissions=frozenset(permissions)
    )


async def test_effective_reads_the_store_twice(world: World) -> None:
    """One read of the role table and one of the user's assignments, however deep the graph."""
    user_id = await world.user("admin")
    world.roles.calls.clear()
    await world.service.effective(user_id)
    assert sorted(world.roles.calls) == ["list_roles", "user_roles"]


async def test_effective_of_an_unknown_user_is_empty(world: World) -> None:
    """No account, no roles, no permissions (and no error)."""
    assert await world.service.effective(uuid4()) == Effective(frozenset(), frozenset())


# ------------------------------------------------------------------ grant_scopes


@pytest.mark.parametrize(
    ("direct", "requested", "scopes"),
    [
        pytest.param(("editor",), None, EDITOR_PERMISSIONS, id="none-requested-all"),
        pytest.param(("editor",), "", EDITOR_PERMISSIONS, id="empty-requested-all"),
        pytest.param(("editor",), "profile", {"profile"}, id="subset"),
        pytest.param(("user",), "profile content:write", {"profile"}, id="narrowed-not-refused"),
        pytest.param(
            ("admin",),
            "content:write users:admin",
            {"content:write", "users:admin"},
            id="inherited",
        ),
        pytest.param(("billing",), "invoices:read", {"invoices:read"}, id="through-wildcard"),
        pytest.param(("billing",), "invoices:*", {"invoices:*"}, id="wildcard-itself"),
        pytest.param((), None, set(), id="no-roles-empty-scope"),
    ],
)
async def test_grant_scopes(
    world: World, direct: tuple[str, ...], requested: str | None, scopes: set[str]
) -> None:
    """RFC 6749 §3.3: requested ∩ effective (wildcards honoured), everything when none asked."""
    await world.service.create_role("billing", permissions=["invoices:*"], actor="root")
    user_id = await world.user(*direct)
    roles, granted = await world.service.grant_scopes(user_id, requested)
    assert granted == scopes
    assert roles == (await world.service.effective(user_id)).roles


@pytest.mark.parametrize(
    ("direct", "requested"),
    [
        pytest.param(("user",), "content:write", id="nothing-left"),
        pytest.param(("editor",), "content:*", id="wildcard-not-built-from-actions"),
        pytest.param((), "profile", id="no-roles"),
        pytest.param(("admin",), "*", id="star"),
        pytest.param(("admin",), 'profile "email"', id="malformed"),
    ],
)
async def test_grant_scopes_invalid_scope_only_when_nothing_is_left(
    world: World, direct: tuple[str, ...], requested: str
) -> None:
    """A request that leaves nothing (or is malformed) is invalid_scope."""
    user_id = await world.user(*direct)
    with pytest.raises(InvalidScope):
        await world.service.grant_scopes(user_id, requested)


async def test_grant_scopes_reflects_role_changes_at_the_next_issue(world: World) -> None:
    """Permissions are resolved when a token is issued: a new grant shows at the next one."""
    user_id = await world.user("user")
    with pytest.raises(InvalidScope):
        await world.service.grant_scopes(user_id, "reports:read")
    await world.service.update_role(
        "user", permissions=[*USER_PERMISSIONS, "reports:read"], actor="root"
    )
    assert (await world.service.grant_scopes(user_id, "reports:read"))[1] == {"reports:read"}


# ------------------------------------------------------------------ role writes


async def test_create_role_writes_and_audits(world: World, audit: AuditEvents) -> None:
    """A new role is stored with its parents and permissions, and audited with its actor."""
    role = await world.service.create_role(
        "reviewer",
        description="Reviews content",
        parents=["user"],
        permissions=["content:read", "reviews:*"],
        actor="admin-1",
    )
    assert role.parents == {"user"}
    assert await world.roles.inner.get_role("reviewer") == role
    [event] = audit()
    assert event["event"] == "role.created"
    assert event["actor"] == "admin-1"
    assert event["target"] == "reviewer"
    assert event["after"] == {
        "name": "reviewer",
        "description": "Reviews content",
        "parents": ["user"],
        "permissions": ["content:read", "reviews:*"],
    }


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"name": "editor"}, Conflict, id="name-taken"),
        pytest.param({"name": "Reviewer"}, InvalidInput, id="bad-name"),
        pytest.param({"name": "r", "parents": ["ghost"]}, InvalidInput, id="unknown-parent"),
        pytest.param({"name": "r", "parents": ["r"]}, Conflict, id="self-parent"),
        pytest.param({"name": "r", "parents": "user"}, InvalidInput, id="parents-as-string"),
        pytest.param({"name": "r", "permissions": ["*"]}, InvalidInput, id="star"),
        pytest.param({"name": "r", "permissions": ["a:*:b"]}, InvalidInput, id="bad-wildcard"),
        pytest.param({"name": "r", "description": "x" * 501}, InvalidInput, id="long-text"),
    ],
)
async def test_create_role_refusals(
    world: World, audit: AuditEvents, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """Bad names, permissions or parents, a taken name or a cycle: refused, nothing written."""
    before = await world.roles.inner.list_roles()
    with pytest.raises(error):
        await world.service.create_role(actor="root", **kwargs)
    assert await world.roles.inner.list_roles() == before
    assert audit() == []


@pytest.mark.parametrize(
    ("name", "parents", "path"),
    [
        pytest.param("user", ["user"], "user → user", id="self-parent"),
        pytest.param("user", ["editor"], "user → editor → user", id="two-cycle"),
        pytest.param("user", ["admin"], "user → admin → editor → user", id="three-cycle"),
        pytest.param("editor", ["user", "admin"], "editor → admin → editor", id="among-others"),
    ],
)
async def test_update_refuses_a_cycle_and_writes_nothing(
    world: World, audit: AuditEvents, name: str, parents: list[str], path: str
) -> None:
    """An update that would close a cycle is a Conflict naming the path; the role is unchanged."""
    before = await world.roles.inner.list_roles()
    with pytest.raises(Conflict, match=path):
        await world.service.update_role(name, parents=parents, actor="root")
    assert await world.roles.inner.list_roles() == before
    assert audit() == []


async def test_update_changes_only_what_is_given(world: World, audit: AuditEvents) -> None:
    """Fields left as None keep their value; the audit event holds before and after."""
    updated = await world.service.update_role("editor", permissions=["content:*"], actor="admin-1")
    assert updated.parents == {"user"}
    assert updated.permissions == {"content:*"}
    assert updated.description == "Reads and writes content"
    [event] = audit()
    assert (event["event"], event["actor"], event["target"]) == (
        "role.updated",
        "admin-1",
        "editor",
    )
    assert event["before"]["permissions"] == ["content:read", "content:write"]
    assert event["after"]["permissions"] == ["content:*"]


async def test_update_can_remove_a_link(world: World) -> None:
    """Dropping a parent takes its permissions away from the role's holders."""
    user_id = await world.user("admin")
    await world.service.update_role("admin", parents=[], actor="root")
    assert await world.service.effective(user_id) == Effective(
        roles=frozenset({"admin"}), permissions=frozenset(ADMIN_PERMISSIONS - EDITOR_PERMISSIONS)
    )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"name": "ghost"}, NotFound, id="unknown-role"),
        pytest.param({"name": "user", "parents": ["ghost"]}, InvalidInput, id="unknown-parent"),
        pytest.param({"name": "user", "permissions": ["a b"]}, InvalidInput, id="bad-permission"),
    ],
)
async def test_update_refusals(
    world: World, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """Updating a missing role or with bad values is refused."""
    with pytest.raises(error):
        await world.service.update_role(actor="root", **kwargs)


async def test_concurrent_updates_cannot_close_a_cycle(world: World) -> None:
    """Two updates that are each acyclic but together form a cycle: one of them is refused."""
    await world.service.create_role("a", actor="root")
    await world.service.create_role("b", actor="root")
    outcomes: list[str] = []

    async def link(name: str, parent: str) -> None:
        try:
            await world.service.update_role(name, parents=[parent], actor="root")
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        tg.start_soon(link, "a", "b")
        tg.start_soon(link, "b", "a")
    assert sorted(outcomes) == ["conflict", "ok"]


async def test_delete_role_removes_it_and_audits(world: World, audit: AuditEvents) -> None:
    """Deleting a role drops it from holders and from roles that included it; audited."""
    editor_id = await world.user("editor")
    admin_id = await world.user("admin")
    await world.service.delete_role("editor", actor="admin-1")
    assert await world.roles.inner.get_role("editor") is None
    assert await world.service.effective(editor_id) == Effective(frozenset(), frozenset())
    assert (await world.service.effective(admin_id)).roles == {"admin"}
    [event] = audit()
    assert (event["event"], event["actor"], event["target"]) == (
        "role.deleted",
        "admin-1",
        "editor",
    )
    assert event["included_by"] == "admin"
    assert event["users"] == 1
    assert event["before"]["parents"] == ["user"]


async def test_delete_unknown_role_is_not_found(world: World) -> None:
    """Deleting a role that does not exist is NotFound."""
    with pytest.raises(NotFound):
        await world.service.delete_role("ghost", actor="root")


# ------------------------------------------------------------------ assignments


async def test_assignments_are_audited(world: World, audit: AuditEvents) -> None:
    """assign, unassign and set_user_roles change direct roles and record before/after."""
    user_id = await world.user("user")
    assert await world.service.assign(user_id, "editor", actor="admin-1") == {"user", "editor"}
    assert await world.service.unassign(user_id, "user", actor="admin-1") == {"editor"}
    assert await world.service.set_user_roles(user_id, ["admin"], actor="admin-1") == {"admin"}
    assert await world.service.user_roles(user_id) == {"admin"}
    assert [(e["event"], e["actor"], e["target"]) for e in audit()] == [
        ("user.roles_changed", "admin-1", str(user_id))
    ] * 3
    assert [(e["before"]["roles"], e["after"]["roles"]) for e in audit()] == [
        (["user"], ["editor", "user"]),
        (["editor", "user"], ["editor"]),
        (["editor"], ["admin"]),
    ]


async def test_assignments_without_change_write_nothing(world: World, audit: AuditEvents) -> None:
    """Assigning a held role or removing an absent one is a no-op, not an audit event."""
    user_id = await world.user("user")
    assert await world.service.assign(user_id, "user", actor="root") == {"user"}
    assert await world.service.unassign(user_id, "admin", actor="root") == {"user"}
    assert await world.service.set_user_roles(user_id, ["user"], actor="root") == {"user"}
    assert audit() == []


Call = Callable[[AuthorizationService, UUID], Awaitable[object]]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(
            lambda s, u: s.assign(u, "ghost", actor="root"), InvalidInput, id="assign-unknown-role"
        ),
        pytest.param(
            lambda s, u: s.assign(u, "Admin", actor="root"), InvalidInput, id="assign-bad-name"
        ),
        pytest.param(
            lambda s, u: s.set_user_roles(u, ["user", "ghost"], actor="root"),
            InvalidInput,
            id="set-unknown-role",
        ),
        pytest.param(
            lambda s, u: s.set_user_roles(u, "admin", actor="root"), InvalidInput, id="set-string"
        ),
        pytest.param(
            lambda s, u: s.assign(uuid4(), "user", actor="root"), NotFound, id="unknown-user"
        ),
    ],
)
async def test_assignment_refusals(
    world: World, audit: AuditEvents, call: Call, error: type[Exception]
) -> None:
    """Unknown roles, malformed names and unknown users are refused; nothing is written."""
    user_id = await world.user("user")
    with pytest.raises(error):
        await call(world.service, user_id)
    assert await world.service.user_roles(user_id) == {"user"}
    assert audit() == []
