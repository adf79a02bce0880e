"""``/admin/roles``: the seeded hierarchy ``user`` ⊂ ``editor`` ⊂ ``admin``,
roles created with parents and permissions, cycles refused with their path,
and changes that take permissions away holding at once in strict mode for
everyone whose permissions depended on the role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from tests.admin_flows import (
    ADMIN_PERMISSIONS,
    EDITOR_PERMISSIONS,
    USER_PERMISSIONS,
    Account,
    Server,
    account,
    admin_account,
    assert_unauthorized,
    claims,
    relogin,
    shared_server,
)
from tests.http_checks import assert_problem
from tests.token_flows import me_status, refresh

pytestmark = pytest.mark.anyio

ROLE_FIELDS = {"name", "description", "parents", "permissions", "created_at", "updated_at"}
SEEDED = {
    "admin": (["editor"], sorted(set(ADMIN_PERMISSIONS) - set(EDITOR_PERMISSIONS))),
    "editor": (["user"], ["content:read", "content:write"]),
    "user": ([], USER_PERMISSIONS),
}
"""Name → (parents, permissions) as migration 0003 seeds them."""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One server for the tables of refused requests, which must change nothing."""
    async with shared_server(tmp_path_factory.mktemp("admin-roles")) as shared:
        yield shared


async def roles(client: httpx.AsyncClient, admin: Account) -> dict[str, dict[str, Any]]:
    response = await client.get("/admin/roles", headers=admin.headers)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    for role in listed:
        assert set(role) == ROLE_FIELDS
    assert [r["name"] for r in listed] == sorted(r["name"] for r in listed)
    return {r["name"]: r for r in listed}


def shape(listed: dict[str, dict[str, Any]]) -> dict[str, tuple[list[str], list[str]]]:
    return {name: (r["parents"], r["permissions"]) for name, r in listed.items()}


async def test_list_shows_the_seeded_roles(server: Server) -> None:
    """The three seeded roles, by name, each with its direct parents and permissions."""
    assert shape(await roles(server.client, server.admin)) == SEEDED


async def test_create_role_with_parents_and_permissions(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """201 with the role; it reads back the same; a holder's token carries the
    role's closure and permissions, wildcard included."""
    admin = await admin_account(client, bastion, clock)
    payload = {
        "name": "publisher",
        "description": "Publishes what editors write",
        "parents": ["editor"],
        "permissions": ["content:publish", "billing:*"],
    }
    response = await client.post("/admin/roles", headers=admin.headers, json=payload)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == ROLE_FIELDS
    assert body["parents"] == ["editor"]
    assert body["permissions"] == ["billing:*", "content:publish"]
    assert body["description"] == payload["description"]
    read = await client.get("/admin/roles/publisher", headers=admin.headers)
    assert read.json() == body
    holder = await account(client, bastion, clock, "pub@example.com", ["publisher"])
    token = claims(holder.access_token)
    assert token["roles"] == ["editor", "publisher", "user"]
    assert token["scope"].split() == sorted([*EDITOR_PERMISSIONS, "billing:*", "content:publish"])
    narrowed = await client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": holder.email,
            "password": holder.password,
            "scope": "billing:refund",
        },
    )
    assert narrowed.json()["scope"] == "billing:refund"


@pytest.mark.parametrize("name", ["user", "editor", "admin"])
async def test_duplicate_role_is_409(server: Server, name: str) -> None:
    """A name already taken is a 409 problem; the existing role is unchanged."""
    response = await server.client.post(
        "/admin/roles",
        headers=server.admin.headers,
        json={"name": name, "permissions": ["users:admin"]},
    )
    body = assert_problem(response, 409)
    assert name in body["detail"]
    assert shape(await roles(server.client, server.admin)) == SEEDED


@pytest.mark.parametrize(
    ("method", "path", "body", "cycle"),
    [
        pytest.param(
            "PATCH",
            "/admin/roles/user",
            {"parents": ["admin"]},
            "user → admin → editor → user",
            id="user-under-admin",
        ),
        pytest.param(
            "PATCH",
            "/admin/roles/user",
            {"parents": ["editor"], "permissions": ["users:admin"]},
            "user → editor → user",
            id="user-under-editor-with-permissions",
        ),
        pytest.param(
            "PATCH", "/admin/roles/editor", {"parents": ["editor"]}, "editor → editor", id="self"
        ),
        pytest.param(
            "PATCH",
            "/admin/roles/editor",
            {"parents": ["user", "admin"]},
            "editor → admin → editor",
            id="editor-under-admin",
        ),
        pytest.param(
            "POST", "/admin/roles", {"name": "loop", "parents": ["loop"]}, "loop → loop", id="new"
        ),
    ],
)
async def test_cycle_is_409_with_its_path_and_nothing_written(
    server: Server, method: str, path: str, body: dict[str, Any], cycle: str
) -> None:
    """A parent that would close a cycle is a 409 problem naming the cycle;
    no role changes and no role event is recorded."""
    audit_before = await server.client.get("/admin/audit", headers=server.admin.headers)
    response = await server.client.request(method, path, headers=server.admin.headers, json=body)
    problem = assert_problem(response, 409)
    assert cycle in problem["detail"]
    assert shape(await roles(server.client, server.admin)) == SEEDED
    audit_after = await server.client.get("/admin/audit", headers=server.admin.headers)
    assert audit_after.json()["items"] == audit_before.json()["items"]


