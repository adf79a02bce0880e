"""The HTML pages over HTTP (ASGI, no browser): what each page renders and
its headers, labels on every field, the login form (errors, origin check,
no open redirect, rotation), CSRF on every action, and tables of bad input.
The browser tests (test_pages_browser.py, test_cross_site.py) drive the same
pages in Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import httpx
import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.security_headers import PAGES_CSP
from bastion.settings import Settings
from tests.conftest import ISSUER, PASSWORD
from tests.limit_flows import install_wall_clock
from tests.secrets_in_logs import register
from tests.token_flows import http_client, running

pytestmark = pytest.mark.anyio

COOKIE = "__Host-bastion_session"
SAME_ORIGIN = {"Origin": ISSUER}
NEW_PASSWORD = "an entirely new passphrase"
EVIL = "https://evil.example"


# ------------------------------------------------------------------ HTML reading


@dataclass
class Page:
    """What the tests read from a page: fields, labels, hidden values, text."""

    fields: list[dict[str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    hidden: dict[str, str] = field(default_factory=dict)
    forms: list[str] = field(default_factory=list)
    headings: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    lang: str | None = None
    secret: str | None = None


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self._capture: list[str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.page.lang = a.get("lang")
        elif tag == "form":
            self.page.forms.append(a.get("action", ""))
        elif tag == "label":
            self.page.labels.append(a.get("for", ""))
        elif tag in ("input", "select", "textarea"):
            if a.get("type") == "hidden":
                self.page.hidden[a.get("name", "")] = a.get("value", "")
            elif a.get("type") not in ("submit", "button"):
                self.page.fields.append(a)
        elif tag == "output":
            self.page.fields.append(a)
        if tag in ("h1", "h2", "h3") or (tag in ("p", "output") and self._role(tag, a)):
            self._capture = self._text = []
            self._target = (tag, self._role(tag, a))

    @staticmethod
    def _role(tag: str, a: dict[str, str]) -> str:
        if tag == "output":
            return "secret"
        return a.get("role", "")

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._capture.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._capture is None or tag != self._target[0]:
            return
        text = " ".join("".join(self._capture).split())
        role = self._target[1]
        if tag.startswith("h"):
            self.page.headings.append(text)
        elif role == "alert":
            self.page.alerts.append(text)
        elif role == "status":
            self.page.notices.append(text)
        elif role == "secret":
            self.page.secret = text
        self._capture = None


def read(response: httpx.Response) -> Page:
    reader = _Reader()
    reader.feed(response.text)
    return reader.page


# ------------------------------------------------------------------ sessions by hand


@dataclass
class Browser:
    """A signed-in browser: its cookie and the CSRF token of its pages.

    The cookie goes by hand: it is ``Secure``, the test server is plain
    ``http://testserver``, and httpx's cookie jar would not send it back."""

    cookie: str
    csrf: str

    def headers(self, origin: str | None = ISSUER) -> dict[str, str]:
        headers = {"Cookie": f"{COOKIE}={self.cookie}"}
        if origin is not None:
            headers["Origin"] = origin
        return headers


def set_cookie(response: httpx.Response) -> dict[str, str] | None:
    """The session cookie's ``Set-Cookie``, parsed (lower-case attribute names)."""
    for line in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in line.split(";"))
        name, _, value = first.partition("=")
        if name == COOKIE:
            parsed = {"value": value.strip('"')}
            for attribute in attributes:
                key, _, val = attribute.partition("=")
                parsed[key.lower()] = val
            return parsed
    return None


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **headers: str
) -> Browser:
    """Sign in through the login form and read the CSRF token off /account."""
    response = await client.post(
        "/login",
        data={"email": email, "password": password, "next": "/account"},
        headers={**SAME_ORIGIN, **headers},
    )
    assert response.status_code == 303, response.text
    cookie = set_cookie(response)
    assert cookie is not None
    account = await client.get("/account", headers={"Cookie": f"{COOKIE}={cookie['value']}"})
    assert account.status_code == 200, account.text
    browser = Browser(cookie["value"], read(account).hidden["csrf_token"])
    register(browser.cookie, browser.csrf)
    return browser


@pytest.fixture
async def signed_in(client: httpx.AsyncClient, registered: dict[str, str]) -> Browser:
    return await sign_in(client, registered["email"])


async def new_user(client: httpx.AsyncClient, email: str) -> str:
    response = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    user_id: str = response.json()["id"]
    return user_id


