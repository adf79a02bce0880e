"""The ``bastion`` command, run as a real subprocess against a temporary SQLite
database: clear one-line errors and non-zero exits instead of tracebacks, and
the password read from stdin never printed.

Every command start costs about a second of imports, so the independent
scenarios below run concurrently, once per module, each in its own directory
and database; the tests then assert on what each step printed.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bastion.stores.sql.migrate import upgrade_sync

PASSWORD = "a long and unusual passphrase"
OTHER_PASSWORD = "another quite unusual phrase"
WEAK = {
    "common": "football",
    "too_short": "shorty",
    "contains_email": "margaret likes tea",
}
"""Refused passwords, by reason; the emails below are margaret@example.com."""
MIGRATED_FIRST = {"weak", "keys"}
"""Scenarios whose database is migrated in-process beforehand, to save a command start."""
WEAK_DETAILS = {
    "common": "too common",
    "too_short": "at least 8 characters",
    "contains_email": "name part of your email address",
}
ALL_PASSWORDS = (PASSWORD, OTHER_PASSWORD, *WEAK.values())

TIMEOUT = 60
"""Seconds any one command may take; ``serve`` must exit long before."""


@dataclass(frozen=True)
class Step:
    args: tuple[str, ...]
    stdin: str = ""
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Scenario:
    """Steps run in order, in one directory with its own database."""

    directory: Path
    results: list[Result]

    @property
    def database(self) -> Path:
        return self.directory / "bastion.db"

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.database) as conn:
            return conn.execute(sql).fetchall()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SCENARIOS: dict[str, list[Step]] = {
    "create": [
        Step(("db", "upgrade")),
        Step(
            ("users", "create", "--email", "ada@example.com", "--password-stdin"), PASSWORD + "\n"
        ),
        Step(
            ("users", "create", "--email", "ADA@Example.com", "--password-stdin"),
            OTHER_PASSWORD + "\n",
        ),
    ],
    "weak": [
        *(
            Step(("users", "create", "--email", "margaret@example.com", "--password-stdin"), p)
            for p in WEAK.values()
        ),
    ],
    "keys": [
        Step(("keys", "rotate")),
        Step(("keys", "rotate")),
        Step(("keys", "list")),
    ],
    "unmigrated": [
        Step(("users", "create", "--email", "ada@example.com", "--password-stdin"), PASSWORD),
    ],
    "production": [
        Step(
            ("serve",),
            env={"BASTION_MODE": "production", "BASTION_PORT": str(free_port())},
        ),
    ],
}


def cli_env(directory: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any ``BASTION_*`` variable, plus a
    database and secret-key file in ``directory`` and cheap argon2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(
        BASTION_DATABASE_URL=f"sqlite+aiosqlite:///{directory / 'bastion.db'}",
        BASTION_SECRET_KEY_FILE=str(directory / "secret" / "key"),
        BASTION_ARGON2_MEMORY_COST="8192",
        BASTION_ARGON2_TIME_COST="1",
    )
    env.update(extra)
    return env


def run_scenario(directory: Path, steps: list[Step]) -> Scenario:
    results = []
    for step in steps:
        done = subprocess.run(
            [sys.executable, "-m", "bastion.cli", *step.args],
            input=step.stdin,
            capture_output=True,
            text=True,
            cwd=directory,  # no stray .env, no ./bastion.db
            env=cli_env(directory, step.env),
            timeout=TIMEOUT,
            check=False,
        )
        results.append(Result(step.args, done.returncode, done.stdout, done.stderr))
    return Scenario(directory, results)


def run_scenarios(
    root: Path, scenarios: dict[str, list[Step]], migrated_first: set[str]
) -> dict[str, Scenario]:
    """Run independent scenarios side by side, each in its own directory and
    database; those in ``migrated_first`` are migrated in-process beforehand."""
    for name in scenarios:
        (root / name).mkdir()
        if name in migrated_first:
            upgrade_sync(f"sqlite+aiosqlite:///{root / name / 'bastion.db'}")
    with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        futures = {
            name: pool.submit(run_scenario, root / name, steps) for name, steps in scenarios.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario]:
    return run_scenarios(tmp_path_factory.mktemp("cli"), SCENARIOS, MIGRATED_FIRST)


def assert_clean_failure(result: Result) -> None:
    """Non-zero, with an ``error:`` line on stderr and no traceback."""
    assert result.returncode != 0, result
    assert "error: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


# ------------------------------------------------------------------ db


def test_db_upgrade_creates_the_schema(scenarios: dict[str, Scenario]) -> None:
    """``db upgrade`` migrates an empty database to head and says so."""
    scenario = scenarios["create"]
    result = scenario.results[0]
    assert result.returncode == 0, result.stderr
    assert "database at revision head" in result.stdout
    tables = {row[0] for row in scenario.rows("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "signing_keys", "alembic_version"} <= tables


# ------------------------------------------------------------------ users


def test_users_create_reads_the_password_from_stdin(scenarios: dict[str, Scenario]) -> None:
    """``users create --password-stdin`` stores an argon2id hash of the stdin password."""
    scenario = scenarios["create"]
    result = scenario.results[1]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("created user ")
    assert "<ada@example.com>" in result.stdout
    rows = scenario.rows("SELECT email, password_hash, is_active FROM users")
    assert len(rows) == 1
    email, password_hash, is_active = rows[0]
    assert email == "ada@example.com"
    assert isinstance(password_hash, str)
    assert password_hash.startswith("$argon2id$v=19$m=8192,t=1,")
    assert is_active


def test_users_create_duplicate_fails_cleanly(scenarios: dict[str, Scenario]) -> None:
    """A duplicate address, in any case, exits non-zero with a clear message."""
    scenario = scenarios["create"]
    result = scenario.results[2]
    assert_clean_failure(result)
    assert "error: An account with this email address already exists." in result.stderr
    assert scenario.rows("SELECT email FROM users") == [("ada@example.com",)]


@pytest.mark.parametrize(("index", "reason"), list(enumerate(WEAK)), ids=list(WEAK))
def test_users_create_weak_password_names_the_reason(
    scenarios: dict[str, Scenario], index: int, reason: str
) -> None:
    """A password the policy refuses exits non-zero with the rule it broke, and writes nothing."""
    scenario = scenarios["weak"]
    result = scenario.results[index]
    assert_clean_failure(result)
    assert WEAK_DETAILS[reason] in result.stderr
    assert scenario.rows("SELECT count(*) FROM users") == [(0,)]


def test_users_create_on_an_unmigrated_database_fails_cleanly(
    scenarios: dict[str, Scenario],
) -> None:
    """Creating a user before ``db upgrade`` is an error message, not a traceback."""
    assert_clean_failure(scenarios["unmigrated"].results[0])


# ------------------------------------------------------------------ keys


def test_keys_rotate_twice_leaves_one_active_key(scenarios: dict[str, Scenario]) -> None:
    """After two rotations ``keys list`` shows one active key, the old one published."""
    scenario = scenarios["keys"]
    first, second, listing = scenario.results
    for result in (first, second, listing):
        assert result.returncode == 0, result.stderr
    kids = [r.stdout.split()[3] for r in (first, second)]
    assert all(r.stdout.startswith("new active key ") for r in (first, second))
    assert kids[0] != kids[1]

    header, *lines = listing.stdout.splitlines()
    assert header.split("\t") == ["kid", "algorithm", "state", "created", "retired"]
    states = {line.split("\t")[0]: line.split("\t")[2] for line in lines}
    assert list(states.values()).count("active") == 1
    assert states[kids[1]] == "active"
    assert states[kids[0]] == "published"


# ------------------------------------------------------------------ serve


def test_production_serve_without_secret_key_refuses_to_start(
    scenarios: dict[str, Scenario],
) -> None:
    """Production ``serve`` without a secret exits naming ``BASTION_SECRET_KEY``."""
    scenario = scenarios["production"]
    result = scenario.results[0]
    assert_clean_failure(result)
    assert "BASTION_SECRET_KEY" in result.stderr
    assert "Uvicorn running" not in result.stderr
    assert "Started server process" not in result.stderr
    assert not (scenario.directory / "secret").exists()
    assert not scenario.database.exists()


# ------------------------------------------------------------------ secrets


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_password_never_printed(scenarios: dict[str, Scenario], name: str) -> None:
    """No password given on stdin comes back on stdout or stderr, in any step."""
    for result in scenarios[name].results:
        for password in ALL_PASSWORDS:
            assert password not in result.stdout
            assert password not in result.stderr
