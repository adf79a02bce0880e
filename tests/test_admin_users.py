"""``/admin/users``: listing with bounded pages and literal filters, creating
accounts with roles, reading, updating (roles, state) and deleting them, and
ending a user's sessions. Taking a permission away holds at once for strict
routes; every bad input is a 422 problem and writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from tests.admin_flows import (
    ADMIN_PERMISSIONS,
    CLOSURES,
    EDITOR_PERMISSIONS,
    USER_PERMISSIONS,
    Account,
    Server,
    account,
    admin_account,
    assert_unauthorized,
    claims,
    shared_server,
)
from tests.backends import postgres_database
from tests.conftest import PASSWORD
from tests.http_checks import assert_oauth_error, assert_problem
from tests.token_flows import BOB, BOB_PASSWORD, bearer, login, me_status, refresh, register

pytestmark = pytest.mark.anyio

ADMIN_USER_FIELDS = {
    "id",
    "email",
    "username",
    "is_active",
    "email_verified",
    "created_at",
    "updated_at",
    "roles",
}
NEW_PASSWORD = "an entirely different passphrase"
NEWCOMER = "davidson@example.com"


async def list_users(client: httpx.AsyncClient, admin: Account, **params: Any) -> dict[str, Any]:
    response = await client.get("/admin/users", headers=admin.headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "total", "offset", "limit"}
    for item in body["items"]:
        assert set(item) == ADMIN_USER_FIELDS
    return body


async def read_user(client: httpx.AsyncClient, admin: Account, user_id: str) -> dict[str, Any]:
    response = await client.get(f"/admin/users/{user_id}", headers=admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ADMIN_USER_FIELDS
    return body


def emails(page: dict[str, Any]) -> list[str]:
    return [item["email"] for item in page["items"]]


FILTERED = ["a%b@example.net", "a_b@example.net", "axb@example.net", "Mixed@example.org"]
"""Seeded on the shared server after its admin; the domain of ``Mixed@Example.ORG``
is stored lower-cased (email normalisation), its local part as typed."""
EVERYONE = ["root@example.com", *FILTERED, BOB, "carol@example.com"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One server for the tables of refused requests, which must change
    nothing: the admin, the users of :data:`FILTERED`, Bob (logged in, role
    ``user``) and Carol (username ``Taken``), created one second apart."""
    async with shared_server(tmp_path_factory.mktemp("admin-users")) as shared:
        shared.clock.advance(1)
        for email in [*FILTERED[:3], "Mixed@Example.ORG"]:
            shared.clock.advance(1)
            await register(shared.client, email)
        shared.clock.advance(1)
        await account(shared.client, shared.bastion, shared.clock, BOB, None, BOB_PASSWORD)
        shared.clock.advance(1)
        carol = await shared.client.post(
            "/auth/register",
            json={"email": "carol@example.com", "password": PASSWORD, "username": "Taken"},
        )
        assert carol.status_code == 201, carol.text
        yield shared


async def bob_of(server: Server) -> Account:
    """Bob on the shared server, logged in afresh."""
    user = await server.bastion.users.get_by_email(BOB)
    assert user is not None
    server.clock.advance(0.001)
    response = await server.client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": BOB, "password": BOB_PASSWORD},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(str(user.id), BOB, BOB_PASSWORD, body["access_token"], body["refresh_token"])


# ------------------------------------------------------------------ list


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"offset": "-1"}, id="negative-offset"),
        pytest.param({"offset": "1000001"}, id="offset-over-bound"),
        pytest.param({"offset": "1.5"}, id="fractional-offset"),
        pytest.param({"limit": "0"}, id="limit-zero"),
        pytest.param({"limit": "-5"}, id="negative-limit"),
        pytest.param({"limit": "101"}, id="limit-over-100"),
        pytest.param({"limit": "abc"}, id="limit-not-a-number"),
        pytest.param({"limit": ""}, id="limit-empty"),
        pytest.param({"limit": "9" * 40}, id="limit-huge"),
        pytest.param({"active": "maybe"}, id="bad-boolean"),
        pytest.param({"active": "2"}, id="numeric-boolean"),
        pytest.param({"email": "x" * 321}, id="email-filter-too-long"),
        pytest.param({"role": "r" * 65}, id="role-filter-too-long"),
    ],
)
async def test_list_refuses_bad_paging_and_filters(server: Server, params: dict[str, str]) -> None:
    """Out-of-bounds or malformed query parameters are a 422 problem, not a 500."""
    admin = server.admin
    response = await server.client.get("/admin/users", headers=admin.headers, params=params)
    body = assert_problem(response, 422, admin.access_token)
    assert body["errors"]
    assert body["errors"][0]["loc"][0] == "query"


