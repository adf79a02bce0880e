"""``bastion users create --role``, ``users grant|revoke`` and ``bastion roles``
as real subprocesses over temporary SQLite databases: the seeded roles, a
custom role, assignments that expire the user's tokens, deleting a seeded
role, and one clear ``error:`` line (never a traceback) for every refusal.

Each command start costs about a second of imports, so the three
independent chains run concurrently, once per module (as in test_cli.py)."""

from __future__ import annotations

import sqlite3

import pytest

from tests.test_cli import (
    PASSWORD,
    Result,
    Scenario,
    Step,
    assert_clean_failure,
    run_scenarios,
)

ADA = "ada@example.com"
EVE = "eve@example.com"
ROLES_HEADER = "role\tparents\tpermissions"
SEEDED_LINES = [
    "admin\teditor\taudit:read roles:admin sessions:admin tokens:introspect users:admin",
    "editor\tuser\tcontent:read content:write",
    "user\t-\temail profile",
]

CHAINS: dict[str, list[Step]] = {
    "assign": [
        Step(("users", "create", "--email", ADA, "--password-stdin", "--role", "admin"), PASSWORD),
        Step(("roles", "create", "auditor", "--permission", "audit:read", "--parent", "user")),
        Step(("users", "grant", ADA, "auditor")),
        Step(("users", "revoke", ADA, "auditor")),
        Step(("users", "grant", ADA, "nosuchrole")),
    ],
    "seeded": [
        Step(("db", "upgrade")),
        Step(("roles", "list")),
        Step(("roles", "delete", "editor")),
        Step(("roles", "list")),
        Step(
            ("users", "create", "--email", EVE, "--password-stdin", "--role", "nosuchrole"),
            PASSWORD,
        ),
    ],
}
"""Two chains of five commands, run side by side; each command start costs
one to two seconds, so the set is kept to what only a subprocess can show."""
MIGRATED_FIRST = {"assign"}
"""Chains whose database is migrated in-process beforehand, to save a command start."""


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario]:
    return run_scenarios(tmp_path_factory.mktemp("cli-authz"), CHAINS, MIGRATED_FIRST)


def ok(result: Result) -> str:
    """Exit 0, nothing on stderr but log lines, no traceback; returns stdout."""
    assert result.returncode == 0, (result.args, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert "error:" not in result.stderr
    return result.stdout


def direct_roles(scenario: Scenario, email: str) -> list[str]:
    with sqlite3.connect(scenario.database) as conn:
        rows = conn.execute(
            "SELECT user_roles.role FROM user_roles JOIN users ON users.id = user_roles.user_id "
            "WHERE users.email = ? ORDER BY user_roles.role",
            (email,),
        ).fetchall()
    return [str(row[0]) for row in rows]


def test_no_command_prints_a_traceback_or_the_password(chains: dict[str, Scenario]) -> None:
    """Whatever each command did, its output has no traceback and no password."""
    for scenario in chains.values():
        for result in scenario.results:
            assert "Traceback" not in result.stdout + result.stderr, result
            assert PASSWORD not in result.stdout + result.stderr, result.args


def test_upgrade_seeds_the_three_roles(chains: dict[str, Scenario]) -> None:
    """``db upgrade`` seeds ``user`` ⊂ ``editor`` ⊂ ``admin``; ``roles list``
    shows each with its parents and permissions."""
    upgraded, listed = chains["seeded"].results[:2]
    assert "database at revision head" in ok(upgraded)
    assert ok(listed).splitlines() == [ROLES_HEADER, *SEEDED_LINES]


def test_create_user_with_role(chains: dict[str, Scenario]) -> None:
    """``users create --role admin`` gives exactly that role (not the default ``user``)."""
    scenario = chains["assign"]
    assert f"<{ADA}>" in ok(scenario.results[0])
    [(user_id,)] = scenario.rows("SELECT id FROM users")
    events = scenario.rows("SELECT action, actor FROM audit_events WHERE action = 'user.created'")
    assert events == [("user.created", "cli")]
    assert user_id


def test_create_role_then_grant_and_revoke_it(chains: dict[str, Scenario]) -> None:
    """``roles create`` with a parent and a permission; ``users grant`` adds
    the role (printing the user's roles), ``users revoke`` takes it away and
    sets a watermark on the user's tokens; each change is an audit event by ``cli``."""
    scenario = chains["assign"]
    created, granted, revoked = scenario.results[1:4]
    assert ok(created).strip() == "created role auditor"
    assert ok(granted).strip() == f"{ADA}: admin auditor"
    assert ok(revoked).strip() == f"{ADA}: admin"
    assert direct_roles(scenario, ADA) == ["admin"]
    assert scenario.rows("SELECT parent FROM role_parents WHERE role = 'auditor'") == [("user",)]
    assert scenario.rows("SELECT permission FROM role_permissions WHERE role = 'auditor'") == [
        ("audit:read",)
    ]
    events = scenario.rows(
        "SELECT action, actor FROM audit_events WHERE action IN "
        "('role.created', 'user.roles_changed') ORDER BY at, action"
    )
    assert events == [
        ("role.created", "cli"),
        ("user.roles_changed", "cli"),
        ("user.roles_changed", "cli"),
    ]
    assert len(scenario.rows("SELECT * FROM token_watermarks")) == 1


def test_grant_of_unknown_role_fails_cleanly(chains: dict[str, Scenario]) -> None:
    """``users grant`` with a role that does not exist: non-zero, one
    ``error:`` line naming it, and the user's roles unchanged."""
    scenario = chains["assign"]
    failed = scenario.results[4]
    assert_clean_failure(failed)
    assert "Unknown role: nosuchrole" in failed.stderr
    assert direct_roles(scenario, ADA) == ["admin"]


def test_create_user_with_unknown_role_fails_and_writes_nothing(
    chains: dict[str, Scenario],
) -> None:
    """``users create --role nosuchrole``: non-zero, a clear message, no user."""
    scenario = chains["seeded"]
    failed = scenario.results[4]
    assert_clean_failure(failed)
    assert "Unknown role: nosuchrole" in failed.stderr
    assert scenario.rows("SELECT email FROM users") == []


def test_delete_seeded_role(chains: dict[str, Scenario]) -> None:
    """``roles delete editor``: gone from ``roles list``, and ``admin`` no
    longer includes it (no parents left)."""
    scenario = chains["seeded"]
    deleted, listed = scenario.results[2:4]
    assert ok(deleted).strip() == "deleted role editor"
    assert ok(listed).splitlines() == [
        ROLES_HEADER,
        SEEDED_LINES[0].replace("editor", "-"),
        SEEDED_LINES[2],
    ]
    assert scenario.rows("SELECT role, parent FROM role_parents") == []
    [(before,)] = scenario.rows("SELECT before FROM audit_events WHERE action = 'role.deleted'")
    assert '"editor"' in str(before)
