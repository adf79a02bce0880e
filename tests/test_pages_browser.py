"""The pages end to end, in headless Chromium against a real ``bastion serve``:
sign in through the form, see the account page, create an API key there and
use it from a script, end sessions, change the password, sign out, and a
failed sign-in showing its error. A screenshot of each page goes to the test
artefacts (see :mod:`tests.browser`)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from tests.browser import (
    PASSWORD,
    assert_log_clean,
    browser,
    context,
    http,
    login,
    page,
    playwright,
    register,
    screenshot,
    server,
)
from tests.server_processes import ServerProcess

__all__ = ["browser", "context", "http", "page", "playwright", "server"]  # fixtures

NEW_PASSWORD = "a completely different passphrase"
SESSION_COOKIE = "__Host-bastion_session"


@pytest.fixture(scope="module")
def created_secrets(server: ServerProcess) -> Iterator[list[str]]:
    """Secrets the tests create; the server's log must hold none of them."""
    found: list[str] = [PASSWORD, NEW_PASSWORD]
    yield found
    assert_log_clean(server, *found)


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    """Console errors of the page (a CSP violation shows up here)."""
    errors: list[str] = []

    def collect(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", collect)
    return errors


def session_cookie(context: BrowserContext) -> dict[str, object] | None:
    for cookie in context.cookies():
        if cookie.get("name") == SESSION_COOKIE:
            return dict(cookie)
    return None


def test_signing_in_through_the_form_shows_the_account_page(
    page: Page,
    context: BrowserContext,
    http: httpx.Client,
    console_errors: list[str],
    created_secrets: list[str],
) -> None:
    """The login form signs in, sets a HttpOnly Secure SameSite=Lax cookie and
    lands on the account page, styled by the stylesheet under the CSP."""
    register(http, "ada@example.com")
    page.goto("/login")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "login")
    login(page, "ada@example.com")

    expect(page.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    expect(page.get_by_text("ada@example.com").first).to_be_visible()
    expect(page.get_by_role("heading", name="Browser sessions")).to_be_visible()
    expect(page.get_by_text("this browser", exact=True)).to_be_visible()
    header = page.locator("header.site-header")
    assert header.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(29, 35, 48)"
    screenshot(page, "account")

    cookie = session_cookie(context)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    created_secrets.append(str(cookie["value"]))
    assert console_errors == []


def test_an_unauthenticated_visit_is_sent_to_login_and_back(page: Page, http: httpx.Client) -> None:
    """/account without a session redirects to the login form, which returns
    the user to /account afterwards."""
    register(http, "grace@example.com")
    page.goto("/account")
    assert re.search(r"/login\?next=%2Faccount$", page.url)
    page.get_by_label("Email").fill("grace@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/account$"))
    expect(page.get_by_text("grace@example.com").first).to_be_visible()


def test_an_api_key_created_in_the_page_works_from_a_script_until_revoked(
    page: Page, http: httpx.Client, server: ServerProcess, created_secrets: list[str]
) -> None:
    """The new key is shown once (never cached); a script can use it with the
    X-API-Key header; revoking it in the page stops it at once."""
    user = register(http, "linus@example.com")
    login(page, "linus@example.com")
    page.get_by_label("Name").fill("nightly backup")
    page.get_by_role("checkbox", name="profile").check()
    page.get_by_label("Expires").select_option("30")
    with page.expect_response(re.compile(r"/account/api-keys$")) as created:
        page.get_by_role("button", name="Create API key").click()
    assert created.value.status == 201
    assert created.value.headers["cache-control"] == "no-store"
    key = page.locator("#new-key").inner_text().strip()
    created_secrets.append(key)
    assert re.fullmatch(r"bst_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    screenshot(page, "api-key-created")

    answer = http.get("/me", headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == user["id"]

    page.get_by_role("link", name="Back to your account").click()
    row = page.get_by_role("row", name=re.compile("nightly backup"))
    expect(row).to_contain_text(key[:20])  # bst_<key id>, never the secret
    assert key not in page.content()
    row.get_by_role("button", name=re.compile("Revoke")).click()
    page.wait_for_url(re.compile(r"/account\?done=key_revoked$"))
    expect(page.get_by_role("status")).to_have_text("The API key was revoked; it no longer works.")
    expect(page.get_by_role("row", name=re.compile("nightly backup"))).to_have_count(0)
    assert http.get("/me", headers={"X-API-Key": key}).status_code == 401


def test_ending_another_session_in_the_page_signs_that_browser_out(
    browser: Browser, page: Page, http: httpx.Client, server: ServerProcess
) -> None:
    """ "End session" on another browser's row ends it: that browser is sent
    to the login page; an app session ended in the page loses its refresh token."""
    register(http, "barbara@example.com")
    login(page, "barbara@example.com")
    other = browser.new_context(base_url=server.url)
    try:
        other_page = other.new_page()
        login(other_page, "barbara@example.com")
        grant = http.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "username": "barbara@example.com",
                "password": PASSWORD,
            },
            headers={"User-Agent": "backup-script/1.0"},
        )
        assert grant.status_code == 200, grant.text

        page.reload()
        sessions = page.get_by_role("region", name="Browser sessions")
        expect(sessions.get_by_role("button", name=re.compile("End session"))).to_have_count(2)
        others = sessions.get_by_role("row").filter(has_not_text="this browser")
        others.get_by_role("button", name=re.compile("End session")).click()
        page.wait_for_url(re.compile(r"/account\?done=session_ended$"))
        expect(sessions.get_by_role("button", name=re.compile("End session"))).to_have_count(1)

        other_page.goto("/account")
        assert "/login?" in other_page.url
        expect(other_page.get_by_role("status")).to_contain_text("Your session has ended")
        screenshot(other_page, "login-session-expired")

        apps = page.get_by_role("region", name="App sessions")
        expect(apps).to_contain_text("backup-script/1.0")
        apps.get_by_role("button", name=re.compile("End session")).click()
        page.wait_for_url(re.compile(r"/account\?done=session_ended$"))
        expect(apps).to_contain_text("No app sessions.")
        refresh = http.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": grant.json()["refresh_token"]},
        )
        assert refresh.status_code == 400
        assert refresh.json()["error"] == "invalid_grant"
    finally:
        other.close()


