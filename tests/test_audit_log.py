"""``GET /admin/audit`` and the ``bastion.audit`` log: every admin action is
an event naming its actor, target, the state before and after, and the id of
the request that caused it (``X-Request-ID``); pages walk every event once;
no password or token ever reaches either record."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.settings import Settings
from tests.admin_flows import (
    Account,
    Server,
    account,
    admin_account,
    assert_forbidden,
    shared_server,
)
from tests.conftest import PASSWORD
from tests.http_checks import assert_problem
from tests.token_flows import BOB, BOB_PASSWORD, database_url_for, http_client, register, running

pytestmark = pytest.mark.anyio

EVENT_FIELDS = {
    "id",
    "at",
    "action",
    "actor",
    "target",
    "request_id",
    "before",
    "after",
    "details",
}
NEW_PASSWORD = "an entirely different passphrase"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One server for the refused queries, which must change nothing."""
    async with shared_server(tmp_path_factory.mktemp("audit")) as shared:
        yield shared


async def audit_page(client: httpx.AsyncClient, admin: Account, **params: Any) -> dict[str, Any]:
    response = await client.get("/admin/audit", headers=admin.headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "next_cursor"}
    for event in body["items"]:
        assert set(event) == EVENT_FIELDS
    return body


async def all_events(
    client: httpx.AsyncClient, admin: Account, **params: Any
) -> list[dict[str, Any]]:
    """Every event matching ``params``, newest first, walking the cursor."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await audit_page(
            client, admin, limit=3, **params, **({"cursor": cursor} if cursor else {})
        )
        events.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return events


def role_for(sent: str) -> str:
    """A role name of its own for each request-id case on the shared server."""
    return "r-" + hashlib.sha256(sent.encode()).hexdigest()[:12]


def request_id(step: str) -> dict[str, str]:
    return {"X-Request-ID": f"req-{step}"}


async def admin_actions(
    client: httpx.AsyncClient, admin: Account, clock: FrozenClock
) -> dict[str, Any]:
    """Create Bob, change his roles, create, update and delete a role, end his
    sessions; each request with its own ``X-Request-ID``. Returns what was made."""
    headers = admin.headers
    made: dict[str, Any] = {}
    clock.advance(1)
    response = await client.post(
        "/admin/users",
        headers={**headers, **request_id("create-user")},
        json={"email": BOB, "password": BOB_PASSWORD, "roles": ["user"]},
    )
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == "req-create-user"
    bob = response.json()["id"]
    made["bob"] = bob
    steps: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("update-roles", "PATCH", f"/admin/users/{bob}", {"roles": ["editor"]}),
        (
            "create-role",
            "POST",
            "/admin/roles",
            {"name": "auditor", "permissions": ["audit:read"], "parents": ["user"]},
        ),
        ("update-role", "PATCH", "/admin/roles/auditor", {"permissions": ["audit:read", "email"]}),
        ("delete-role", "DELETE", "/admin/roles/auditor", None),
        ("revoke-sessions", "POST", f"/admin/users/{bob}/sessions/revoke", None),
    ]
    for step, method, path, body in steps:
        clock.advance(1)
        response = await client.request(
            method, path, headers={**headers, **request_id(step)}, json=body
        )
        assert response.status_code < 300, (step, response.text)
        assert response.headers["x-request-id"] == f"req-{step}"
    return made


# ------------------------------------------------------------------ events


async def test_each_admin_action_is_an_event_with_actor_target_and_request_id(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """Each admin action appears once per event kind, with the admin's subject
    as actor, its target, before/after snapshots, and the request's id."""
    admin = await admin_account(client, bastion, clock)
    made = await admin_actions(client, admin, clock)
    bob = made["bob"]
    # the admin's own logins are events too (login.succeeded), not admin actions
    events = [
        e
        for e in await all_events(client, admin, actor=admin.id)
        if e["action"] not in {"login.succeeded", "token.refreshed"}
    ]
    by_action = {e["action"]: e for e in events}
    expected = {
        "user.created": ("req-create-user", bob),
        "user.roles_changed": ("req-update-roles", bob),
        "user.updated": ("req-update-roles", bob),
        "role.created": ("req-create-role", "auditor"),
        "role.updated": ("req-update-role", "auditor"),
        "role.deleted": ("req-delete-role", "auditor"),
        "sessions.revoked_all": ("req-revoke-sessions", bob),
    }
    assert sorted(e["action"] for e in events) == sorted(expected)
    for action, (rid, target) in expected.items():
        event = by_action[action]
        assert (event["actor"], event["target"], event["request_id"]) == (admin.id, target, rid)

    created = by_action["user.created"]
    assert created["before"] is None
    assert created["after"]["email"] == BOB
    assert created["after"]["roles"] == ["user"]
    changed = by_action["user.roles_changed"]
    assert (changed["before"], changed["after"]) == ({"roles": ["user"]}, {"roles": ["editor"]})
    updated = by_action["user.updated"]
    assert (updated["before"]["roles"], updated["after"]["roles"]) == (["user"], ["editor"])
    role_created = by_action["role.created"]
    assert role_created["after"]["permissions"] == ["audit:read"]
    assert role_created["after"]["parents"] == ["user"]
    role_updated = by_action["role.updated"]
    assert role_updated["before"]["permissions"] == ["audit:read"]
    assert role_updated["after"]["permissions"] == ["audit:read", "email"]
    deleted = by_action["role.deleted"]
    assert deleted["before"]["name"] == "auditor"
    assert deleted["after"] is None
    revoked = by_action["sessions.revoked_all"]
    assert revoked["details"]["reason"] == "admin_request"
    ats = [e["at"] for e in events]
    assert ats == sorted(ats, reverse=True)


