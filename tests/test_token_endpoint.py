"""``POST /oauth/token`` under hostile input: every refusal is an RFC 6749 §5.2
error (``error``, ``error_description``) with ``Cache-Control: no-store``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from uuid import UUID

import httpx
import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.server.app import create_app
from bastion.settings import Settings
from bastion.stores.sql.migrate import upgrade
from tests.conftest import ISSUER
from tests.http_checks import assert_no_leak, assert_oauth_error

pytestmark = pytest.mark.anyio

EMAIL = "alice@example.com"
OTHER_PASSWORD = "a long and unusual passphrase"


def grant(registered: dict[str, str], **overrides: str | None) -> dict[str, str]:
    """A valid password-grant form for ``registered``, with ``overrides``
    applied (``None`` removes a field)."""
    form: dict[str, str | None] = {
        "grant_type": "password",
        "username": registered["email"],
        "password": registered["password"],
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


@asynccontextmanager
async def server(settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    """A client for another Bastion started from ``settings``."""
    await upgrade(settings.database_url)
    instance = Bastion(settings, clock=clock)
    async with instance.lifespan():
        transport = httpx.ASGITransport(app=create_app(bastion=instance))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            yield http


# ------------------------------------------------------------------ success


async def test_success_shape_and_no_store(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """RFC 6749 §5.1: a Bearer token, its lifetime and scope, never cached."""
    response = await client.post("/oauth/token", data=grant(registered))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    required = {"access_token", "token_type", "expires_in", "scope"}
    assert required <= set(body) <= required | {"refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert set(body["scope"].split(" ")) == {"profile", "email"}
    assert body["access_token"].count(".") == 2
    assert_no_leak(response, registered["password"])


@pytest.mark.parametrize(
    "username",
    ["ALICE@EXAMPLE.COM", "Alice@Example.com", "alice@EXAMPLE.COM", "  alice@example.com "],
    ids=["upper", "title", "domain-upper", "surrounding-spaces"],
)
async def test_login_with_the_email_in_another_case(
    client: httpx.AsyncClient, registered: dict[str, str], username: str
) -> None:
    """The email is matched case-insensitively at login."""
    response = await client.post("/oauth/token", data=grant(registered, username=username))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        pytest.param("profile", "profile", id="profile"),
        pytest.param("email", "email", id="email"),
        pytest.param("email profile", "email profile", id="both"),
        pytest.param("profile  profile ", "profile", id="repeated-and-spaces"),
        pytest.param("", "email profile", id="empty-means-default"),
    ],
)
async def test_scope_narrowing(
    client: httpx.AsyncClient, registered: dict[str, str], requested: str, granted: str
) -> None:
    """RFC 6749 §3.3: the token carries the scopes asked for, or all by default."""
    response = await client.post("/oauth/token", data=grant(registered, scope=requested))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == granted


# ------------------------------------------------------------------ invalid_request

LONG = "x" * 5000


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"grant_type": None}, id="missing-grant_type"),
        pytest.param({"grant_type": ""}, id="empty-grant_type"),
        pytest.param({"username": None}, id="missing-username"),
        pytest.param({"username": ""}, id="empty-username"),
        pytest.param({"password": None}, id="missing-password"),
        pytest.param({"password": ""}, id="empty-password"),
        pytest.param({"username": LONG}, id="username-5000"),
        pytest.param({"password": LONG}, id="password-5000"),
        pytest.param({"grant_type": LONG}, id="grant_type-5000"),
        pytest.param({"scope": LONG}, id="scope-5000"),
        pytest.param({"client_id": LONG}, id="client_id-5000"),
        pytest.param({"client_secret": LONG}, id="client_secret-5000"),
    ],
)
async def test_missing_or_oversized_field_is_invalid_request(
    client: httpx.AsyncClient, registered: dict[str, str], overrides: dict[str, str | None]
) -> None:
    """A missing, empty (RFC 6749 §3.1) or huge parameter is ``invalid_request``."""
    response = await client.post("/oauth/token", data=grant(registered, **overrides))
    assert_oauth_error(response, 400, "invalid_request", registered["password"], LONG)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(
            b'{"grant_type": "password", "username": "alice@example.com", '
            b'"password": "correct horse battery staple"}',
            "application/json",
            id="json-body",
        ),
        pytest.param(b"", "application/x-www-form-urlencoded", id="empty-body"),
        pytest.param(b"", None, id="no-body-no-type"),
        pytest.param(b"\x00\xff\xfe&&==&", "application/x-www-form-urlencoded", id="binary-form"),
        pytest.param(b"garbage", "multipart/form-data", id="multipart-no-boundary"),
        pytest.param(
            b"--xx\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n--xx--\r\n",
            "multipart/form-data; boundary=xx",
            id="multipart-part-without-name",
        ),
        pytest.param(b"--xx\r\ngarbage", "multipart/form-data; boundary=xx", id="multipart-cut"),
        pytest.param(
            b"grant_type=password&username=alice%40example.com"
            b"&password=correct+horse+battery+staple",
            "text/plain",
            id="form-as-text-plain",
        ),
    ],
)
async def test_malformed_body_is_invalid_request(
    client: httpx.AsyncClient,
    registered: dict[str, str],
    content: bytes,
    content_type: str | None,
) -> None:
    """A body that is not a usable form is ``invalid_request``, not a 422 or 500."""
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/oauth/token", content=content, headers=headers)
    assert_oauth_error(response, 400, "invalid_request", registered["password"])


async def test_repeated_parameter_does_not_crash(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """A repeated parameter (RFC 6749 §3.2 forbids it) is a 200 or an OAuth error, never a 500."""
    content = (
        b"grant_type=password&grant_type=client_credentials&username=alice%40example.com"
        b"&password=correct+horse+battery+staple"
    )
    response = await client.post(
        "/oauth/token",
        content=content,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        error = response.json()["error"]
        assert error in {"invalid_request", "unsupported_grant_type"}
        assert_oauth_error(response, 400, error, registered["password"])


# ------------------------------------------------------------------ unsupported_grant_type


@pytest.mark.parametrize(
    "grant_type",
    [
        pytest.param("authorization_code", id="authorization_code"),
        pytest.param("urn:ietf:params:oauth:grant-type:jwt-bearer", id="jwt-bearer"),
        pytest.param("PASSWORD", id="upper-case"),
        pytest.param("Password", id="title-case"),
        pytest.param(" password", id="leading-space"),
        pytest.param("password\x00", id="nul"),
        pytest.param('pass"word\\', id="quote-backslash"),
        pytest.param("g" * 4000, id="very-long"),
    ],
)
async def test_unknown_grant_is_unsupported_grant_type(
    client: httpx.AsyncClient, registered: dict[str, str], grant_type: str
) -> None:
    """Any grant but the exact supported names is ``unsupported_grant_type``, text kept short."""
    response = await client.post("/oauth/token", data=grant(registered, grant_type=grant_type))
    body = assert_oauth_error(response, 400, "unsupported_grant_type", registered["password"])
    assert len(body["error_description"]) < 200
    if len(grant_type) > 100:
        assert grant_type not in response.text


async def test_password_grant_switched_off(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """With ``allow_password_grant=False`` even valid credentials get ``unsupported_grant_type``."""
    async with server(make_settings(allow_password_grant=False), clock) as http:
        created = await http.post(
            "/auth/register", json={"email": EMAIL, "password": OTHER_PASSWORD}
        )
        assert created.status_code == 201, created.text
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "password", "username": EMAIL, "password": OTHER_PASSWORD},
        )
        assert_oauth_error(response, 400, "unsupported_grant_type", OTHER_PASSWORD)
        meta = (await http.get("/.well-known/oauth-authorization-server")).json()
        assert "password" not in meta["grant_types_supported"]


# ------------------------------------------------------------------ invalid_grant


async def test_wrong_password_unknown_and_disabled_user_answer_identically(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, registered: dict[str, str]
) -> None:
    """Wrong password, unknown user, disabled user: one identical ``invalid_grant``."""
    wrong = await client.post("/oauth/token", data=grant(registered, password="not the password"))
    unknown = await client.post(
        "/oauth/token", data=grant(registered, username="nobody@example.com")
    )
    await bastion.users.set_active(UUID(registered["id"]), False, now=clock.now())
    disabled = await client.post("/oauth/token", data=grant(registered))

    bodies = []
    for response in (wrong, unknown, disabled):
        bodies.append(
            assert_oauth_error(
                response, 400, "invalid_grant", registered["password"], "not the password"
            )
        )
        assert "nobody" not in response.text
        assert "alice" not in response.text
    assert bodies[0] == bodies[1] == bodies[2]
    assert wrong.content == unknown.content == disabled.content
    headers = [
        {k: v for k, v in r.headers.items() if k not in {"content-length", "x-request-id"}}
        for r in (wrong, unknown, disabled)
    ]
    assert headers[0] == headers[1] == headers[2]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"username": "not-an-email"}, id="username-not-an-email"),
        pytest.param({"username": "alice@example.com\x00"}, id="username-nul"),
        pytest.param({"username": "alice@example.com' OR '1'='1"}, id="username-sql"),
        pytest.param({"password": "correct horse battery staple "}, id="password-trailing-space"),
        pytest.param({"password": "CORRECT HORSE BATTERY STAPLE"}, id="password-other-case"),
        pytest.param({"password": "correct horse battery staple\x00"}, id="password-nul"),
        pytest.param({"password": "x" * 4096}, id="password-4096"),
    ],
)
async def test_odd_credentials_are_invalid_grant(
    client: httpx.AsyncClient, registered: dict[str, str], overrides: dict[str, str]
) -> None:
    """Odd but well-formed credentials are a plain ``invalid_grant``, never a 500."""
    response = await client.post("/oauth/token", data=grant(registered, **overrides))
    assert_oauth_error(response, 400, "invalid_grant", registered["password"])


@pytest.mark.parametrize(
    "password",
    [
        pytest.param(b"%ED%A0%80", id="lone-surrogate-utf8"),
        pytest.param(b"%FF%FE", id="invalid-utf8"),
        pytest.param(b"%C0%AF", id="overlong-utf8"),
    ],
)
async def test_undecodable_password_is_invalid_grant(
    client: httpx.AsyncClient, registered: dict[str, str], password: bytes
) -> None:
    """A password whose bytes are not valid UTF-8 is a plain ``invalid_grant``, never a 500."""
    content = b"grant_type=password&username=alice%40example.com&password=" + password
    response = await client.post(
        "/oauth/token",
        content=content,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(response, 400, "invalid_grant", registered["password"])


# ------------------------------------------------------------------ invalid_scope


async def test_partly_grantable_scope_is_narrowed(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """RFC 6749 §3.3: scopes the user's roles do not allow are dropped; the rest is granted."""
    response = await client.post("/oauth/token", data=grant(registered, scope="profile admin"))
    assert response.status_code == 200
    assert response.json()["scope"] == "profile"


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("admin", id="unknown"),
        pytest.param("PROFILE", id="case-matters"),
        pytest.param("profile\x00", id="nul"),
        pytest.param("profile\temail", id="tab"),
        pytest.param("profile\nemail", id="newline"),
        pytest.param("profile\x7f", id="del"),
        pytest.param('"profile"', id="quotes"),
        pytest.param("profile\\", id="backslash"),
        pytest.param("profilé", id="non-ascii"),
        pytest.param("profile " * 300, id="over-2048-chars"),
    ],
)
async def test_bad_scope_is_invalid_scope(
    client: httpx.AsyncClient, registered: dict[str, str], scope: str
) -> None:
    """RFC 6749 §3.3: an unknown scope, or one outside the token grammar, is ``invalid_scope``."""
    response = await client.post("/oauth/token", data=grant(registered, scope=scope))
    body = assert_oauth_error(response, 400, "invalid_scope", registered["password"])
    assert "\x00" not in body["error_description"]


