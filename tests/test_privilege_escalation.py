"""A plain user trying every door to more privilege: mass assignment at
registration, routes on ``/me`` that do not exist, the admin API without its
permission, scopes it does not hold at the token endpoint (login and
refresh), forged or mismatched tokens, and an admin's token outliving its
demotion. Every attempt is refused and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.clock import FrozenClock
from bastion.core import Bastion
from tests.admin_flows import (
    ADMIN_PERMISSIONS,
    CLOSURES,
    USER_PERMISSIONS,
    Account,
    Server,
    account,
    admin_account,
    assert_forbidden,
    assert_unauthorized,
    claims,
    shared_server,
)
from tests.conftest import PASSWORD
from tests.http_checks import assert_oauth_error, assert_problem
from tests.token_flows import BOB, BOB_PASSWORD, bearer, me_status, refresh

pytestmark = pytest.mark.anyio

MALLORY = "mallory@example.com"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One server for the attempts that must change nothing, with Mallory,
    a logged-in plain user."""
    async with shared_server(tmp_path_factory.mktemp("escalation")) as shared:
        await account(shared.client, shared.bastion, shared.clock, MALLORY)
        yield shared


async def mallory(server: Server) -> Account:
    """Mallory logged in afresh on the shared server."""
    user = await server.bastion.users.get_by_email(MALLORY)
    assert user is not None
    server.clock.advance(0.001)
    response = await server.client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": MALLORY, "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(str(user.id), MALLORY, PASSWORD, body["access_token"], body["refresh_token"])


async def assert_still_plain_user(server: Server, who: Account) -> None:
    """``who`` holds exactly the role ``user``, and the role table is as seeded."""
    assert await server.bastion.authz.user_roles(who.uuid) == {"user"}
    roles = await server.bastion.authz.roles_by_name()
    assert sorted(roles) == ["admin", "editor", "user"]
    assert roles["user"].permissions == frozenset(USER_PERMISSIONS)
    assert roles["user"].parents == frozenset()


# ------------------------------------------------------------------ mass assignment


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"roles": ["admin"]}, id="roles"),
        pytest.param({"role": "admin"}, id="role"),
        pytest.param({"is_active": True}, id="is_active"),
        pytest.param({"email_verified": True}, id="email_verified"),
        pytest.param({"is_superuser": True}, id="is_superuser"),
        pytest.param({"scope": "users:admin"}, id="scope"),
        pytest.param({"permissions": ["users:admin"]}, id="permissions"),
        pytest.param({"id": "00000000-0000-0000-0000-000000000001"}, id="id"),
    ],
)
async def test_registration_refuses_privileged_fields(
    server: Server, extra: dict[str, Any]
) -> None:
    """OWASP API3: a registration body naming roles, state or any other
    extra field is a 422 problem, and no account is created."""
    body = {"email": "eve@example.com", "password": BOB_PASSWORD, **extra}
    response = await server.client.post("/auth/register", json=body)
    problem = assert_problem(response, 422, BOB_PASSWORD)
    assert [e["loc"] for e in problem["errors"]] == [["body", next(iter(extra))]]
    assert await server.bastion.users.get_by_email("eve@example.com") is None


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("PATCH", "/me", 405, id="patch-me"),
        pytest.param("PUT", "/me", 405, id="put-me"),
        pytest.param("POST", "/me", 405, id="post-me"),
        pytest.param("POST", "/me/roles", 404, id="me-roles"),
        pytest.param("PUT", "/me/roles", 404, id="put-me-roles"),
        pytest.param("PATCH", "/me/roles", 404, id="patch-me-roles"),
        pytest.param("POST", "/me/permissions", 404, id="me-permissions"),
        pytest.param("PATCH", "/users/me", 404, id="users-me"),
        pytest.param("POST", "/me/password", 422, id="password-with-roles"),
    ],
)
async def test_no_me_route_accepts_roles(
    server: Server, method: str, path: str, status: int
) -> None:
    """Nothing under ``/me`` changes roles: missing routes are 404/405
    problems and the password route refuses the extra fields (422)."""
    caller = await mallory(server)
    body = {
        "roles": ["admin"],
        "is_active": True,
        "current_password": PASSWORD,
        "new_password": BOB_PASSWORD,
    }
    response = await server.client.request(method, path, headers=caller.headers, json=body)
    assert_problem(response, status, caller.access_token)
    await assert_still_plain_user(server, caller)
    assert claims((await mallory(server)).access_token)["roles"] == ["user"]