def location(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return response.headers["location"]


# ------------------------------------------------------------------ every page


def assert_page_headers(response: httpx.Response) -> None:
    """HTML, never cached, the pages' CSP, same-origin referrers only."""
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers.get_list("content-security-policy") == [PAGES_CSP]
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def assert_accessible(response: httpx.Response) -> Page:
    """A language, one h1, every field labelled (a ``<label for>`` naming its
    unique id), no script and no inline style."""
    page = read(response)
    assert page.lang == "en"
    assert len([h for h in page.headings if h]) >= 1
    assert response.text.count("<h1>") == 1
    ids = [f.get("id", "") for f in page.fields]
    assert all(ids), f"a field without an id: {page.fields}"
    assert len(ids) == len(set(ids))
    missing = [i for i in ids if i not in page.labels]
    assert not missing, f"fields without a label: {missing}"
    text = response.text.lower()
    assert "<script" not in text
    assert "<style" not in text
    assert " style=" not in text
    assert re.search(r"\son[a-z]+=", text) is None  # no inline event handlers
    return page


def test_the_pages_policy_allows_no_inline_code() -> None:
    """The pages' CSP: own styles and images only, no scripts, no
    'unsafe-inline', no framing, forms post only here."""
    directives = dict(d.strip().split(" ", 1) for d in PAGES_CSP.split(";"))
    assert directives == {
        "default-src": "'none'",
        "style-src": "'self'",
        "img-src": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
    }
    assert "unsafe" not in PAGES_CSP


async def test_the_login_page_renders_accessibly(client: httpx.AsyncClient) -> None:
    """GET /login: the form with labelled email and password and a safe next."""
    response = await client.get("/login")
    assert response.status_code == 200
    assert_page_headers(response)
    page = assert_accessible(response)
    assert page.headings == ["Sign in"]
    assert [f["name"] for f in page.fields] == ["email", "password"]
    assert page.hidden == {"next": "/account"}
    assert page.forms == ["/login"]


@pytest.mark.parametrize(
    ("path", "heading", "names"),
    [
        ("/account", "Your account", ["name", "permissions", "expires_in_days"]),
        ("/logout", "Sign out", []),
    ],
)
async def test_signed_in_pages_render_accessibly(
    client: httpx.AsyncClient, signed_in: Browser, path: str, heading: str, names: list[str]
) -> None:
    """The account and sign-out pages render with labels, headers and the token."""
    response = await client.get(path, headers=signed_in.headers(origin=None))
    assert response.status_code == 200
    assert_page_headers(response)
    page = assert_accessible(response)
    assert page.headings[0] == heading
    assert page.hidden["csrf_token"] == signed_in.csrf
    for name in names:
        assert name in [f["name"] for f in page.fields]


async def test_the_account_page_shows_profile_roles_sessions_and_forms(
    client: httpx.AsyncClient, signed_in: Browser, registered: dict[str, str]
) -> None:
    """Profile (email, roles), this browser's session, the key and password forms."""
    response = await client.get("/account", headers=signed_in.headers(origin=None))
    page = read(response)
    assert registered["email"] in response.text
    assert '<span class="tag">user</span>' in response.text
    assert "this browser" in response.text
    assert page.headings[1:] == [
        "Profile",
        "Browser sessions",
        "App sessions",
        "API keys",
        "Create an API key",
        "Change password",
    ]
    assert set(page.forms) >= {"/account/api-keys", "/account/password"}
    permissions = [f["value"] for f in page.fields if f.get("name") == "permissions"]
    assert permissions == ["email", "profile"]
    assert {f["name"] for f in page.fields if f.get("type") == "password"} == {
        "current_password",
        "new_password",
    }


async def test_pages_can_be_turned_off_for_embedding_apps(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """BASTION_PAGES_ENABLED=false leaves /login, /account and /static unrouted (404)."""
    async with (
        running(make_settings(pages_enabled=False), clock) as instance,
        http_client(instance) as http,
    ):
        for path in ("/login", "/logout", "/account", "/static/bastion.css"):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.get("/health")).status_code == 200


async def test_the_stylesheet_and_icon_are_served_and_nothing_else(
    client: httpx.AsyncClient,
) -> None:
    """/static serves its two files with their types; any other name is a 404 page."""
    css = await client.get("/static/bastion.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["content-security-policy"] == PAGES_CSP
    icon = await client.get("/static/favicon.svg")
    assert icon.headers["content-type"] == "image/svg+xml"
    for name in ("nope.css", "bastion.css.bak", "..%2Fhtml.py", "../routes/pages.py"):
        missing = await client.get(f"/static/{name}")
        assert missing.status_code == 404
        assert "STATIC" not in missing.text


# ------------------------------------------------------------------ signing in


async def test_signing_in_sets_a_hardened_cookie_and_redirects_to_the_account(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """303 to /account, cookie __Host- HttpOnly Secure SameSite=Lax Path=/,
    no Max-Age (a session cookie), nothing cached."""
    response = await client.post(
        "/login",
        data={"email": registered["email"], "password": PASSWORD, "next": "/account"},
        headers=SAME_ORIGIN,
    )
    assert location(response) == "/account"
    assert response.headers["cache-control"] == "no-store"
    cookie = set_cookie(response)
    assert cookie is not None
    register(cookie["value"])
    assert {"httponly", "secure"} <= cookie.keys()
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert "max-age" not in cookie
    assert "domain" not in cookie


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("alice@example.com", "wrong password entirely"),
        ("nobody@example.com", PASSWORD),
        ("ALICE@example.com ", "wrong password entirely"),
    ],
)
async def test_a_failed_sign_in_is_a_401_page_with_one_generic_message(
    client: httpx.AsyncClient, registered: dict[str, str], email: str, password: str
) -> None:
    """Wrong password or unknown account: 401, the same sentence, the email
    kept in the form, the password never echoed, no cookie."""
    response = await client.post(
        "/login", data={"email": email, "password": password}, headers=SAME_ORIGIN
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Cookie ")
    assert_page_headers(response)
    page = read(response)
    assert page.alerts == ["Invalid email or password."]
    assert next(f for f in page.fields if f["name"] == "email")["value"] == email.strip()
    assert "value" not in next(f for f in page.fields if f["name"] == "password")
    assert password not in response.text
    assert set_cookie(response) is None


LOGIN_BAD_INPUT = [
    ("no email", {"password": PASSWORD}, "Enter your email and your password."),
    ("no password", {"email": "alice@example.com"}, "Enter your email and your password."),
    ("blank email", {"email": "   ", "password": PASSWORD}, "Enter your email and your password."),
    ("empty form", {}, "Enter your email and your password."),
    (
        "overlong email",
        {"email": "a" * 321 + "@example.com", "password": PASSWORD},
        "The email or password is too long.",
    ),
    (
        "overlong password",
        {"email": "alice@example.com", "password": "p" * 4097},
        "The email or password is too long.",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in LOGIN_BAD_INPUT], ids=[c[0] for c in LOGIN_BAD_INPUT]
)
async def test_malformed_sign_in_forms_are_422_pages(
    client: httpx.AsyncClient, registered: dict[str, str], data: dict[str, str], message: str
) -> None:
    """Missing, blank or overlong fields: 422 with a clear sentence, no cookie."""
    response = await client.post("/login", data=data, headers=SAME_ORIGIN)
    assert response.status_code == 422
    assert read(response).alerts == [message]
    assert set_cookie(response) is None


async def test_a_json_body_is_not_a_sign_in_form(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """The page takes forms only: a JSON body reads as an empty form (422)."""
    response = await client.post(
        "/login", json={"email": registered["email"], "password": PASSWORD}, headers=SAME_ORIGIN
    )
    assert response.status_code == 422
    assert set_cookie(response) is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "http://testserver:8443"},
        {"Referer": f"{EVIL}/login"},
        {"Origin": EVIL, "Referer": f"{ISSUER}/login"},
    ],
    ids=["none", "evil", "null", "suffix", "other-port", "evil-referer", "origin-wins"],
)
async def test_signing_in_from_another_origin_is_refused(
    client: httpx.AsyncClient, registered: dict[str, str], headers: dict[str, str]
) -> None:
    """Login CSRF: without a trusted Origin (or Referer), 403 and no session,
    even with the right password."""
    response = await client.post(
        "/login", data={"email": registered["email"], "password": PASSWORD}, headers=headers
    )
    assert response.status_code == 403
    assert_page_headers(response)
    assert read(response).alerts == [
        "Cross-site request refused. Nothing was changed. Go back, reload the page and try again."
    ]
    assert set_cookie(response) is None