INVALID_ROLES = [
    pytest.param({"name": "Admin"}, id="name-upper-case"),
    pytest.param({"name": "1st"}, id="name-starts-with-digit"),
    pytest.param({"name": ""}, id="name-empty"),
    pytest.param({"name": "a" * 65}, id="name-too-long"),
    pytest.param({"name": "a b"}, id="name-space"),
    pytest.param({"name": "a/b"}, id="name-slash"),
    pytest.param({"name": "a:b"}, id="name-colon"),
    pytest.param({"name": "ädmin"}, id="name-non-ascii"),
    pytest.param({"name": "x", "permissions": ["*"]}, id="perm-star"),
    pytest.param({"name": "x", "permissions": ["content:"]}, id="perm-no-action"),
    pytest.param({"name": "x", "permissions": [":read"]}, id="perm-no-resource"),
    pytest.param({"name": "x", "permissions": ["*:read"]}, id="perm-wild-resource"),
    pytest.param({"name": "x", "permissions": ["content:wr*"]}, id="perm-partial-wildcard"),
    pytest.param({"name": "x", "permissions": ["a:b:c"]}, id="perm-three-parts"),
    pytest.param({"name": "x", "permissions": ["a b"]}, id="perm-space"),
    pytest.param({"name": "x", "permissions": [""]}, id="perm-empty"),
    pytest.param({"name": "x", "permissions": ["p" * 129]}, id="perm-too-long"),
    pytest.param({"name": "x", "permissions": "users:admin"}, id="perms-a-string"),
    pytest.param({"name": "x", "parents": ["nosuchrole"]}, id="unknown-parent"),
    pytest.param({"name": "x", "parents": ["Admin"]}, id="parent-bad-name"),
    pytest.param({"name": "x", "parents": "user"}, id="parents-a-string"),
    pytest.param({"name": "x", "description": "d" * 501}, id="description-too-long"),
    pytest.param({"name": "x", "description": 5}, id="description-not-text"),
    pytest.param({"name": "x", "is_system": True}, id="unknown-field"),
    pytest.param({"permissions": ["profile"]}, id="name-missing"),
]


@pytest.mark.parametrize("body", INVALID_ROLES)
async def test_invalid_role_is_422_and_nothing_written(
    server: Server, body: dict[str, Any]
) -> None:
    """Malformed names, permissions, parents or fields are a 422 problem; no role appears."""
    response = await server.client.post("/admin/roles", headers=server.admin.headers, json=body)
    assert_problem(response, 422)
    assert shape(await roles(server.client, server.admin)) == SEEDED


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"permissions": ["*"]}, id="perm-star"),
        pytest.param({"permissions": ["content:wr*"]}, id="perm-partial-wildcard"),
        pytest.param({"parents": ["nosuchrole"]}, id="unknown-parent"),
        pytest.param({"parents": ["editor", "nosuchrole"]}, id="one-unknown-parent"),
        pytest.param({"name": "renamed"}, id="rename-not-allowed"),
        pytest.param({"permissions": None, "extra": 1}, id="unknown-field"),
    ],
)
async def test_invalid_role_update_is_422_and_nothing_written(
    server: Server, body: dict[str, Any]
) -> None:
    """A bad update to ``user`` is a 422 problem and leaves every role as it was."""
    response = await server.client.patch(
        "/admin/roles/user", headers=server.admin.headers, json=body
    )
    assert_problem(response, 422)
    assert shape(await roles(server.client, server.admin)) == SEEDED


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("name", ["nosuchrole", "Admin", "a-b"])
async def test_unknown_role_is_404(server: Server, method: str, name: str) -> None:
    """A role that does not exist is a 404 problem on read, update and delete."""
    response = await server.client.request(
        method, f"/admin/roles/{name}", headers=server.admin.headers, json={"description": "x"}
    )
    assert_problem(response, 404)


