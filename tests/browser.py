"""Shared fixtures of the browser tests: a real ``bastion serve`` on a free
port and headless Debian Chromium driven by Playwright's sync API.

The server is a subprocess (:mod:`tests.server_processes`), so Playwright's
own event loop never meets one of pytest's. Both are started once per module
and shared by its tests; each test gets a fresh browser context (its own
cookie jar), so tests do not see each other's sessions.

Chromium is Debian's (``make test`` and ``.ci/run`` install it), found at
``BASTION_TEST_CHROMIUM`` or on ``PATH``; Playwright never downloads a browser.
Screenshots go to ``BASTION_TEST_SCREENSHOTS`` (``test-artifacts/screenshots``
by default, git-ignored).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.conftest import TEST_SECRET
from tests.server_processes import (
    HOST,
    ServerProcess,
    free_port,
    run_cli,
    server_env,
    start_server,
    wait_until_up,
)

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = Path(
    os.environ.get("BASTION_TEST_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots")
)
PASSWORD = "correct horse battery staple"
TIMEOUT_MS = 10_000
"""Playwright's wait for any one action or navigation."""


def chromium_path() -> str:
    """Debian's chromium: ``BASTION_TEST_CHROMIUM``, else the one on ``PATH``."""
    path = os.environ.get("BASTION_TEST_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise AssertionError("chromium is not installed: `make test` installs it (apt chromium)")
    return path


def bastion_env(url: str, database: Path) -> dict[str, str]:
    """Settings for a hermetic server, like ``make_settings`` in conftest: cheap
    argon2, no rate limits or lockout unless a test asks for them."""
    return server_env(
        {
            "BASTION_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "BASTION_SECRET_KEY": TEST_SECRET.get_secret_value(),
            "BASTION_ISSUER": url,
            "BASTION_ARGON2_MEMORY_COST": "8192",
            "BASTION_ARGON2_TIME_COST": "1",
            "BASTION_RATE_LIMITS_ENABLED": "false",
            "BASTION_LOCKOUT_ENABLED": "false",
            "BASTION_PURGE_INTERVAL": "0",
        }
    )


def _wait(server: ServerProcess) -> None:
    """:func:`wait_until_up` on a thread of its own: Playwright's sync API
    keeps an event loop running on this one."""

    async def poll() -> None:
        async with httpx.AsyncClient() as http:
            await wait_until_up(http, server)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, poll()).result()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``bastion serve`` for the module, over a fresh SQLite file."""
    cwd = tmp_path_factory.mktemp("server")
    port = free_port()
    env = bastion_env(f"http://{HOST}:{port}", cwd / "bastion.db")
    run_cli(env, cwd, "db", "upgrade")
    started = start_server(env, cwd, port=port)
    try:
        _wait(started)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Chromium, launched once per module."""
    instance = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def context(browser: Browser, server: ServerProcess) -> Iterator[BrowserContext]:
    """A fresh cookie jar per test, relative URLs resolved against the server."""
    ctx = browser.new_context(base_url=server.url)
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """A plain HTTP client for the server (API calls beside the browser)."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def register(http: httpx.Client, email: str, password: str = PASSWORD) -> dict[str, Any]:
    """Create an account through the API (README walkthrough, step 1)."""
    response = http.post("/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def login(page: Page, email: str, password: str = PASSWORD) -> None:
    """Sign in through the form, as a person would, and land on the account page."""
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/account$"))


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under :data:`SCREENSHOTS`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_log_clean(server: ServerProcess, *secrets: str) -> None:
    """The server's log holds none of ``secrets`` (passwords, keys, cookies)."""
    log = server.log.read_text(errors="replace")
    leaked = [s[:6] + "…" for s in secrets if s and s in log]
    assert not leaked, f"secrets in the server log: {leaked}"