# ------------------------------------------------------------------ invalid_client


@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param("evil-app", id="unknown"),
        pytest.param("BASTION", id="case-matters"),
        pytest.param("bastion\x00", id="nul"),
        pytest.param('"><script>', id="html"),
    ],
)
async def test_unknown_client_is_invalid_client_401(
    client: httpx.AsyncClient, registered: dict[str, str], client_id: str
) -> None:
    """RFC 6749 §5.2: an unknown client is 401 ``invalid_client`` with ``WWW-Authenticate``."""
    response = await client.post("/oauth/token", data=grant(registered, client_id=client_id))
    assert_oauth_error(response, 401, "invalid_client", registered["password"])
    assert response.headers["www-authenticate"]
    assert "access_token" not in response.text


async def test_builtin_client_id_is_accepted(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """``client_id=bastion`` is the first-party client that sending none implies."""
    response = await client.post("/oauth/token", data=grant(registered, client_id="bastion"))
    assert response.status_code == 200, response.text


# ------------------------------------------------------------------ methods


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(client: httpx.AsyncClient, method: str) -> None:
    """RFC 6749 §3.2: the token endpoint takes POST only."""
    response = await client.request(method, "/oauth/token")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert_no_leak(response)


# ------------------------------------------------------------------ hash upgrade


async def test_login_upgrades_a_hash_made_with_other_argon2_parameters(
    client: httpx.AsyncClient,
    bastion: Bastion,
    registered: dict[str, str],
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
) -> None:
    """A successful login re-hashes a password stored with an older argon2 time cost."""
    before = await bastion.users.get_by_email(registered["email"])
    assert before is not None
    assert ",t=1," in before.password_hash

    async with server(make_settings(argon2_time_cost=2), clock) as upgraded:
        response = await upgraded.post("/oauth/token", data=grant(registered))
        assert response.status_code == 200, response.text

    after = await bastion.users.get_by_email(registered["email"])
    assert after is not None
    assert ",t=2," in after.password_hash
    assert after.password_hash != before.password_hash
    # The new hash still verifies, with either server.
    again = await client.post("/oauth/token", data=grant(registered))
    assert again.status_code == 200, again.text


async def test_failed_login_does_not_touch_the_hash(
    bastion: Bastion,
    registered: dict[str, str],
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
) -> None:
    """A wrong password at a server with other argon2 parameters leaves the stored hash alone."""
    before = await bastion.users.get_by_email(registered["email"])
    assert before is not None
    async with server(make_settings(argon2_time_cost=2), clock) as upgraded:
        response = await upgraded.post("/oauth/token", data=grant(registered, password="wrong!!"))
        assert_oauth_error(response, 400, "invalid_grant")
    after = await bastion.users.get_by_email(registered["email"])
    assert after is not None
    assert after.password_hash == before.password_hash
