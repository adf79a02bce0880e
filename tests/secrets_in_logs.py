"""A pytest plugin: the session fails if a secret the suite created reaches a log line.

From the audit-log issue: "never a secret: a test collects every log line
written during the suite and fails if any password, token or key that the
suite created appears in it". How:

- A handler on the root logger collects every formatted line for the whole
  session, and the root logger lets DEBUG through, so debug lines count.
  Loggers whose level changes what a library *does* stay at their usual
  level: ``sqlalchemy`` at WARNING (below it SQLAlchemy starts echoing every
  statement, which no deployment runs with); ``httpx`` and ``httpcore`` at
  WARNING (the suite's own client logs every URL it requests, and tests send
  tokens in query strings on purpose to see them refused; Bastion's own httpx
  use fetches JWKS URLs, which hold no secret); ``aiosqlite`` and ``asyncio``
  at INFO (per-operation chatter that would only slow the run).
- The registry holds what the suite created: module-level ``*PASSWORD*`` and
  ``*SECRET*`` values of collected test modules, and whatever the shared
  ``client`` fixture sees (:func:`record_request`, :func:`record_response`):
  passwords sent in JSON or form bodies, access and refresh tokens answered.
  Values shorter than :data:`MIN_SECRET_LENGTH` are not registered: tests
  send "password" and "12345678" on purpose, and those words appear in
  ordinary log text.
- At the end every line is searched for every registered secret, and for
  anything shaped like one (a ``brt_`` refresh token, a JWT) whoever made it.
  A hit sets the exit status to 1 and names the logger and the line, with
  the secret cut to its first characters.

Register it with ``-p tests.secrets_in_logs`` or ``pytest_plugins``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import SecretStr

MIN_SECRET_LENGTH = 12
SECRET_SHAPES = re.compile(
    r"brt_[A-Za-z0-9_-]{43}"
    r"|bst_[0-9a-f]{16}_[A-Za-z0-9_-]{43}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
)
"""Bastion's refresh tokens and API keys, and any JWS compact serialisation of JSON."""

REQUEST_FIELDS = frozenset(
    {"password", "current_password", "new_password", "refresh_token", "client_secret", "token"}
)
RESPONSE_FIELDS = frozenset({"access_token", "refresh_token"})
MODULE_NAMES = re.compile(r"PASSWORD|SECRET")
QUIETER = {
    "sqlalchemy": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "aiosqlite": logging.INFO,
    "asyncio": logging.INFO,
}

_secrets: set[str] = set()


def register(*values: object) -> None:
    """Remember secrets the suite created (strings, ``SecretStr`` or collections of them)."""
    for value in values:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            if len(value) >= MIN_SECRET_LENGTH:
                _secrets.add(value)
        elif isinstance(value, list | tuple | set | frozenset):
            register(*value)


def registered() -> frozenset[str]:
    return frozenset(_secrets)


def _fields(data: Any, names: Iterable[str]) -> list[object]:
    if isinstance(data, dict):
        return [data[name] for name in names if name in data]
    return []


async def record_request(request: httpx.Request) -> None:
    """httpx event hook: passwords and tokens sent in JSON or form bodies."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        return  # a streamed body the test made up itself
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            register(*_fields(json.loads(body), REQUEST_FIELDS))
        except ValueError:
            return
    elif content_type.startswith("application/x-www-form-urlencoded"):
        form = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        register(*_fields(form, REQUEST_FIELDS))


async def record_response(response: httpx.Response) -> None:
    """httpx event hook: access and refresh tokens in JSON answers."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return
    await response.aread()
    try:
        register(*_fields(response.json(), RESPONSE_FIELDS))
    except ValueError:
        return


EVENT_HOOKS = {"request": [record_request], "response": [record_response]}
"""For ``httpx.AsyncClient(event_hooks=EVENT_HOOKS)``."""


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a broken record must not break the run; logging says so itself
            self.handleError(record)
            return
        self.lines.append((record.name, line))


_collector = _Collector()
_saved_levels: dict[str, int] = {}


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    _saved_levels[""] = root.level
    root.addHandler(_collector)
    root.setLevel(logging.DEBUG)
    for name, level in QUIETER.items():
        logger = logging.getLogger(name)
        _saved_levels[name] = logger.level
        if logger.level == logging.NOTSET:
            logger.setLevel(level)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(_collector)
    for name, level in _saved_levels.items():
        logging.getLogger(name or None).setLevel(level)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Module-level test passwords and secrets count as created by the suite."""
    seen: set[int] = set()
    for item in items:
        module = getattr(item, "module", None)
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        register(*(v for k, v in vars(module).items() if MODULE_NAMES.search(k)))


def _mask(line: str, secret: str) -> str:
    shown = line.replace(secret, secret[:6] + "…[masked]")
    return shown if len(shown) <= 200 else shown[:200] + "…"


def find_leaks(lines: Iterable[tuple[str, str]], secrets: Iterable[str]) -> list[str]:
    """One description per leaking line: the logger and the masked, cut line."""
    secrets = sorted(secrets, key=len, reverse=True)
    leaks = []
    for name, line in lines:
        hit = next((s for s in secrets if s in line), None)
        if hit is None:
            shaped = SECRET_SHAPES.search(line)
            hit = shaped.group() if shaped else None
        if hit is not None:
            leaks.append(f"{name}: {_mask(line, hit)}")
    return leaks


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = find_leaks(_collector.lines, _secrets)
    if not leaks:
        return
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = [f"{len(leaks)} log line(s) contain a secret the suite created:"]
    message.extend(f"  {leak}" for leak in leaks[:20])
    if len(leaks) > 20:
        message.append(f"  … and {len(leaks) - 20} more")
    if reporter is not None:
        reporter.section("secrets in logs", sep="=", red=True, bold=True)
        for line in message:
            reporter.write_line(line)
    else:  # pragma: no cover (no terminal, e.g. -p no:terminal)
        print("\n".join(message))