async def test_a_trusted_referer_stands_in_for_a_missing_origin(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """Old browsers send no Origin on a same-origin POST; the Referer counts then."""
    response = await client.post(
        "/login",
        data={"email": registered["email"], "password": PASSWORD},
        headers={"Referer": f"{ISSUER}/login"},
    )
    assert location(response) == "/account"
    assert set_cookie(response) is not None


async def test_signing_in_again_replaces_the_previous_session(
    client: httpx.AsyncClient, signed_in: Browser, registered: dict[str, str]
) -> None:
    """No fixation: the cookie sent with a login ends; a fresh one is set."""
    response = await client.post(
        "/login",
        data={"email": registered["email"], "password": PASSWORD},
        headers=signed_in.headers(),
    )
    fresh = set_cookie(response)
    assert fresh is not None
    register(fresh["value"])
    assert fresh["value"] != signed_in.cookie
    old = await client.get("/account", headers=signed_in.headers(origin=None))
    assert location(old).startswith("/login?")


OPEN_REDIRECTS = [
    "//evil.example",
    "https://evil.example",
    "http://evil.example/account",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,hi",
    "/\t/evil.example",
    " /account",
    "//%2Fevil.example",
    "evil.example",
    "account",
    "/" + "a" * 600,
]


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
async def test_next_never_leaves_the_site(
    client: httpx.AsyncClient, registered: dict[str, str], target: str
) -> None:
    """An absolute, protocol-relative, backslashed, scripted or overlong
    ``next`` is replaced by /account, in the form and in the redirect."""
    form = await client.get("/login", params={"next": target})
    assert read(form).hidden["next"] == "/account"
    response = await client.post(
        "/login",
        data={"email": registered["email"], "password": PASSWORD, "next": target},
        headers=SAME_ORIGIN,
    )
    assert location(response) == "/account"


@pytest.mark.parametrize("target", ["/account", "/account?tab=keys", "/logout", "/docs"])
async def test_a_same_site_next_is_followed(
    client: httpx.AsyncClient, registered: dict[str, str], target: str
) -> None:
    """A path on this site is where the login leads."""
    response = await client.post(
        "/login",
        data={"email": registered["email"], "password": PASSWORD, "next": target},
        headers=SAME_ORIGIN,
    )
    assert location(response) == target


async def test_nothing_from_the_query_is_reflected(client: httpx.AsyncClient) -> None:
    """``done`` shows only fixed sentences; ``next`` is escaped in the form."""
    response = await client.get(
        "/login", params={"done": "<script>alert(1)</script>", "next": '/a"><script>x</script>'}
    )
    assert "<script>" not in response.text.lower()
    assert read(response).notices == []
    assert read(response).hidden["next"] == '/a"><script>x</script>'  # escaped, then parsed
    known = await client.get("/login", params={"done": "signed_out"})
    assert read(known).notices == ["You are signed out."]


async def test_too_many_sign_ins_are_a_429_page_with_retry_after(
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The login form shares the token endpoint's per-IP limit: past it, 429
    with Retry-After and the message, even for the right password."""
    install_wall_clock(monkeypatch)
    settings = make_settings(rate_limits_enabled=True, rate_limit_token_ip="2/minute")
    async with running(settings, clock) as instance, http_client(instance) as http:
        await new_user(http, "carol@example.com")
        for _ in range(2):
            await http.post(
                "/login",
                data={"email": "carol@example.com", "password": "wrong password"},
                headers=SAME_ORIGIN,
            )
        response = await http.post(
            "/login",
            data={"email": "carol@example.com", "password": PASSWORD},
            headers=SAME_ORIGIN,
        )
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert read(response).alerts == ["Too many requests; try again later."]
    assert set_cookie(response) is None


# ------------------------------------------------------------------ no session


@pytest.mark.parametrize("path", ["/account", "/logout"])
async def test_pages_without_a_session_lead_to_the_login_form(
    client: httpx.AsyncClient, path: str
) -> None:
    """No cookie: 303 to /login, which will come back here."""
    response = await client.get(path)
    assert location(response) == f"/login?next=%2F{path[1:]}"


@pytest.mark.parametrize(
    "cookie", ["A" * 43, "short", "x" * 5000, "not a cookie value at all !!"], ids=str.__len__
)
async def test_a_dead_cookie_is_cleared_and_leads_to_the_login_form(
    client: httpx.AsyncClient, cookie: str
) -> None:
    """An unknown, malformed or oversized cookie: 303 to /login saying the
    session ended, and the cookie is cleared."""
    response = await client.get("/account", headers={"Cookie": f"{COOKIE}={cookie}"})
    query = parse_qs(urlsplit(location(response)).query)
    assert query == {"next": ["/account"], "done": ["session_expired"]}
    cleared = set_cookie(response)
    assert cleared is not None
    assert cleared["value"] == ""


async def test_an_idle_session_expires(
    client: httpx.AsyncClient, signed_in: Browser, bastion: Bastion, clock: FrozenClock
) -> None:
    """Past the idle timeout the account page sends the browser to sign in again."""
    clock.advance(bastion.settings.session_idle_timeout + 1)
    response = await client.get("/account", headers=signed_in.headers(origin=None))
    assert "done=session_expired" in location(response)


# ------------------------------------------------------------------ signing out


async def test_get_logout_changes_nothing_and_post_ends_the_session(
    client: httpx.AsyncClient, signed_in: Browser
) -> None:
    """The GET is a confirmation; the POST ends the server-side session and
    clears the cookie."""
    confirm = await client.get("/logout", headers=signed_in.headers(origin=None))
    assert confirm.status_code == 200
    assert set_cookie(confirm) is None
    still = await client.get("/account", headers=signed_in.headers(origin=None))
    assert still.status_code == 200

    response = await client.post(
        "/logout", data={"csrf_token": signed_in.csrf}, headers=signed_in.headers()
    )
    assert location(response) == "/login?done=signed_out"
    cleared = set_cookie(response)
    assert cleared is not None
    assert cleared["value"] == ""
    replay = await client.get("/account", headers=signed_in.headers(origin=None))
    assert location(replay).startswith("/login?")


# ------------------------------------------------------------------ CSRF on every action


@dataclass
class State:
    keys: list[str]
    browser_sessions: list[str]
    token_sessions: list[UUID]
    password_hash: str


async def state(bastion: Bastion, user_id: str) -> State:
    uid = UUID(user_id)
    user = await bastion.accounts.get_active_user(uid)
    assert user is not None
    return State(
        keys=[k.key_id for k in await bastion.api_keys.list(uid)],
        browser_sessions=[s.public_id for s in await bastion.browser_sessions.list(uid)],
        token_sessions=[s.id for s in await bastion.refresh.sessions(uid)],
        password_hash=user.password_hash,
    )


@dataclass
class Scene:
    """A signed-in user with something of everything to act upon."""

    browser: Browser
    user_id: str
    key_id: str
    other_session: str
    token_session: UUID


@pytest.fixture
async def scene(
    client: httpx.AsyncClient, bastion: Bastion, registered: dict[str, str], signed_in: Browser
) -> Scene:
    user_id = UUID(registered["id"])
    issued = await bastion.api_keys.create(user_id, "ci", ["profile"])
    register(issued.key)
    other = await bastion.browser_sessions.start(user_id, ip="198.51.100.9", user_agent="Other")
    grant = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": registered["email"], "password": PASSWORD},
    )
    assert grant.status_code == 200
    (token_session,) = await bastion.refresh.sessions(user_id)
    return Scene(
        signed_in, registered["id"], issued.record.key_id, other.session.public_id, token_session.id
    )


def actions(scene: Scene) -> dict[str, tuple[str, dict[str, str]]]:
    return {
        "logout": ("/logout", {}),
        "create key": ("/account/api-keys", {"name": "x", "permissions": "profile"}),
        "revoke key": (f"/account/api-keys/{scene.key_id}/revoke", {}),
        "end browser session": (f"/account/sessions/{scene.other_session}/end", {}),
        "end token session": (f"/account/token-sessions/{scene.token_session}/end", {}),
        "change password": (
            "/account/password",
            {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        ),
    }


ACTIONS = [
    "logout",
    "create key",
    "revoke key",
    "end browser session",
    "end token session",
    "change password",
]
FORGERIES: dict[str, Callable[[Scene], tuple[dict[str, str], dict[str, str]]]] = {
    "no token": lambda s: ({}, s.browser.headers()),
    "empty token": lambda s: ({"csrf_token": ""}, s.browser.headers()),
    "wrong token": lambda s: ({"csrf_token": "A" * 43}, s.browser.headers()),
    "token of another session": lambda s: ({"csrf_token": "from-other"}, s.browser.headers()),
    "no origin": lambda s: ({"csrf_token": s.browser.csrf}, s.browser.headers(origin=None)),
    "foreign origin": lambda s: ({"csrf_token": s.browser.csrf}, s.browser.headers(origin=EVIL)),
    "null origin": lambda s: ({"csrf_token": s.browser.csrf}, s.browser.headers(origin="null")),
    "same host other port": lambda s: (
        {"csrf_token": s.browser.csrf},
        s.browser.headers(origin="http://testserver:8080"),
    ),
    "foreign referer": lambda s: (
        {"csrf_token": s.browser.csrf},
        {**s.browser.headers(origin=None), "Referer": f"{EVIL}/page"},
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_every_action_without_both_csrf_proofs_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, bastion: Bastion, scene: Scene, forgery: str
) -> None:
    """Each action, POSTed without the session's token or from an untrusted
    origin: a 403 page, and the keys, sessions and password are as they were."""
    extra, headers = FORGERIES[forgery](scene)
    if extra.get("csrf_token") == "from-other":
        other = await bastion.browser_sessions.start(UUID(scene.user_id))
        extra = {"csrf_token": other.csrf_token}
        register(other.cookie_value, other.csrf_token)
    before = await state(bastion, scene.user_id)
    for action, (path, fields) in actions(scene).items():
        response = await client.post(path, data={**fields, **extra}, headers=headers)
        assert response.status_code == 403, (action, response.text)
        assert_page_headers(response)
        (alert,) = read(response).alerts
        assert alert.endswith("Nothing was changed. Go back, reload the page and try again.")
        assert await state(bastion, scene.user_id) == before, action


async def test_an_action_without_a_session_changes_nothing(
    client: httpx.AsyncClient, bastion: Bastion, scene: Scene
) -> None:
    """From our own origin but without the cookie (it expired, say): off to
    the login page, nothing changed."""
    before = await state(bastion, scene.user_id)
    for action, (path, fields) in actions(scene).items():
        response = await client.post(
            path, data={**fields, "csrf_token": scene.browser.csrf}, headers=SAME_ORIGIN
        )
        assert location(response) == "/login?next=%2Faccount", action
        assert await state(bastion, scene.user_id) == before, action


@pytest.mark.parametrize("action", ACTIONS)
async def test_every_action_with_both_proofs_does_its_job(
    client: httpx.AsyncClient, bastion: Bastion, scene: Scene, action: str
) -> None:
    """The control group: the same requests with the token and our origin succeed."""
    path, fields = actions(scene)[action]
    before = await state(bastion, scene.user_id)
    response = await client.post(
        path, data={**fields, "csrf_token": scene.browser.csrf}, headers=scene.browser.headers()
    )
    assert response.status_code in (201, 303), response.text
    if response.status_code == 201:
        key = read(response).secret
        assert key is not None
        register(key)
    assert await state(bastion, scene.user_id) != before


# ------------------------------------------------------------------ API keys


async def post_action(
    client: httpx.AsyncClient, browser: Browser, path: str, data: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        path, data={**data, "csrf_token": browser.csrf}, headers=browser.headers()
    )


async def test_a_new_api_key_is_shown_once_and_never_cached(
    client: httpx.AsyncClient, signed_in: Browser, bastion: Bastion, registered: dict[str, str]
) -> None:
    """201 with the key (no-store); the account page lists it by prefix only,
    and it authenticates with the chosen permissions and expiry."""
    response = await post_action(
        client,
        signed_in,
        "/account/api-keys",
        {"name": "deploy", "permissions": ["profile", "email"], "expires_in_days": "30"},
    )
    assert response.status_code == 201
    assert_page_headers(response)
    assert_accessible(response)
    key = read(response).secret
    assert key is not None
    register(key)
    principal = await bastion.api_keys.authenticate(key)
    assert principal.subject == registered["id"]
    assert principal.scopes == {"profile", "email"}
    (record,) = await bastion.api_keys.list(UUID(registered["id"]))
    assert record.expires_at is not None
    assert (record.expires_at - bastion.clock.now()).days == 30

    account = await client.get("/account", headers=signed_in.headers(origin=None))
    assert key not in account.text
    assert f"bst_{record.key_id}" in account.text
    assert f"/account/api-keys/{record.key_id}/revoke" in read(account).forms


async def test_key_names_are_escaped(
    client: httpx.AsyncClient, signed_in: Browser, registered: dict[str, str]
) -> None:
    """A name with markup shows as text (autoescaping), on both pages."""
    name = '<img src=x onerror="alert(1)">'
    created = await post_action(
        client, signed_in, "/account/api-keys", {"name": name, "permissions": "profile"}
    )
    assert created.status_code == 201
    register(read(created).secret or "")
    account = await client.get("/account", headers=signed_in.headers(origin=None))
    for response in (created, account):
        assert "<img" not in response.text
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in response.text


KEY_BAD_INPUT = [
    ("no name", {"permissions": "profile"}, 422, "The name must be 1 to 100 characters long."),
    (
        "blank name",
        {"name": "   ", "permissions": "profile"},
        422,
        "The name must be 1 to 100 characters long.",
    ),
    (
        "long name",
        {"name": "n" * 101, "permissions": "profile"},
        422,
        "The name must be 1 to 100 characters long.",
    ),
    (
        "control character",
        {"name": "a\x07b", "permissions": "profile"},
        422,
        "The name must not contain control or format characters.",
    ),
    ("no permissions", {"name": "k"}, 422, "An API key needs at least one permission."),
    (
        "permission not held",
        {"name": "k", "permissions": "users:admin"},
        403,
        "An API key cannot carry permissions its owner does not hold: users:admin.",
    ),
    ("malformed permission", {"name": "k", "permissions": "not a permission"}, 422, None),
    (
        "expiry not a number",
        {"name": "k", "permissions": "profile", "expires_in_days": "soon"},
        422,
        "Choose an expiry from the list.",
    ),
    (
        "negative expiry",
        {"name": "k", "permissions": "profile", "expires_in_days": "-1"},
        422,
        "Choose an expiry from the list.",
    ),
    (
        "zero expiry",
        {"name": "k", "permissions": "profile", "expires_in_days": "0"},
        422,
        "expires_in_days must be a whole number of days, at least 1.",
    ),
    (
        "expiry beyond the maximum",
        {"name": "k", "permissions": "profile", "expires_in_days": "366"},
        422,
        "An API key may live at most 365 days.",
    ),
    (
        "superscript digit",
        {"name": "k", "permissions": "profile", "expires_in_days": "\u00b2"},
        422,
        "Choose an expiry from the list.",
    ),
    (
        "huge expiry",
        {"name": "k", "permissions": "profile", "expires_in_days": "9" * 40},
        422,
        "Choose an expiry from the list.",
    ),
]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [c[1:] for c in KEY_BAD_INPUT],
    ids=[c[0] for c in KEY_BAD_INPUT],
)
async def test_bad_api_key_requests_re_render_the_account_page_with_the_error(
    client: httpx.AsyncClient,
    signed_in: Browser,
    bastion: Bastion,
    registered: dict[str, str],
    data: dict[str, str],
    status: int,
    message: str | None,
) -> None:
    """Each refusal: its status, the account page with one alert, no key made."""
    response = await post_action(client, signed_in, "/account/api-keys", data)
    assert response.status_code == status
    assert_page_headers(response)
    page = read(response)
    assert page.headings[0] == "Your account"
    assert len(page.alerts) == 1
    if message is not None:
        assert page.alerts == [message]
    assert await bastion.api_keys.list(UUID(registered["id"])) == []


async def test_the_key_cap_is_a_409(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """Past BASTION_API_KEY_MAX_PER_USER the page answers 409 with the reason."""
    settings = make_settings(api_key_max_per_user=1)
    async with running(settings, clock) as instance, http_client(instance) as http:
        await new_user(http, "dave@example.com")
        browser = await sign_in(http, "dave@example.com")
        first = await post_action(
            http, browser, "/account/api-keys", {"name": "a", "permissions": "profile"}
        )
        assert first.status_code == 201
        register(read(first).secret or "")
        second = await post_action(
            http, browser, "/account/api-keys", {"name": "b", "permissions": "profile"}
        )
    assert second.status_code == 409
    assert read(second).alerts == ["At most 1 API keys per user; revoke one first."]


async def test_revoking_a_key_in_the_page_stops_it(
    client: httpx.AsyncClient, scene: Scene, bastion: Bastion
) -> None:
    """303 back to the account with the fixed message; the key fails at once."""
    response = await post_action(
        client, scene.browser, f"/account/api-keys/{scene.key_id}/revoke", {}
    )
    assert location(response) == "/account?done=key_revoked"
    page = await client.get(location(response), headers=scene.browser.headers(origin=None))
    assert read(page).notices == ["The API key was revoked; it no longer works."]
    assert await bastion.api_keys.list(UUID(scene.user_id)) == []


# ------------------------------------------------------------------ unknown and others' ids


async def test_other_users_ids_are_unknown_ids(
    client: httpx.AsyncClient, scene: Scene, bastion: Bastion
) -> None:
    """Mallory's key, browser session and token session, or ids that do not
    exist, answer 404 on Alice's page, and Mallory keeps them all."""
    mallory_id = UUID(await new_user(client, "mallory@example.com"))
    key = await bastion.api_keys.create(mallory_id, "m", ["profile"])
    register(key.key)
    session = await bastion.browser_sessions.start(mallory_id)
    grant = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "mallory@example.com", "password": PASSWORD},
    )
    assert grant.status_code == 200
    (token_session,) = await bastion.refresh.sessions(mallory_id)
    before = await state(bastion, str(mallory_id))
    alice_before = await state(bastion, scene.user_id)
    paths = [
        f"/account/api-keys/{key.record.key_id}/revoke",
        f"/account/sessions/{session.session.public_id}/end",
        f"/account/token-sessions/{token_session.id}/end",
        "/account/api-keys/0123456789abcdef/revoke",
        "/account/api-keys/not-a-key-id/revoke",
        f"/account/api-keys/{'f' * 200}/revoke",
        "/account/sessions/unknown-session/end",
        f"/account/sessions/{'s' * 100}/end",
        f"/account/token-sessions/{UUID(int=1)}/end",
        "/account/token-sessions/not-a-uuid/end",
    ]
    for path in paths:
        response = await post_action(client, scene.browser, path, {})
        assert response.status_code == 404, path
        assert read(response).alerts in (["No such API key."], ["No such session."]), path
    assert await state(bastion, str(mallory_id)) == before
    assert await state(bastion, scene.user_id) == alice_before