# ------------------------------------------------------------------ the admin API


ADMIN_ATTEMPTS = [
    pytest.param("PATCH", "/admin/users/{me}", {"roles": ["admin"]}, "users:admin", id="own-roles"),
    pytest.param(
        "POST",
        "/admin/users",
        {"email": "sock@example.com", "password": BOB_PASSWORD, "roles": ["admin"]},
        "users:admin",
        id="create-admin",
    ),
    pytest.param("DELETE", "/admin/users/{me}", None, "users:admin", id="delete-self"),
    pytest.param(
        "PATCH",
        "/admin/roles/user",
        {"permissions": ["profile", "email", "users:admin"]},
        "roles:admin",
        id="widen-own-role",
    ),
    pytest.param(
        "PATCH", "/admin/roles/user", {"parents": ["admin"]}, "roles:admin", id="reparent-own-role"
    ),
    pytest.param(
        "POST",
        "/admin/roles",
        {"name": "root", "permissions": ["users:admin"]},
        "roles:admin",
        id="create-role",
    ),
    pytest.param("DELETE", "/admin/roles/admin", None, "roles:admin", id="delete-admin-role"),
    pytest.param(
        "POST", "/admin/users/{admin}/sessions/revoke", None, "sessions:admin", id="end-admin"
    ),
    pytest.param("GET", "/admin/audit", None, "audit:read", id="read-audit"),
]


@pytest.mark.parametrize("role", ["user", "editor"])
@pytest.mark.parametrize(("method", "path", "body", "permission"), ADMIN_ATTEMPTS)
async def test_admin_api_without_permission_is_403_and_changes_nothing(
    server: Server,
    role: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    permission: str,
) -> None:
    """Users and editors get 403 ``insufficient_scope`` naming the missing
    permission on every admin write, and nothing changes."""
    caller = await mallory(server)
    if role != "user":
        await server.bastion.authz.set_user_roles(caller.uuid, [role], actor="test")
        caller = await mallory(server)
    try:
        url = path.format(me=caller.id, admin=server.admin.id)
        response = await server.client.request(method, url, headers=caller.headers, json=body)
        assert_forbidden(response, permission)
        assert await server.bastion.users.get_by_email("sock@example.com") is None
        assert await me_status(server.client, server.admin.access_token) == 200
        assert await me_status(server.client, caller.access_token) == 200
    finally:
        await server.bastion.authz.set_user_roles(caller.uuid, ["user"], actor="test")
    await assert_still_plain_user(server, caller)


# ------------------------------------------------------------------ the token endpoint


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("users:admin", id="users-admin"),
        pytest.param("users:admin roles:admin", id="two-admin-scopes"),
        pytest.param("users:*", id="wildcard"),
        pytest.param("admin", id="role-name"),
        pytest.param("tokens:introspect", id="introspect"),
    ],
)
async def test_login_asking_for_scopes_not_held_is_invalid_scope(
    server: Server, scope: str
) -> None:
    """RFC 6749 §5.2: asking only for scopes the user's roles do not grant is
    ``invalid_scope``; no token is issued."""
    response = await server.client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": MALLORY, "password": PASSWORD, "scope": scope},
    )
    assert_oauth_error(response, 400, "invalid_scope", PASSWORD)
    assert "access_token" not in response.json()


async def test_login_mixing_held_and_unheld_scopes_gets_only_the_held(server: Server) -> None:
    """The unheld part of a request is dropped (RFC 6749 §3.3), never granted."""
    response = await server.client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": MALLORY,
            "password": PASSWORD,
            "scope": "profile users:admin roles:admin",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "profile"
    assert claims(response.json()["access_token"])["scope"] == "profile"


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("profile email", id="back-to-all-user-scopes"),
        pytest.param("users:admin", id="admin-scope"),
        pytest.param("profile users:admin", id="held-plus-admin"),
    ],
)
async def test_refresh_cannot_widen_the_scope(server: Server, scope: str) -> None:
    """RFC 6749 §6: a refresh asking beyond what the login granted is
    ``invalid_scope``, and the refresh token is not spent by the attempt."""
    login = await server.client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": MALLORY,
            "password": PASSWORD,
            "scope": "email",
        },
    )
    refresh_token = login.json()["refresh_token"]
    response = await refresh(server.client, refresh_token, scope=scope)
    assert_oauth_error(response, 400, "invalid_scope", refresh_token)
    again = await refresh(server.client, refresh_token)
    assert again.status_code == 200, again.text
    assert again.json()["scope"] == "email"