async def test_user_deletion_is_an_event(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """Deleting a user records who it was (``before``) under the admin's name."""
    admin = await admin_account(client, bastion, clock)
    bob = await register(client, BOB, BOB_PASSWORD)
    response = await client.delete(
        f"/admin/users/{bob}", headers={**admin.headers, **request_id("delete")}
    )
    assert response.status_code == 204, response.text
    [event] = (await audit_page(client, admin, action="user.deleted"))["items"]
    assert (event["actor"], event["target"], event["request_id"]) == (admin.id, bob, "req-delete")
    assert event["before"]["email"] == BOB
    assert event["before"]["roles"] == ["user"]


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param("has spaces in it", id="spaces"),
        pytest.param("x" * 100, id="100-chars"),
        pytest.param("x" * 65, id="65-chars"),
        pytest.param("", id="empty"),
        pytest.param("a\tb", id="tab"),
        pytest.param("id;drop", id="semicolon"),
        pytest.param("caf\u00e9", id="latin-1"),
        pytest.param("<script>", id="markup"),
    ],
)
async def test_malformed_request_id_is_replaced(server: Server, sent: str) -> None:
    """A malformed ``X-Request-ID`` is not trusted: the response carries a
    generated id instead, and the audit event that id."""
    name = role_for(sent)
    response = await server.client.post(
        "/admin/roles",
        headers={**server.admin.headers, "X-Request-ID": sent.encode("latin-1")},  # type: ignore[dict-item]
        json={"name": name},
    )
    assert response.status_code == 201, response.text
    generated = response.headers["x-request-id"]
    assert generated != sent
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    [event] = (await audit_page(server.client, server.admin, target=name))["items"]
    assert event["request_id"] == generated


@pytest.mark.parametrize(
    "sent", ["a", "x" * 64, "0f8c2e6a-3b1d-4c5e-9f7a-1b2c3d4e5f60", "trace:1.2_3-4"]
)
async def test_well_formed_request_id_is_echoed(server: Server, sent: str) -> None:
    """A sane ``X-Request-ID`` (up to 64 of ``A-Za-z0-9._:-``) is echoed and recorded."""
    name = role_for(sent)
    response = await server.client.post(
        "/admin/roles",
        headers={**server.admin.headers, "X-Request-ID": sent},
        json={"name": name},
    )
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == sent
    [event] = (await audit_page(server.client, server.admin, target=name))["items"]
    assert event["request_id"] == sent


# ------------------------------------------------------------------ paging and filters


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_cursor_walks_every_event_once(
    make_settings: Callable[..., Settings], clock: FrozenClock, backend: str
) -> None:
    """Pages of three, following ``next_cursor``, return every event exactly
    once, newest first, ending with ``next_cursor: null``; events recorded at
    the same instant are neither skipped nor repeated."""
    async with database_url_for(backend, make_settings) as url:
        settings = make_settings(database_url=url)
        async with running(settings, clock) as bastion, http_client(bastion) as client:
            admin = await admin_account(client, bastion, clock)
            await admin_actions(client, admin, clock)
            for n in range(4):  # four events at one instant
                await bastion.authz.create_role(f"same-{n}", actor="test")
            everything = (await audit_page(client, admin, limit=100))["items"]
            assert len(everything) >= 12
            walked = await all_events(client, admin)
            assert [e["id"] for e in walked] == [e["id"] for e in everything]
            assert len({e["id"] for e in walked}) == len(walked)
            keys = [(datetime.fromisoformat(e["at"]), e["id"]) for e in walked]
            assert keys == sorted(keys, reverse=True)
            last = await audit_page(client, admin, limit=len(everything))
            assert last["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param("", id="empty"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param("W10", id="empty-list"),
        pytest.param("eyJhIjoxfQ", id="an-object"),
        pytest.param("WyJ4IiwieSJd", id="not-a-date"),
        pytest.param("WyIyMDMwLTAxLTAxVDAwOjAwOjAwIiwieCJd", id="naive-date-bad-id"),
        pytest.param("A" * 300, id="too-long-for-decoder"),
        pytest.param("A" * 513, id="too-long-for-query"),
        pytest.param("\u00e9t\u00e9", id="non-ascii"),
        pytest.param("[[[[[[[[[[", id="brackets"),
    ],
)
async def test_bad_cursor_is_422_problem(server: Server, cursor: str) -> None:
    """A cursor the server did not make is a 422 problem, never a 500."""
    response = await server.client.get(
        "/admin/audit", headers=server.admin.headers, params={"cursor": cursor}
    )
    assert_problem(response, 422, server.admin.access_token)