# ------------------------------------------------------------------ sessions


async def test_ending_another_browser_session_keeps_this_one(
    client: httpx.AsyncClient, scene: Scene, bastion: Bastion
) -> None:
    """The other session ends; this page goes on with a fixed message."""
    response = await post_action(
        client, scene.browser, f"/account/sessions/{scene.other_session}/end", {}
    )
    assert location(response) == "/account?done=session_ended"
    sessions = await bastion.browser_sessions.list(UUID(scene.user_id))
    assert scene.other_session not in [s.public_id for s in sessions]
    assert len(sessions) == 1


async def test_ending_this_browser_session_signs_out(
    client: httpx.AsyncClient, signed_in: Browser, bastion: Bastion, registered: dict[str, str]
) -> None:
    """ "End session" on this browser's row is a sign-out: cookie cleared."""
    (mine,) = await bastion.browser_sessions.list(UUID(registered["id"]))
    response = await post_action(client, signed_in, f"/account/sessions/{mine.public_id}/end", {})
    assert location(response) == "/login?done=signed_out"
    cleared = set_cookie(response)
    assert cleared is not None
    assert cleared["value"] == ""


async def test_ending_a_token_session_kills_its_refresh_token(
    client: httpx.AsyncClient, scene: Scene, bastion: Bastion
) -> None:
    """An app session ended in the page: its family is revoked."""
    response = await post_action(
        client, scene.browser, f"/account/token-sessions/{scene.token_session}/end", {}
    )
    assert location(response) == "/account?done=session_ended"
    assert await bastion.refresh.sessions(UUID(scene.user_id)) == []


