"""The CSRF defence of cookie-authenticated requests: the rules in
:mod:`bastion.csrf`, and every way a forged request is refused over HTTP with
nothing changed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bastion.core import Bastion
from bastion.csrf import OriginPolicy, csrf_token_for, derive_csrf_key, origin_of, token_matches
from bastion.errors import CsrfRejected
from tests.conftest import ISSUER, PASSWORD
from tests.http_checks import assert_problem
from tests.session_flows import (
    COOKIE,
    PROBE_METHODS,
    SessionLogin,
    cookie_header,
    probe_client,
    session_login,
)
from tests.token_flows import bearer

pytestmark = pytest.mark.anyio

CROSS_SITE = "Cross-site request refused."
BAD_TOKEN = "CSRF token missing or wrong."


# ------------------------------------------------------------------ the rules


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Example.COM", "https://example.com"),
        ("https://example.com:443/path?q#f", "https://example.com"),
        ("http://example.com:80/", "http://example.com"),
        ("http://localhost:8000/login", "http://localhost:8000"),
        ("https://[2001:db8::1]:8443/x", "https://[2001:db8::1]:8443"),
        ("HTTP://testserver", "http://testserver"),
        ("null", None),
        ("", None),
        ("ftp://example.com", None),
        ("javascript:alert(1)", None),
        ("https://user:pw@example.com", None),
        ("https://example.com:99999", None),
        ("https://exa\nmple.com", None),
        ("//example.com", None),
        ("https://" + "a" * 3000 + ".com", None),
    ],
)
def test_origin_of_serialises_http_origins_only(url: str, origin: str | None) -> None:
    """RFC 6454 §6.2 serialisation: lowercased, default port dropped; anything else None."""
    assert origin_of(url) == origin


POLICY = OriginPolicy(["https://app.example.com", "http://localhost:8000"])


@pytest.mark.parametrize(
    ("origin", "referer", "allowed"),
    [
        ("https://app.example.com", None, True),
        ("https://APP.example.com:443", None, True),
        ("http://localhost:8000", None, True),
        (None, "https://app.example.com/account?tab=keys", True),
        ("https://evil.example", None, False),
        ("https://evil.example", "https://app.example.com/", False),  # Origin decides
        ("https://app.example.com.evil.example", None, False),
        ("http://app.example.com", None, False),  # scheme matters
        ("https://app.example.com:8443", None, False),  # port matters
        ("http://localhost:8001", None, False),
        ("null", None, False),
        ("null", "https://app.example.com/", False),
        ("https://app.example.com/path", None, False),  # not an origin
        ("", None, False),
        (None, None, False),
        (None, "", False),
        (None, "https://evil.example/https://app.example.com/", False),
        (None, "not a url", False),
    ],
)
def test_origin_policy(origin: str | None, referer: str | None, allowed: bool) -> None:
    """Origin when present decides; else Referer; neither, or null, refuses."""
    assert POLICY.allows(origin, referer) is allowed
    if not allowed:
        with pytest.raises(CsrfRejected, match=CROSS_SITE):
            POLICY.check(origin, referer)


@pytest.mark.parametrize(
    "trusted", [[], ["https://a.example/path"], ["a.example"], ["null"], ["https://a.example?q"]]
)
def test_an_origin_policy_needs_real_origins(trusted: list[str]) -> None:
    """No origins, or entries that could never match an Origin header: ValueError."""
    with pytest.raises(ValueError, match="origin"):
        OriginPolicy(trusted)


def test_tokens_are_bound_to_the_session_and_the_key() -> None:
    """Another session or another server key gives another token; comparison is exact."""
    key = derive_csrf_key("server secret one, long enough to be real")
    token = csrf_token_for(key, "a" * 64)
    assert len(token) == 43
    assert token != csrf_token_for(key, "b" * 64)
    assert token != csrf_token_for(derive_csrf_key("another server secret entirely"), "a" * 64)
    assert token_matches(token, token)
    for wrong in [None, "", token[:-1], token + "x", token.upper(), "x" * 10_000, "é" * 43]:
        assert not token_matches(token, wrong)


# ------------------------------------------------------------------ over HTTP


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
async def probe(bastion: Bastion, calls: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async with probe_client(bastion, calls) as http:
        yield http


@pytest.fixture
async def login(client: httpx.AsyncClient, registered: dict[str, str]) -> SessionLogin:
    return await session_login(client, registered["email"], registered["password"])


@pytest.fixture
async def other_login(client: httpx.AsyncClient) -> SessionLogin:
    """Another user's session (for their CSRF token)."""
    email = "mallory@example.com"
    response = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201
    return await session_login(client, email, PASSWORD)