@pytest.mark.parametrize("limit", ["0", "-1", "101", "abc", "1e3", ""])
async def test_limit_out_of_bounds_is_422_problem(server: Server, limit: str) -> None:
    """``limit`` must be 1 to 100."""
    response = await server.client.get(
        "/admin/audit", headers=server.admin.headers, params={"limit": limit}
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["query", "limit"]


async def test_filters_by_action_actor_and_target(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """``action``, ``actor`` and ``target`` each keep only matching events and
    combine; a filter matching nothing is an empty last page."""
    admin = await admin_account(client, bastion, clock)
    made = await admin_actions(client, admin, clock)
    bob = made["bob"]
    await bastion.authz.create_role("by-test", actor="test")

    roles_created = await all_events(client, admin, action="role.created")
    assert {e["target"] for e in roles_created} == {"auditor", "by-test"}
    by_test = await all_events(client, admin, actor="test")
    assert {(e["action"], e["target"]) for e in by_test} >= {("role.created", "by-test")}
    assert all(e["actor"] == "test" for e in by_test)
    about_bob = await all_events(client, admin, target=bob)
    assert {e["action"] for e in about_bob} == {
        "user.created",
        "user.roles_changed",
        "user.updated",
        "sessions.revoked_all",
    }
    combined = await all_events(client, admin, action="role.created", actor=admin.id)
    assert [e["target"] for e in combined] == ["auditor"]
    for params in ({"action": "nothing.like.this"}, {"actor": "nobody"}, {"target": "x"}):
        page = await audit_page(client, admin, **params)
        assert page == {"items": [], "next_cursor": None}


# ------------------------------------------------------------------ secrets


async def test_no_password_or_token_in_the_audit_trail(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the ``bastion.audit`` log lines nor the API's events contain any
    password or token used during the test, however the events came about."""
    with caplog.at_level("INFO", logger="bastion.audit"):
        admin = await admin_account(client, bastion, clock)
        made = await admin_actions(client, admin, clock)
        carol = await account(client, bastion, clock, "carol@example.com", ["editor"])
        changed = await client.post(
            "/me/password",
            headers=carol.headers,
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        )
        assert changed.status_code == 204, changed.text
        refused = await client.post(
            "/oauth/token",
            data={"grant_type": "password", "username": BOB, "password": "wrong " + BOB_PASSWORD},
        )
        assert refused.status_code == 400
        logout = await client.post(
            "/auth/logout", headers=admin.headers, json={"refresh_token": admin.refresh_token}
        )
        assert logout.status_code == 204, logout.text
        admin = await admin_account(client, bastion, clock, "second@example.com")
        api = await all_events(client, admin)
    lines = [r.getMessage() for r in caplog.records if r.name == "bastion.audit"]
    assert len(lines) >= len(api) >= 10
    for line in lines:
        json.loads(line)
    secrets = [
        PASSWORD,
        BOB_PASSWORD,
        NEW_PASSWORD,
        admin.access_token,
        admin.refresh_token,
        carol.access_token,
        carol.refresh_token,
    ]
    recorded = "\n".join([*lines, json.dumps(api)])
    for secret in secrets:
        assert secret not in recorded
    for token in (admin.access_token, carol.access_token):
        assert token.split(".")[2] not in recorded  # not even the signature
    assert "$argon2" not in recorded
    assert made["bob"] in recorded


@pytest.mark.parametrize("role", ["user", "editor"])
async def test_non_admin_is_403(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, role: str
) -> None:
    """Reading the audit log needs ``audit:read``: 403 ``insufficient_scope`` otherwise."""
    caller = await account(client, bastion, clock, "someone@example.com", [role])
    response = await client.get("/admin/audit", headers=caller.headers)
    assert_forbidden(response, "audit:read")
    assert "items" not in response.text