# ------------------------------------------------------------------ password


PASSWORD_BAD_INPUT = [
    (
        "no current",
        {"new_password": NEW_PASSWORD},
        422,
        "Enter your current password and a new one.",
    ),
    ("no new", {"current_password": PASSWORD}, 422, "Enter your current password and a new one."),
    (
        "wrong current",
        {"current_password": "not my password", "new_password": NEW_PASSWORD},
        403,
        "The current password is wrong.",
    ),
    ("new too short", {"current_password": PASSWORD, "new_password": "short"}, 422, None),
    ("new too common", {"current_password": PASSWORD, "new_password": "password123"}, 422, None),
    (
        "overlong",
        {"current_password": PASSWORD, "new_password": "x" * 4097},
        422,
        "The password is too long.",
    ),
]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [c[1:] for c in PASSWORD_BAD_INPUT],
    ids=[c[0] for c in PASSWORD_BAD_INPUT],
)
async def test_a_refused_password_change_changes_nothing(
    client: httpx.AsyncClient,
    signed_in: Browser,
    bastion: Bastion,
    registered: dict[str, str],
    data: dict[str, str],
    status: int,
    message: str | None,
) -> None:
    """Each refusal: its status, one alert on the account page, no password
    echoed, the password and the session unchanged."""
    before = await state(bastion, registered["id"])
    response = await post_action(client, signed_in, "/account/password", data)
    assert response.status_code == status
    page = read(response)
    assert len(page.alerts) == 1
    if message is not None:
        assert page.alerts == [message]
    for value in data.values():
        assert value not in response.text
    assert await state(bastion, registered["id"]) == before