def forged(login: SessionLogin, other: SessionLogin, case: str) -> dict[str, str]:
    """The headers of one kind of forged (or broken) cookie request."""
    cookie = cookie_header(login.cookie)
    token = {"X-CSRF-Token": login.csrf_token}
    same = {"Origin": ISSUER}
    return {
        "no token": {**cookie, **same},
        "empty token": {**cookie, **same, "X-CSRF-Token": ""},
        "wrong token": {**cookie, **same, "X-CSRF-Token": "A" * 43},
        "other session's token": {**cookie, **same, "X-CSRF-Token": other.csrf_token},
        "oversized token": {**cookie, **same, "X-CSRF-Token": "A" * 5000},
        "wrong origin": {**cookie, **token, "Origin": "https://evil.example"},
        "null origin": {**cookie, **token, "Origin": "null"},
        "lookalike origin": {**cookie, **token, "Origin": ISSUER + ".evil.example"},
        "https origin": {**cookie, **token, "Origin": "https://testserver"},
        "no origin, no referer": {**cookie, **token},
        "referer from another site": {**cookie, **token, "Referer": "https://evil.example/x"},
        "null origin, good referer": {
            **cookie,
            **token,
            "Origin": "null",
            "Referer": ISSUER + "/account",
        },
    }[case]


CASES = {
    "no token": BAD_TOKEN,
    "empty token": BAD_TOKEN,
    "wrong token": BAD_TOKEN,
    "other session's token": BAD_TOKEN,
    "oversized token": BAD_TOKEN,
    "wrong origin": CROSS_SITE,
    "null origin": CROSS_SITE,
    "lookalike origin": CROSS_SITE,
    "https origin": CROSS_SITE,
    "no origin, no referer": CROSS_SITE,
    "referer from another site": CROSS_SITE,
    "null origin, good referer": CROSS_SITE,
}


@pytest.mark.parametrize(
    ("case", "method"),
    [(case, "POST") for case in sorted(CASES)]
    + [(case, method) for case in ("no token", "wrong origin") for method in PROBE_METHODS[1:]],
)
async def test_forged_cookie_requests_are_refused_and_change_nothing(
    probe: httpx.AsyncClient,
    login: SessionLogin,
    other_login: SessionLogin,
    calls: list[str],
    case: str,
    method: str,
) -> None:
    """An unsafe method without both proofs: 403 with a clear detail, the
    route never ran, the session still works."""
    response = await probe.request(
        method, "/probe/session", headers=forged(login, other_login, case)
    )
    body = assert_problem(response, 403, login.csrf_token, login.cookie)
    assert body["detail"] == CASES[case]
    assert calls == []
    assert (
        await probe.get("/probe/session", headers=cookie_header(login.cookie))
    ).status_code == 200


@pytest.mark.parametrize("method", PROBE_METHODS)
async def test_both_proofs_let_an_unsafe_request_through(
    probe: httpx.AsyncClient, login: SessionLogin, calls: list[str], method: str
) -> None:
    """The session's token and the issuer's Origin: the request runs as the session user."""
    response = await probe.request(method, "/probe/session", headers=login.headers())
    assert response.status_code == 200, response.text
    assert response.json()["auth_method"] == "session"
    assert calls == [f"session {method}"]


async def test_a_same_site_referer_stands_in_for_a_missing_origin(
    probe: httpx.AsyncClient, login: SessionLogin
) -> None:
    """No Origin (some older clients): the Referer's origin is checked instead."""
    headers = {**login.headers(origin=None), "Referer": ISSUER + "/account?x=1"}
    assert (await probe.post("/probe/session", headers=headers)).status_code == 200


async def test_the_token_may_come_as_a_form_field(
    probe: httpx.AsyncClient, login: SessionLogin, calls: list[str]
) -> None:
    """A plain HTML form sends csrf_token as a field; the route still reads its own fields."""
    response = await probe.post(
        "/probe/session/form",
        data={"csrf_token": login.csrf_token, "note": "hello"},
        headers=login.headers(csrf=False),
    )
    assert response.status_code == 200, response.text
    assert response.json()["note"] == "hello"
    assert calls == ["form hello"]


async def test_a_multipart_form_field_works_too(
    probe: httpx.AsyncClient, login: SessionLogin
) -> None:
    """multipart/form-data carries the field the same way."""
    response = await probe.post(
        "/probe/session/form",
        files={"csrf_token": (None, login.csrf_token), "note": (None, "multi")},
        headers=login.headers(csrf=False),
    )
    assert response.status_code == 200, response.text
    assert response.json()["note"] == "multi"


@pytest.mark.parametrize(
    "fields",
    [
        {"note": "hello"},
        {"note": "hello", "csrf_token": "A" * 43},
        {"note": "hello", "csrf_token": ""},
    ],
)
async def test_a_form_without_the_right_field_is_refused(
    probe: httpx.AsyncClient, login: SessionLogin, calls: list[str], fields: dict[str, str]
) -> None:
    """A form with no token or a wrong one: 403, the route did not run."""
    response = await probe.post(
        "/probe/session/form", data=fields, headers=login.headers(csrf=False)
    )
    assert assert_problem(response, 403)["detail"] == BAD_TOKEN
    assert calls == []


