"""``POST /auth/register`` under hostile input: every refusal is an RFC 9457
problem with the right status, never echoes the password and writes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.server.app import create_app
from bastion.settings import Settings
from bastion.stores.sql.migrate import upgrade
from tests.conftest import ISSUER
from tests.http_checks import assert_no_leak, assert_problem

pytestmark = pytest.mark.anyio

PASSWORD = "a long and unusual passphrase"
USER_FIELDS = {"id", "email", "username", "is_active", "email_verified", "created_at"}
MAX_BODY = 65_536


async def register(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/auth/register", json=body)


async def can_log_in(client: httpx.AsyncClient, email: str, password: str) -> bool:
    response = await client.post(
        "/oauth/token", data={"grant_type": "password", "username": email, "password": password}
    )
    assert response.status_code in (200, 400), response.text
    return response.status_code == 200


async def assert_nothing_written(client: httpx.AsyncClient, bastion: Bastion, email: str) -> None:
    """No account exists for ``email``: the store has no such user and the
    address can still be registered."""
    assert await bastion.users.get_by_email(email) is None
    again = await register(client, email=email, password=PASSWORD)
    assert again.status_code == 201, again.text


# ------------------------------------------------------------------ success


async def test_success_answers_exactly_the_public_fields(
    client: httpx.AsyncClient, bastion: Bastion
) -> None:
    """201 with exactly the public user fields; no hash anywhere in the answer."""
    response = await register(client, email="ada@example.com", password=PASSWORD, username="ada")
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["email"] == "ada@example.com"
    assert body["username"] == "ada"
    assert body["is_active"] is True
    assert body["email_verified"] is False
    stored = await bastion.users.get_by_email("ada@example.com")
    assert stored is not None
    assert str(stored.id) == body["id"]
    assert_no_leak(response, PASSWORD, stored.password_hash, "$argon2", "password")


@pytest.mark.parametrize(
    "second",
    ["ada@example.com", "ADA@EXAMPLE.COM", "Ada@Example.Com", "ada@EXAMPLE.com"],
    ids=["same", "upper", "title", "domain-upper"],
)
async def test_duplicate_email_in_any_case_is_409(
    client: httpx.AsyncClient, bastion: Bastion, second: str
) -> None:
    """A taken address, in any letter case, is a 409 problem and leaves the first account alone."""
    first = await register(client, email="ada@example.com", password=PASSWORD)
    assert first.status_code == 201
    other_password = "another quite unusual phrase"
    response = await register(client, email=second, password=other_password)
    assert_problem(response, 409, other_password)
    assert await bastion.users.count() == 1
    assert await can_log_in(client, "ada@example.com", PASSWORD)
    assert not await can_log_in(client, "ada@example.com", other_password)


async def test_duplicate_username_is_409(client: httpx.AsyncClient, bastion: Bastion) -> None:
    """A taken username (case-insensitively) is a 409 problem, and nothing is written."""
    first = await register(client, email="ada@example.com", password=PASSWORD, username="ada")
    assert first.status_code == 201
    response = await register(client, email="bob@example.com", password=PASSWORD, username="ADA")
    assert_problem(response, 409, PASSWORD)
    assert await bastion.users.get_by_email("bob@example.com") is None


# ------------------------------------------------------------------ malformed bodies

SECRET = "Sekret-Passphrase-9731"
"""The password in the bad bodies below: it must never come back."""

BAD_JSON_BODIES: list[Any] = [
    pytest.param([{"email": "x@example.com", "password": SECRET}], id="json-array"),
    pytest.param("x@example.com", id="json-string"),
    pytest.param(None, id="json-null"),
    pytest.param({}, id="empty-object"),
    pytest.param({"password": SECRET}, id="missing-email"),
    pytest.param({"email": "x@example.com"}, id="missing-password"),
    pytest.param({"email": "not-an-email", "password": SECRET}, id="bad-email"),
    pytest.param({"email": "x@", "password": SECRET}, id="email-without-domain"),
    pytest.param({"email": "x@example.com\n", "password": SECRET}, id="email-newline"),
    pytest.param({"email": "a" * 388 + "@example.com", "password": SECRET}, id="email-400-chars"),
    pytest.param({"email": "x@example.com", "password": SECRET * 250}, id="password-5000-chars"),
    pytest.param({"email": "x@example.com", "password": ""}, id="password-empty"),
    pytest.param(
        {"email": "x@example.com", "password": SECRET, "is_active": False}, id="is_active"
    ),
    pytest.param(
        {"email": "x@example.com", "password": SECRET, "email_verified": True},
        id="email_verified",
    ),
    pytest.param({"email": "x@example.com", "password": SECRET, "roles": ["admin"]}, id="roles"),
    pytest.param(
        {
            "email": "x@example.com",
            "password": SECRET,
            "id": "00000000-0000-0000-0000-000000000000",
        },
        id="id",
    ),
    pytest.param(
        {"email": "x@example.com", "password": SECRET, "password_hash": "$argon2id$x"},
        id="password_hash",
    ),
    pytest.param({"email": 12345, "password": SECRET}, id="email-number"),
    pytest.param({"email": "x@example.com", "password": None}, id="password-null"),
    pytest.param({"email": "x@example.com", "password": 12345678}, id="password-number"),
    pytest.param({"email": "x@example.com", "password": [SECRET]}, id="password-list"),
    pytest.param({"email": ["x@example.com"], "password": SECRET}, id="email-list"),
    pytest.param(
        {"email": "x@example.com", "password": SECRET, "username": "a b"}, id="username-space"
    ),
    pytest.param(
        {"email": "x@example.com", "password": SECRET, "username": "a" * 65}, id="username-65"
    ),
    pytest.param(
        {"email": "x@example.com", "password": SECRET, "username": ""}, id="username-empty"
    ),
    pytest.param(
        {"email": "x@example.com", "password": SECRET, "username": "<script>"}, id="username-html"
    ),
    pytest.param(
        {"email": "x@example.com", "password": SECRET, "username": 7}, id="username-number"
    ),
]


@pytest.mark.parametrize("body", BAD_JSON_BODIES)
async def test_bad_json_body_is_422_without_the_password(
    client: httpx.AsyncClient, bastion: Bastion, body: Any
) -> None:
    """A malformed or over-reaching JSON body is a 422 problem naming fields, not the password."""
    response = await client.post("/auth/register", json=body)
    problem = assert_problem(response, 422, SECRET)
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert errors
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}
        assert SECRET not in json.dumps(error)
    assert await bastion.users.count() == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"not json", "application/json", id="not-json"),
        pytest.param(
            b'{"email": "x@example.com", "password": "' + SECRET.encode(),
            "application/json",
            id="truncated-json",
        ),
        pytest.param(b"", "application/json", id="empty"),
        pytest.param(b"\xff\xfe\x00garbage", "application/json", id="binary"),
        pytest.param(
            json.dumps({"email": "x@example.com", "password": SECRET}).encode(),
            "text/plain",
            id="text-plain",
        ),
        pytest.param(
            f"email=x%40example.com&password={SECRET}".encode(),
            "application/x-www-form-urlencoded",
            id="form-encoded",
        ),
        pytest.param(
            b'{"email": "x@example.com", "password": "' + SECRET.encode() + b'", "email": 1}',
            "application/json",
            id="duplicate-key",
        ),
    ],
)
async def test_unparseable_body_is_422(
    client: httpx.AsyncClient, bastion: Bastion, content: bytes, content_type: str
) -> None:
    """A body that is not a JSON object is a 422 problem that does not echo it."""
    response = await client.post(
        "/auth/register", content=content, headers={"content-type": content_type}
    )
    problem = assert_problem(response, 422, SECRET)
    assert problem["errors"]
    assert await bastion.users.count() == 0


async def test_mass_assignment_writes_nothing(client: httpx.AsyncClient, bastion: Bastion) -> None:
    """Smuggled ``is_active``/``email_verified`` refuse the whole registration."""
    email = "mallory@example.com"
    response = await register(
        client, email=email, password=PASSWORD, email_verified=True, is_active=True
    )
    assert_problem(response, 422, PASSWORD)
    assert not await can_log_in(client, email, PASSWORD)
    clean = await register(client, email=email, password=PASSWORD)
    assert clean.status_code == 201
    assert clean.json()["email_verified"] is False


# ------------------------------------------------------------------ password policy


@pytest.mark.parametrize(
    ("email", "password", "reason"),
    [
        pytest.param("ada@example.com", "abc1234", "too_short", id="too-short"),
        pytest.param("ada@example.com", "unusual-" * 17, "too_long", id="too-long-136"),
        pytest.param("ada@example.com", "football", "common", id="common"),
        pytest.param("ada@example.com", "PassWord", "common", id="common-any-case"),
        pytest.param("ada@example.com", "zzzzzzzzzzzz", "common", id="repeated-char"),
        pytest.param(
            "margaret@example.com", "margaret likes tea", "contains_email", id="contains-email"
        ),
        pytest.param(
            "margaret@example.com", "MARGARET LIKES TEA", "contains_email", id="contains-email-case"
        ),
        pytest.param(
            "ada@example.com", "tab\tinside a password", "invalid_characters", id="control-char"
        ),
    ],
)
async def test_password_policy_refusal_is_422_with_reason(
    client: httpx.AsyncClient, bastion: Bastion, email: str, password: str, reason: str
) -> None:
    """A refused password is a 422 problem with ``reason`` and a sentence; nothing is written."""
    response = await register(client, email=email, password=password)
    problem = assert_problem(response, 422, password)
    assert problem["reason"] == reason
    assert problem["detail"].endswith(".")
    assert " " in problem["detail"]
    assert not await can_log_in(client, email, password)
    await assert_nothing_written(client, bastion, email)


# ------------------------------------------------------------------ switched off


@pytest.fixture
async def closed_client(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    """A server with registration switched off."""
    settings = make_settings(allow_registration=False)
    await upgrade(settings.database_url)
    instance = Bastion(settings, clock=clock)
    async with instance.lifespan():
        transport = httpx.ASGITransport(app=create_app(bastion=instance))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            yield http


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": "ada@example.com", "password": PASSWORD}, id="valid"),
        pytest.param({"email": "ada@example.com", "password": "password"}, id="weak-password"),
    ],
)
async def test_registration_switched_off_is_403(
    closed_client: httpx.AsyncClient, body: dict[str, str]
) -> None:
    """With registration off, any well-formed sign-up is a 403 problem and no account appears."""
    response = await closed_client.post("/auth/register", json=body)
    assert_problem(response, 403, body["password"])
    assert not await can_log_in(closed_client, body["email"], body["password"])


# ------------------------------------------------------------------ size limit


def padded_body(size: int) -> bytes:
    """A valid registration body of exactly ``size`` bytes (JSON whitespace padding)."""
    body = json.dumps({"email": "big@example.com", "password": PASSWORD}).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, bastion: Bastion, streamed: bool
) -> None:
    """A body over ``max_body_bytes``, announced or streamed, is a 413 problem; no account."""
    data = padded_body(MAX_BODY + 1)
    content: bytes | AsyncIterator[bytes] = chunks(data) if streamed else data
    response = await client.post(
        "/auth/register", content=content, headers={"content-type": "application/json"}
    )
    assert ("content-length" in response.request.headers) is not streamed
    assert_problem(response, 413, PASSWORD)
    assert await bastion.users.get_by_email("big@example.com") is None


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_at_the_limit_is_accepted(client: httpx.AsyncClient, streamed: bool) -> None:
    """A body of exactly ``max_body_bytes`` is read and served normally."""
    data = padded_body(MAX_BODY)
    content: bytes | AsyncIterator[bytes] = chunks(data) if streamed else data
    response = await client.post(
        "/auth/register", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "length",
    ["not-a-number", "-1", "+2", " 2", "1_0", "99999999999999999999"],
    ids=["text", "negative", "plus", "space", "underscore", "huge"],
)
async def test_malformed_or_huge_content_length_is_refused(
    client: httpx.AsyncClient, length: str
) -> None:
    """A Content-Length that is not a sane number is refused with a problem, never a 500."""
    response = await client.post(
        "/auth/register",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": length},
    )
    assert response.status_code in (400, 413), response.text
    assert_problem(response, response.status_code)