async def test_changing_the_password_ends_every_session(
    client: httpx.AsyncClient, scene: Scene, bastion: Bastion, registered: dict[str, str]
) -> None:
    """Success: to the login page with the message, the cookie cleared, every
    browser and token session ended, only the new password works."""
    response = await post_action(
        client,
        scene.browser,
        "/account/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert location(response) == "/login?done=password_changed"
    cleared = set_cookie(response)
    assert cleared is not None
    assert cleared["value"] == ""
    after = await state(bastion, scene.user_id)
    assert after.browser_sessions == []
    assert after.token_sessions == []
    old = await client.post(
        "/login", data={"email": registered["email"], "password": PASSWORD}, headers=SAME_ORIGIN
    )
    assert old.status_code == 401
    await sign_in(client, registered["email"], NEW_PASSWORD)


async def test_too_many_password_changes_are_a_429(
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page shares POST /me/password's per-account limit: 429 with Retry-After."""
    install_wall_clock(monkeypatch)
    settings = make_settings(rate_limits_enabled=True, rate_limit_password_change="1/minute")
    async with running(settings, clock) as instance, http_client(instance) as http:
        await new_user(http, "erin@example.com")
        browser = await sign_in(http, "erin@example.com")
        wrong = {"current_password": "wrong password", "new_password": NEW_PASSWORD}
        first = await post_action(http, browser, "/account/password", wrong)
        assert first.status_code == 403
        second = await post_action(http, browser, "/account/password", wrong)
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) > 0
    assert read(second).alerts == ["Too many requests; try again later."]