async def test_a_json_body_is_read_once_and_left_to_the_route(
    probe: httpx.AsyncClient, login: SessionLogin, calls: list[str]
) -> None:
    """A JSON route gets its body intact; the token comes from the header only."""
    response = await probe.post(
        "/probe/session/json", json={"note": "intact"}, headers=login.headers()
    )
    assert response.status_code == 200, response.text
    assert response.json()["note"] == "intact"
    refused = await probe.post(
        "/probe/session/json",
        json={"note": "x", "csrf_token": login.csrf_token},
        headers=login.headers(csrf=False),
    )
    assert assert_problem(refused, 403)["detail"] == BAD_TOKEN
    assert calls == ["json intact"]


async def test_a_form_over_the_field_limit_is_a_400_not_a_pass(
    probe: httpx.AsyncClient, login: SessionLogin, calls: list[str]
) -> None:
    """Too many form fields: refused by the form limits, the route never runs."""
    fields = {f"f{i}": "x" for i in range(100)}
    response = await probe.post(
        "/probe/session/form", data=fields, headers=login.headers(csrf=False)
    )
    assert 400 <= response.status_code < 500
    assert calls == []


async def test_a_get_needs_no_csrf_proof(probe: httpx.AsyncClient, login: SessionLogin) -> None:
    """GET from anywhere, without a token, passes: it changes nothing."""
    response = await probe.get(
        "/probe/session", headers=login.headers(csrf=False, origin="https://evil.example")
    )
    assert response.status_code == 200


async def test_bearer_and_api_key_requests_are_exempt(
    probe: httpx.AsyncClient,
    login: SessionLogin,
    access_token: str,
    registered: dict[str, str],
    bastion: Bastion,
    calls: list[str],
) -> None:
    """A bearer token or an API key is no ambient credential: no token, any
    Origin, and a cookie riding along changes nothing."""
    import uuid

    key = (await bastion.api_keys.create(uuid.UUID(registered["id"]), "ci", ["profile"])).key
    hostile = {"Origin": "https://evil.example", **cookie_header(login.cookie)}
    by_bearer = await probe.post("/probe/any", headers={**hostile, **bearer(access_token)})
    assert by_bearer.status_code == 200, by_bearer.text
    assert by_bearer.json()["auth_method"] == "bearer"
    by_key = await probe.delete("/probe/any", headers={**hostile, "X-API-Key": key})
    assert by_key.status_code == 200, by_key.text
    assert by_key.json()["auth_method"] == "api_key"
    by_cookie = await probe.post("/probe/any", headers=hostile)
    assert assert_problem(by_cookie, 403)["detail"] == CROSS_SITE
    assert calls == ["any POST", "any DELETE"]


# ------------------------------------------------------------------ login CSRF and logout


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/login"},
        {"Origin": "https://evil.example", "Referer": ISSUER + "/login"},
    ],
    ids=["no-origin", "evil-origin", "null-origin", "evil-referer", "evil-origin-good-referer"],
)
async def test_a_login_from_another_site_is_refused(
    client: httpx.AsyncClient, registered: dict[str, str], headers: dict[str, str]
) -> None:
    """Login CSRF: the session login needs a trusted Origin (or Referer); no cookie is set."""
    response = await client.post(
        "/auth/session",
        json={"email": registered["email"], "password": PASSWORD},
        headers=headers,
    )
    assert assert_problem(response, 403, PASSWORD)["detail"] == CROSS_SITE
    assert "set-cookie" not in response.headers


async def test_a_login_from_a_referer_of_our_own_site_passes(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """No Origin but our own Referer: the login goes through."""
    response = await client.post(
        "/auth/session",
        json={"email": registered["email"], "password": PASSWORD},
        headers={"Referer": ISSUER + "/login"},
    )
    assert response.status_code == 200, response.text
    assert COOKIE in response.headers["set-cookie"]


@pytest.mark.parametrize("case", ["no token", "other session's token", "wrong origin"])
async def test_a_forged_logout_is_refused(
    client: httpx.AsyncClient, login: SessionLogin, other_login: SessionLogin, case: str
) -> None:
    """DELETE /auth/session is CSRF-checked: a forged logout leaves the session alive."""
    response = await client.delete("/auth/session", headers=forged(login, other_login, case))
    assert assert_problem(response, 403)["detail"] == CASES[case]
    assert "set-cookie" not in response.headers
    alive = await client.get("/auth/session", headers=cookie_header(login.cookie))
    assert alive.status_code == 200


async def test_configured_trusted_origins_replace_the_issuer(
    make_settings: object, clock: object
) -> None:
    """BASTION_CSRF_TRUSTED_ORIGINS: those origins are trusted, the issuer no longer."""
    from collections.abc import Callable

    from bastion.settings import Settings

    assert callable(make_settings)
    factory: Callable[..., Settings] = make_settings
    settings = factory(csrf_trusted_origins="https://app.example.com, http://localhost:5173")
    assert settings.trusted_origins == ["https://app.example.com", "http://localhost:5173"]
    policy = OriginPolicy(settings.trusted_origins)
    assert policy.allows("http://localhost:5173", None)
    assert not policy.allows(ISSUER, None)
    assert OriginPolicy(factory().trusted_origins).allows(ISSUER, None)