# ------------------------------------------------------------------ changes reach tokens


async def test_permission_change_expires_tokens_of_holders_and_includers(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """Changing ``editor``'s permissions kills the access tokens of editors and
    of admins (admin includes editor), not of plain users; a refresh then
    carries the new permissions."""
    admin = await admin_account(client, bastion, clock)
    editor = await account(client, bastion, clock, "ed@example.com", ["editor"])
    other_admin = await account(client, bastion, clock, "ad@example.com", ["admin"])
    user = await account(client, bastion, clock, "us@example.com", ["user"])
    response = await client.patch(
        "/admin/roles/editor",
        headers=admin.headers,
        json={"permissions": ["content:read", "content:publish"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["permissions"] == ["content:publish", "content:read"]
    for holder in (editor, other_admin, admin):
        assert_unauthorized(await client.get("/me", headers=holder.headers), holder.access_token)
    assert await me_status(client, user.access_token) == 200

    clock.advance(0.001)
    renewed = await refresh(client, editor.refresh_token)
    assert renewed.status_code == 200, renewed.text
    # RFC 6749 §6: a refresh never widens the session's grant, so the new
    # content:publish waits for a new login; the lost content:write is gone now.
    assert renewed.json()["scope"].split() == ["content:read", *USER_PERMISSIONS]
    assert await me_status(client, renewed.json()["access_token"]) == 200
    admin_scope = (await refresh(client, other_admin.refresh_token)).json()["scope"].split()
    assert admin_scope == sorted(set(ADMIN_PERMISSIONS) - {"content:write"})
    fresh = await relogin(client, clock, editor)
    assert claims(fresh.access_token)["scope"].split() == [
        "content:publish",
        "content:read",
        *USER_PERMISSIONS,
    ]


async def test_description_change_expires_nothing(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """A new description changes no permission: every token keeps working."""
    admin = await admin_account(client, bastion, clock)
    editor = await account(client, bastion, clock, "ed@example.com", ["editor"])
    response = await client.patch(
        "/admin/roles/editor", headers=admin.headers, json={"description": "Writers"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "Writers"
    assert response.json()["permissions"] == SEEDED["editor"][1]
    assert await me_status(client, editor.access_token) == 200
    assert await me_status(client, admin.access_token) == 200


async def test_parent_change_expires_tokens_and_narrows_refresh(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """``editor`` no longer including ``user``: editors' tokens die and their
    refreshed token lacks ``profile``, so ``/me`` is 403 for them."""
    admin = await admin_account(client, bastion, clock)
    editor = await account(client, bastion, clock, "ed@example.com", ["editor"])
    response = await client.patch(
        "/admin/roles/editor", headers=admin.headers, json={"parents": []}
    )
    assert response.status_code == 200, response.text
    assert_unauthorized(await client.get("/me", headers=editor.headers))
    clock.advance(0.001)
    renewed = (await refresh(client, editor.refresh_token)).json()
    assert claims(renewed["access_token"])["roles"] == ["editor"]
    assert renewed["scope"].split() == ["content:read", "content:write"]
    assert await me_status(client, renewed["access_token"]) == 403


async def test_delete_role(client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock) -> None:
    """204; then 404; holders lose the role and what it gave, including the
    holders of roles that included it (admin loses editor and, through it, user)."""
    admin = await admin_account(client, bastion, clock)
    editor = await account(client, bastion, clock, "ed@example.com", ["editor"])
    other_admin = await account(client, bastion, clock, "ad@example.com", ["admin"])
    response = await client.delete("/admin/roles/editor", headers=admin.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    for holder in (editor, other_admin, admin):
        assert_unauthorized(await client.get("/me", headers=holder.headers))

    admin = await relogin(client, clock, admin)  # the acting admin held it too
    assert_problem(await client.get("/admin/roles/editor", headers=admin.headers), 404)
    listed = await roles(client, admin)
    assert sorted(listed) == ["admin", "user"]
    assert listed["admin"]["parents"] == []
    users = (await client.get("/admin/users", headers=admin.headers)).json()["items"]
    assert {u["email"]: u["roles"] for u in users}[editor.email] == []

    renewed = await refresh(client, other_admin.refresh_token)
    assert claims(renewed.json()["access_token"])["roles"] == ["admin"]
    assert renewed.json()["scope"].split() == SEEDED["admin"][1]
    gone = await refresh(client, editor.refresh_token)
    assert gone.status_code == 200, gone.text  # the session survives, with nothing in it
    assert gone.json()["scope"] == ""
    assert_problem(await client.delete("/admin/roles/editor", headers=admin.headers), 404)
