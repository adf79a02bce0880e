"""Cross-site request forgery, for real: a victim signed in to Bastion in
Chromium opens an attacker's page, whose form posts itself to Bastion's
account actions. Bastion must answer 403 and change nothing.

Two attackers:

- **cross-site**, at ``http://localhost:<port>`` (another site than
  ``127.0.0.1``): the browser does not even send the ``SameSite=Lax`` cookie
  with a cross-site POST, and the ``Origin`` is foreign;
- **same-site**, at ``http://127.0.0.1:<other port>``: a site is scheme and
  host, ports do not count, so the cookie *is* sent; only the origin check
  and the CSRF token (which the attacker cannot read) stand in the way. This
  is the case ``SameSite`` does not cover (a sibling subdomain, another app on
  the same host).

The attacker even knows the victim's password: the password change is
refused for the CSRF proof alone, not for a wrong current password.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Request, expect

from tests.browser import (
    PASSWORD,
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

SESSION_COOKIE = "__Host-bastion_session"
STOLEN_PASSWORD = "the attacker's chosen passphrase"


@dataclass
class Attacker:
    """A web server of the attacker's, on another port; ``pages`` maps a path
    to the HTML it serves."""

    port: int
    pages: dict[str, str]

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.split("?", 1)[0])
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write((body or "").encode())

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the attack's URLs are no concern of the test log

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Attacker(httpd.server_address[1], pages)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def attack_page(action: str, fields: dict[str, str]) -> str:
    """A page that posts a hidden form to ``action`` as soon as it loads."""
    inputs = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items()
    )
    return (
        "<!doctype html><html><body><h1>You won a prize!</h1>"
        f'<form method="post" action="{escape(action)}">{inputs}</form>'
        "<script>document.forms[0].submit()</script></body></html>"
    )


ATTACKS = {
    "create an API key": ("/account/api-keys", {"name": "pwned", "permissions": "profile"}),
    "change the password": (
        "/account/password",
        {"current_password": PASSWORD, "new_password": STOLEN_PASSWORD},
    ),
    "sign the victim out": ("/logout", {}),
}
ATTACKERS = {"cross-site": "localhost", "same-site": "127.0.0.1"}


def bearer(http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return http.post(
        "/oauth/token", data={"grant_type": "password", "username": email, "password": password}
    )


def session_value(context: BrowserContext) -> str | None:
    for cookie in context.cookies():
        if cookie.get("name") == SESSION_COOKIE:
            return cookie.get("value")
    return None


@pytest.mark.parametrize("where", ATTACKERS)
@pytest.mark.parametrize("what", ATTACKS)
def test_a_forged_form_from_another_origin_is_refused_and_changes_nothing(
    what: str,
    where: str,
    page: Page,
    context: BrowserContext,
    http: httpx.Client,
    server: ServerProcess,
    attacker: Attacker,
) -> None:
    """The victim's browser posts the attacker's form to Bastion: 403, the
    victim keeps their session, their password and an empty key list."""
    email = f"victim-{where}-{what.replace(' ', '-')}@example.com"
    register(http, email)
    login(page, email)
    cookie_before = session_value(context)
    path, fields = ATTACKS[what]
    attack = f"/{where}/{path.strip('/').replace('/', '-')}"
    attacker.pages[attack] = attack_page(server.url + path, fields)

    def forged(request: Request) -> bool:
        return request.method == "POST" and request.url == server.url + path

    with page.expect_response(lambda r: forged(r.request)) as answer:
        page.goto(attacker.url(ATTACKERS[where], attack))
    response = answer.value
    assert response.status == 403
    sent_cookie = SESSION_COOKIE in response.request.all_headers().get("cookie", "")
    assert sent_cookie is (where == "same-site")  # SameSite=Lax at work, or not
    expect(page.get_by_role("alert")).to_contain_text("Nothing was changed")
    screenshot(page, f"cross-site-refused-{where}")

    # Nothing changed: the session lives, the password is the old one, no key.
    assert session_value(context) == cookie_before
    page.goto(server.url + "/account")
    expect(page.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    expect(page.get_by_text("No API keys yet.")).to_be_visible()
    token = bearer(http, email)
    assert token.status_code == 200, token.text
    assert bearer(http, email, STOLEN_PASSWORD).status_code == 400
    keys = http.get(
        "/me/api-keys", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )
    assert keys.status_code == 200
    assert keys.json() == []