# ------------------------------------------------------------------ forged tokens


async def test_token_signed_by_another_key_is_401(server: Server) -> None:
    """Admin roles and scopes in a token signed by a key Bastion never made
    (claiming the real ``kid``) are a 401 ``invalid_token``, never a 2xx."""
    caller = await mallory(server)
    header = pyjwt.get_unverified_header(caller.access_token)
    forged_claims = {
        **claims(caller.access_token),
        "roles": CLOSURES["admin"],
        "scope": " ".join(ADMIN_PERMISSIONS),
    }
    forged = pyjwt.encode(
        forged_claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers=header
    )
    for path in ("/admin/users", "/admin/roles", "/me"):
        response = await server.client.get(path, headers=bearer(forged))
        assert_unauthorized(response, forged)
    await assert_still_plain_user(server, caller)


async def test_roles_claim_without_the_scope_grants_nothing(
    server: Server,
) -> None:
    """A genuine token whose ``roles`` say admin but whose scope lacks
    ``users:admin`` is refused by the admin API: permissions come from scope."""
    caller = await mallory(server)
    issued = await server.bastion.tokens.issue(
        subject=caller.id, scopes=["profile"], roles=CLOSURES["admin"], client_id="bastion"
    )
    headers = bearer(issued.access_token)
    assert await me_status(server.client, issued.access_token) == 200
    for method, path, permission in [
        ("GET", "/admin/users", "users:admin"),
        ("PATCH", f"/admin/users/{caller.id}", "users:admin"),
        ("GET", "/admin/roles", "roles:admin"),
        ("GET", "/admin/audit", "audit:read"),
    ]:
        response = await server.client.request(
            method, path, headers=headers, json={"roles": ["admin"]}
        )
        assert_forbidden(response, permission)
    await assert_still_plain_user(server, caller)


# ------------------------------------------------------------------ demotion


@pytest.mark.parametrize("how", ["patch-roles", "delete-admin-role", "disable"])
async def test_demoted_admins_old_token_is_refused_at_once(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, how: str
) -> None:
    """Strict mode: right after an admin is demoted (roles replaced, the admin
    role deleted, or the account disabled), its old access token is refused
    by the admin API, with no clock movement at all."""
    boss = await admin_account(client, bastion, clock)
    bob = await account(client, bastion, clock, BOB, ["admin"], BOB_PASSWORD)
    assert (await client.get("/admin/users", headers=bob.headers)).status_code == 200
    if how == "patch-roles":
        change = await client.patch(
            f"/admin/users/{bob.id}", headers=boss.headers, json={"roles": ["user"]}
        )
        assert change.status_code == 200, change.text
    elif how == "delete-admin-role":
        change = await client.delete("/admin/roles/admin", headers=boss.headers)
        assert change.status_code == 204, change.text
    else:
        change = await client.patch(
            f"/admin/users/{bob.id}", headers=boss.headers, json={"is_active": False}
        )
        assert change.status_code == 200, change.text
    for path in ("/admin/users", "/admin/roles", f"/admin/users/{bob.id}"):
        assert_unauthorized(await client.get(path, headers=bob.headers), bob.access_token)
    clock.advance(0.001)
    renewed = await refresh(client, bob.refresh_token, scope="users:admin")
    if how == "disable":  # the session ended with the account
        assert_oauth_error(renewed, 400, "invalid_grant", bob.refresh_token)
    else:  # the session lives on, without the permission
        assert renewed.status_code == 200, renewed.text
        assert renewed.json()["scope"] == ""
        refused = await client.get("/admin/users", headers=bearer(renewed.json()["access_token"]))
        assert_forbidden(refused, "users:admin")
        assert "admin" not in await bastion.authz.user_roles(UUID(bob.id))