def test_signing_out_confirms_then_ends_the_session(
    page: Page, context: BrowserContext, http: httpx.Client
) -> None:
    """GET /logout only asks; the button's POST ends the server-side session,
    clears the cookie and says so on the login page."""
    register(http, "edsger@example.com")
    login(page, "edsger@example.com")
    cookie = session_cookie(context)
    assert cookie is not None

    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(re.compile(r"/logout$"))
    expect(page.get_by_role("heading", name="Sign out")).to_be_visible()
    screenshot(page, "logout")
    assert session_cookie(context) is not None  # the GET changed nothing

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login\?done=signed_out$"))
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    screenshot(page, "signed-out")
    assert session_cookie(context) is None
    # The old cookie is worthless on the server too.
    replay = http.get("/account", headers={"Cookie": f"{SESSION_COOKIE}={cookie['value']}"})
    assert replay.status_code == 303
    assert replay.headers["location"].startswith("/login?")


def test_a_failed_sign_in_shows_its_error_and_keeps_the_email(
    page: Page, http: httpx.Client, context: BrowserContext
) -> None:
    """A wrong password answers 401 with one generic sentence; the form keeps
    the email, never the password, and no cookie is set."""
    register(http, "margaret@example.com")
    page.goto("/login")
    page.get_by_label("Email").fill("margaret@example.com")
    page.get_by_label("Password").fill("not the password at all")
    with page.expect_response(re.compile(r"/login$")) as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("Invalid email or password.")
    expect(page.get_by_label("Email")).to_have_value("margaret@example.com")
    expect(page.get_by_label("Password")).to_have_value("")
    screenshot(page, "login-failed")
    assert session_cookie(context) is None


def test_changing_the_password_in_the_page_ends_every_session(
    page: Page, http: httpx.Client, context: BrowserContext, created_secrets: list[str]
) -> None:
    """After a password change the user is signed out everywhere and only the
    new password works."""
    register(http, "barbara.liskov@example.com")
    login(page, "barbara.liskov@example.com")
    page.get_by_label("Current password").fill("wrong current password")
    page.get_by_label("New password").fill(NEW_PASSWORD)
    with page.expect_response(re.compile(r"/account/password$")) as refused:
        page.get_by_role("button", name="Change password").click()
    assert refused.value.status == 403
    expect(page.get_by_role("alert")).to_have_text("The current password is wrong.")
    screenshot(page, "account-error")

    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url(re.compile(r"/login\?done=password_changed$"))
    expect(page.get_by_role("status")).to_contain_text("Your password was changed")
    assert session_cookie(context) is None

    page.get_by_label("Email").fill("barbara.liskov@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_response(re.compile(r"/login$")) as old:
        page.get_by_role("button", name="Sign in").click()
    assert old.value.status == 401
    login(page, "barbara.liskov@example.com", NEW_PASSWORD)