async def test_list_pages_in_creation_order_with_total(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """Users come oldest first; ``total`` counts them all, whatever the page;
    the limit is echoed; an offset past the end is an empty page, not an error."""
    admin = await admin_account(client, bastion, clock)
    made = [admin.email]
    for n in range(5):
        clock.advance(1)
        made.append(f"user{n}@example.com")
        await register(client, made[-1])
    first = await list_users(client, admin, limit=2)
    assert (first["total"], first["offset"], first["limit"]) == (6, 0, 2)
    assert emails(first) == made[:2]
    assert emails(await list_users(client, admin, offset=2, limit=3)) == made[2:5]
    assert emails(await list_users(client, admin, offset=5, limit=100)) == made[5:]
    assert emails(await list_users(client, admin)) == made
    for offset in (6, 1_000_000):
        past = await list_users(client, admin, offset=offset)
        assert (past["items"], past["total"]) == ([], 6)
    [only] = (await list_users(client, admin, limit=1))["items"]
    assert only["roles"] == ["admin"]
    assert "password" not in str(only)
    assert "$argon2" not in str(only)


@pytest.mark.parametrize(
    ("email_filter", "expected"),
    [
        pytest.param("example.net", FILTERED[:3], id="domain"),
        pytest.param("%", ["a%b@example.net"], id="percent-is-literal"),
        pytest.param("_", ["a_b@example.net"], id="underscore-is-literal"),
        pytest.param("a_b", ["a_b@example.net"], id="underscore-not-wildcard"),
        pytest.param("a%", ["a%b@example.net"], id="percent-not-wildcard"),
        pytest.param("\\", [], id="backslash-is-literal"),
        pytest.param("MIXED@example.ORG", ["Mixed@example.org"], id="case-insensitive"),
        pytest.param("nobody", [], id="no-match"),
        pytest.param("", EVERYONE, id="empty-matches-all"),
        pytest.param("'; DROP TABLE users; --", [], id="sql-in-filter"),
    ],
)
async def test_email_filter_is_a_literal_case_insensitive_substring(
    server: Server, email_filter: str, expected: list[str]
) -> None:
    """``email`` matches a substring literally: ``%``, ``_`` and ``\\`` are
    characters, not LIKE wildcards; letter case does not matter."""
    page = await list_users(server.client, server.admin, email=email_filter)
    assert emails(page) == expected
    assert page["total"] == len(expected)


async def test_filter_by_role_and_state(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """``role`` keeps holders of that role (directly), ``active`` filters by
    state; filters combine; an unknown role matches nobody."""
    admin = await admin_account(client, bastion, clock)
    editor = await account(client, bastion, clock, "ed@example.com", ["editor"])
    plain = await register(client, "plain@example.com")
    clock.advance(1)
    gone = await register(client, "gone@example.com")
    await bastion.users.update_user(UUID(gone), now=clock.now(), is_active=False)

    assert emails(await list_users(client, admin, role="editor")) == [editor.email]
    assert emails(await list_users(client, admin, role="user")) == [
        "plain@example.com",
        "gone@example.com",
    ]
    assert emails(await list_users(client, admin, role="nosuchrole")) == []
    assert emails(await list_users(client, admin, active="false")) == ["gone@example.com"]
    inactive = await list_users(client, admin, active="true")
    assert inactive["total"] == 3
    assert plain in [item["id"] for item in inactive["items"]]
    assert emails(await list_users(client, admin, role="user", active="true")) == [
        "plain@example.com"
    ]
    assert (await list_users(client, admin, role="user", active="0"))["total"] == 1


# ------------------------------------------------------------------ create


async def test_create_user_with_roles(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """201 with the user and its roles, never its password; it can log in and
    gets the scopes of those roles."""
    admin = await admin_account(client, bastion, clock)
    response = await client.post(
        "/admin/users",
        headers=admin.headers,
        json={
            "email": BOB,
            "password": BOB_PASSWORD,
            "username": "bob",
            "roles": ["editor"],
            "email_verified": True,
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == ADMIN_USER_FIELDS
    assert (body["email"], body["username"], body["roles"]) == (BOB, "bob", ["editor"])
    assert (body["is_active"], body["email_verified"]) == (True, True)
    assert BOB_PASSWORD not in response.text
    assert "$argon2" not in response.text
    assert await read_user(client, admin, body["id"]) == body
    token = (
        await client.post(
            "/oauth/token",
            data={"grant_type": "password", "username": BOB, "password": BOB_PASSWORD},
        )
    ).json()
    assert token["scope"].split() == EDITOR_PERMISSIONS
    assert claims(token["access_token"])["roles"] == CLOSURES["editor"]


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        pytest.param(None, ["user"], id="omitted-default"),
        pytest.param([], [], id="empty-no-roles"),
        pytest.param(["user", "user"], ["user"], id="duplicates-collapse"),
        pytest.param(["admin", "user"], ["admin", "user"], id="two"),
    ],
)
async def test_create_user_roles_default_when_omitted(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    roles: list[str] | None,
    expected: list[str],
) -> None:
    """Without ``roles`` the default roles are given; an explicit list is taken as is."""
    admin = await admin_account(client, bastion, clock)
    payload: dict[str, Any] = {"email": BOB, "password": BOB_PASSWORD}
    if roles is not None:
        payload["roles"] = roles
    response = await client.post("/admin/users", headers=admin.headers, json=payload)
    assert response.status_code == 201, response.text
    assert response.json()["roles"] == expected
    assert await bastion.authz.user_roles(UUID(response.json()["id"])) == frozenset(expected)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        pytest.param({"roles": ["nosuchrole"]}, None, id="unknown-role"),
        pytest.param({"roles": ["user", "nosuchrole"]}, None, id="one-unknown-role"),
        pytest.param({"roles": ["Admin"]}, None, id="role-upper-case"),
        pytest.param({"roles": "admin"}, None, id="roles-a-string"),
        pytest.param({"roles": [""]}, None, id="role-empty"),
        pytest.param({"is_superuser": True}, None, id="unknown-field"),
        pytest.param({"is_active": False}, None, id="is-active-not-settable"),
        pytest.param({"id": str(uuid4())}, None, id="id-not-settable"),
        pytest.param({"password_hash": "$argon2id$x"}, None, id="hash-not-settable"),
        pytest.param({"password": "football"}, "common", id="weak-common"),
        pytest.param({"password": "shorty"}, "too_short", id="weak-short"),
        pytest.param({"password": "davidson rules"}, "contains_email", id="weak-email"),
        pytest.param({"password": ""}, None, id="empty-password"),
        pytest.param({"email": "not-an-email"}, None, id="bad-email"),
        pytest.param({"username": "has space"}, None, id="bad-username"),
    ],
)
async def test_create_user_refuses_bad_input_and_writes_nothing(
    server: Server, extra: dict[str, Any], reason: str | None
) -> None:
    """422 problem (with the policy's ``reason`` for a weak password); no user is written."""
    payload = {"email": NEWCOMER, "password": BOB_PASSWORD, **extra}
    response = await server.client.post("/admin/users", headers=server.admin.headers, json=payload)
    body = assert_problem(response, 422, payload["password"] or BOB_PASSWORD)
    if reason is not None:
        assert body["reason"] == reason
    assert emails(await list_users(server.client, server.admin)) == EVERYONE
    assert await server.bastion.users.get_by_email(NEWCOMER) is None


@pytest.mark.parametrize("email", [BOB, BOB.upper(), f"  {BOB}"])
async def test_create_user_with_taken_email_is_409(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, email: str
) -> None:
    """An address already registered, in any letter case, is 409; nothing changes."""
    admin = await admin_account(client, bastion, clock)
    bob = await register(client, BOB, BOB_PASSWORD)
    response = await client.post(
        "/admin/users",
        headers=admin.headers,
        json={"email": email, "password": NEW_PASSWORD, "roles": ["admin"]},
    )
    assert_problem(response, 409, NEW_PASSWORD)
    assert (await list_users(client, admin))["total"] == 2
    assert await bastion.authz.user_roles(UUID(bob)) == {"user"}


# ------------------------------------------------------------------ read


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param(str(uuid4()), 404, id="unknown-uuid"),
        pytest.param("not-a-uuid", 422, id="word"),
        pytest.param("123", 422, id="number"),
        pytest.param("00000000-0000-0000-0000-00000000000g", 422, id="bad-hex"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE", "POST-revoke"])
async def test_unknown_or_malformed_user_id(
    server: Server, path: str, status: int, method: str
) -> None:
    """An unknown id is a 404 problem, a malformed one a 422 problem, on every verb."""
    admin, client = server.admin, server.client
    if method == "POST-revoke":
        response = await client.post(f"/admin/users/{path}/sessions/revoke", headers=admin.headers)
    else:
        response = await client.request(
            method, f"/admin/users/{path}", headers=admin.headers, json={"is_active": False}
        )
    assert_problem(response, status, admin.access_token)


# ------------------------------------------------------------------ update


async def test_update_replaces_roles(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """``roles`` replaces the user's direct roles (not adds to them)."""
    admin = await admin_account(client, bastion, clock)
    bob = await account(client, bastion, clock, BOB, ["editor", "user"], BOB_PASSWORD)
    response = await client.patch(
        f"/admin/users/{bob.id}", headers=admin.headers, json={"roles": ["admin"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["admin"]
    assert (await read_user(client, admin, bob.id))["roles"] == ["admin"]
    response = await client.patch(
        f"/admin/users/{bob.id}", headers=admin.headers, json={"roles": []}
    )
    assert response.json()["roles"] == []


async def test_role_change_expires_old_token_and_refresh_brings_new_roles(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """After a role change the user's old access token is refused by strict
    routes (401) at once; the session survives, and a refresh issues a token
    with the new roles claim; its scope stays within the session's original
    grant (RFC 6749 §6), so the new permissions come with the next login."""
    admin = await admin_account(client, bastion, clock)
    bob = await account(client, bastion, clock, BOB, None, BOB_PASSWORD)
    assert await me_status(client, bob.access_token) == 200
    response = await client.patch(
        f"/admin/users/{bob.id}", headers=admin.headers, json={"roles": ["editor"]}
    )
    assert response.status_code == 200, response.text
    assert_unauthorized(await client.get("/me", headers=bob.headers), bob.access_token)
    clock.advance(0.001)
    renewed = await refresh(client, bob.refresh_token)
    assert renewed.status_code == 200, renewed.text
    token = renewed.json()["access_token"]
    assert renewed.json()["scope"].split() == USER_PERMISSIONS
    assert claims(token)["roles"] == CLOSURES["editor"]
    assert await me_status(client, token) == 200
    again = await login(client, BOB, BOB_PASSWORD)
    assert again["scope"].split() == EDITOR_PERMISSIONS


async def test_demotion_narrows_the_refreshed_token(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """A refresh after losing a role keeps only the scopes still held: an
    admin made a plain user refreshes into a user token, not an admin one."""
    admin = await admin_account(client, bastion, clock)
    other = await admin_account(client, bastion, clock, "other-admin@example.com")
    assert claims(other.access_token)["scope"].split() == ADMIN_PERMISSIONS
    response = await client.patch(
        f"/admin/users/{other.id}", headers=admin.headers, json={"roles": ["user"]}
    )
    assert response.status_code == 200, response.text
    clock.advance(0.001)
    renewed = await refresh(client, other.refresh_token)
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["scope"].split() == USER_PERMISSIONS
    assert claims(renewed.json()["access_token"])["roles"] == ["user"]
    refused = await client.get("/admin/users", headers=bearer(renewed.json()["access_token"]))
    assert_problem(refused, 403)


async def test_disabling_ends_sessions_and_access_tokens(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """``is_active: false``: the old access token is 401 on ``/me``, the refresh
    token is dead, and login fails; enabling again lets the user log in."""
    admin = await admin_account(client, bastion, clock)
    bob = await account(client, bastion, clock, BOB, None, BOB_PASSWORD)
    response = await client.patch(
        f"/admin/users/{bob.id}", headers=admin.headers, json={"is_active": False}
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    assert_unauthorized(await client.get("/me", headers=bob.headers), bob.access_token)
    clock.advance(0.001)
    assert_oauth_error(await refresh(client, bob.refresh_token), 400, "invalid_grant")
    form = {"grant_type": "password", "username": BOB, "password": BOB_PASSWORD}
    assert_oauth_error(await client.post("/oauth/token", data=form), 400, "invalid_grant")
    response = await client.patch(
        f"/admin/users/{bob.id}", headers=admin.headers, json={"is_active": True}
    )
    assert response.json()["is_active"] is True
    assert (await client.post("/oauth/token", data=form)).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        pytest.param({"roles": ["nosuchrole"]}, 422, id="unknown-role"),
        pytest.param(
            {"roles": ["user", "nosuchrole"], "is_active": False}, 422, id="unknown-and-state"
        ),
        pytest.param({"roles": ["admin"], "is_superuser": True}, 422, id="unknown-field"),
        pytest.param({"email": "new@example.com"}, 422, id="email-not-settable"),
        pytest.param({"password": NEW_PASSWORD}, 422, id="password-not-settable"),
        pytest.param({"roles": "admin"}, 422, id="roles-a-string"),
        pytest.param({"is_active": "nope"}, 422, id="bad-boolean"),
        pytest.param({"roles": ["admin"], "username": "bad name"}, 422, id="bad-username"),
        pytest.param({"roles": ["admin"], "username": "taken"}, 409, id="username-taken"),
        pytest.param(
            {"roles": ["admin"], "is_active": False, "username": "TAKEN"}, 409, id="taken-and-state"
        ),
    ],
)
async def test_refused_update_changes_nothing(
    server: Server, payload: dict[str, Any], status: int
) -> None:
    """A refused update (422, or 409 for a username taken in another letter
    case) leaves roles, state and the user's tokens exactly as they were."""
    admin, client = server.admin, server.client
    bob = await bob_of(server)
    before = await read_user(client, admin, bob.id)
    response = await client.patch(f"/admin/users/{bob.id}", headers=admin.headers, json=payload)
    assert_problem(response, status, admin.access_token)
    assert await read_user(client, admin, bob.id) == before
    assert await server.bastion.authz.user_roles(bob.uuid) == {"user"}
    assert await me_status(client, bob.access_token) == 200


async def test_update_with_nothing_changed_is_200_without_expiry(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """The same roles again (or an empty body) changes nothing: the user's
    token keeps working."""
    admin = await admin_account(client, bastion, clock)
    bob = await account(client, bastion, clock, BOB, None, BOB_PASSWORD)
    for payload in ({"roles": ["user"]}, {}):
        response = await client.patch(f"/admin/users/{bob.id}", headers=admin.headers, json=payload)
        assert response.status_code == 200, response.text
        assert response.json()["roles"] == ["user"]
    assert await me_status(client, bob.access_token) == 200


# ------------------------------------------------------------------ delete


async def test_delete_user(client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock) -> None:
    """204 with no body, then 404 on read and on a second delete; the user's
    access token is 401 and its refresh token dead."""
    admin = await admin_account(client, bastion, clock)
    bob = await account(client, bastion, clock, BOB, ["editor"], BOB_PASSWORD)
    response = await client.delete(f"/admin/users/{bob.id}", headers=admin.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(await client.get(f"/admin/users/{bob.id}", headers=admin.headers), 404)
    assert_problem(await client.delete(f"/admin/users/{bob.id}", headers=admin.headers), 404)
    assert_unauthorized(await client.get("/me", headers=bob.headers), bob.access_token)
    assert_oauth_error(await refresh(client, bob.refresh_token), 400, "invalid_grant")
    assert emails(await list_users(client, admin)) == [admin.email]


async def test_email_of_a_deleted_user_can_be_registered_again(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """A new account with a deleted user's email gets only the default roles,
    and the old account's token does not work for it."""
    admin = await admin_account(client, bastion, clock)
    bob = await account(client, bastion, clock, BOB, ["admin"], BOB_PASSWORD)
    assert (await client.delete(f"/admin/users/{bob.id}", headers=admin.headers)).status_code == 204
    new_id = await register(client, BOB, NEW_PASSWORD)
    assert new_id != bob.id
    assert (await read_user(client, admin, new_id))["roles"] == ["user"]
    assert_unauthorized(await client.get("/admin/users", headers=bob.headers))


# ------------------------------------------------------------------ sessions


async def test_revoke_sessions_counts_and_ends_them(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """``{"revoked": n}`` for the user's n sessions; its tokens die; a second
    call revokes nothing; the admin's own session is untouched."""
    admin = await admin_account(client, bastion, clock)
    bob = await account(client, bastion, clock, BOB, None, BOB_PASSWORD)
    second = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": BOB, "password": BOB_PASSWORD},
    )
    path = f"/admin/users/{bob.id}/sessions/revoke"
    response = await client.post(path, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"revoked": 2}
    assert_unauthorized(await client.get("/me", headers=bob.headers))
    for token in (bob.refresh_token, second.json()["refresh_token"]):
        assert_oauth_error(await refresh(client, token), 400, "invalid_grant")
    assert (await client.post(path, headers=admin.headers)).json() == {"revoked": 0}
    assert await me_status(client, admin.access_token) == 200
    assert PASSWORD not in response.text


# ------------------------------------------------------------------ text the database refuses


NUL_REQUESTS = [
    pytest.param("GET", "/admin/users", {"email": "a\x00"}, None, id="users-email-filter"),
    pytest.param("GET", "/admin/users", {"role": "\x00"}, None, id="users-role-filter"),
    pytest.param("GET", "/admin/users", {"email": "a\nb"}, None, id="users-newline-filter"),
    pytest.param("GET", "/admin/audit", {"action": "\x00"}, None, id="audit-action-filter"),
    pytest.param("GET", "/admin/audit", {"actor": "a\x00"}, None, id="audit-actor-filter"),
    pytest.param("GET", "/admin/audit", {"target": "\x00"}, None, id="audit-target-filter"),
    pytest.param("GET", "/admin/audit", {"cursor": "\x00"}, None, id="audit-cursor"),
    pytest.param("GET", "/admin/roles/a%00b", None, None, id="role-name-in-path"),
    pytest.param("DELETE", "/admin/roles/user%00", None, None, id="role-delete-path"),
    pytest.param(
        "POST", "/admin/roles", None, {"name": "x", "description": "a\x00"}, id="role-description"
    ),
    pytest.param(
        "PATCH", "/admin/roles/user", None, {"description": "\x00"}, id="role-new-description"
    ),
    pytest.param(
        "POST", "/admin/roles", None, {"name": "y", "permissions": ["a\x00"]}, id="permission"
    ),
    pytest.param(
        "POST",
        "/admin/users",
        None,
        {"email": "nul@example.com", "password": "a long pass\x00phrase"},
        id="password",
    ),
]


async def assert_nul_refused(
    server: Server,
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: dict[str, Any] | None,
) -> None:
    response = await server.client.request(
        method, path, params=params, json=body, headers=server.admin.headers
    )
    assert_problem(response, 422, server.admin.access_token)
    roles = await server.client.get("/admin/roles", headers=server.admin.headers)
    assert [r["name"] for r in roles.json()] == ["admin", "editor", "user"]
    assert all(r["description"] != "\x00" for r in roles.json())


@pytest.mark.parametrize(("method", "path", "params", "body"), NUL_REQUESTS)
async def test_control_characters_in_text_are_422(
    server: Server,
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: dict[str, Any] | None,
) -> None:
    """A NUL (or other control character) in a filter, a role name in the path
    or a stored text is a 422 problem; on SQLite a NUL in LIKE would match
    every user instead."""
    await assert_nul_refused(server, method, path, params, body)


@pytest.fixture(scope="module")
async def pg_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A shared server over a fresh PostgreSQL database."""
    directory = tmp_path_factory.mktemp("admin-pg")
    async with postgres_database() as url, shared_server(directory, url) as shared:
        yield shared


@pytest.mark.postgres
@pytest.mark.parametrize(("method", "path", "params", "body"), NUL_REQUESTS)
async def test_control_characters_in_text_are_422_on_postgres(
    pg_server: Server,
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: dict[str, Any] | None,
) -> None:
    """PostgreSQL refuses a NUL in text with an error: the edge refuses it
    first, so the answer is a 422 problem, never a 500."""
    await assert_nul_refused(pg_server, method, path, params, body)
