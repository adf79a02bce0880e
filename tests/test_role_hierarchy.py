"""The role graph: closures, effective permissions and cycle detection."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from bastion.authz.hierarchy import effective_permissions, expand_roles, find_cycle, format_cycle
from bastion.stores.protocols import Role

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def role(name: str, parents: Iterable[str] = (), permissions: Iterable[str] = ()) -> Role:
    return Role(
        name=name,
        description="",
        parents=frozenset(parents),
        permissions=frozenset(permissions),
        created_at=T0,
        updated_at=T0,
    )


def graph(*roles: Role) -> dict[str, Role]:
    return {r.name: r for r in roles}


SEEDED = graph(
    role("user", (), ("profile", "email")),
    role("editor", ("user",), ("content:read", "content:write")),
    role("admin", ("editor",), ("users:admin", "roles:admin")),
)

DIAMOND = graph(
    role("base", (), ("base:read",)),
    role("left", ("base",), ("left:read",)),
    role("right", ("base",), ("right:read",)),
    role("top", ("left", "right"), ("top:read",)),
)


@pytest.mark.parametrize(
    ("direct", "closure"),
    [
        pytest.param(["user"], {"user"}, id="user"),
        pytest.param(["editor"], {"editor", "user"}, id="editor"),
        pytest.param(["admin"], {"admin", "editor", "user"}, id="admin"),
        pytest.param(["user", "admin"], {"admin", "editor", "user"}, id="redundant-direct"),
        pytest.param([], set(), id="no-roles"),
        pytest.param(["ghost"], set(), id="unknown-direct-dropped"),
        pytest.param(["ghost", "editor"], {"editor", "user"}, id="unknown-among-known"),
    ],
)
def test_seeded_closure(direct: list[str], closure: set[str]) -> None:
    """admin ⊇ editor ⊇ user: a role holds every role it includes; unknown names grant nothing."""
    assert expand_roles(direct, SEEDED) == closure


@pytest.mark.parametrize(
    ("direct", "permissions"),
    [
        pytest.param(["user"], {"profile", "email"}, id="user"),
        pytest.param(
            ["editor"], {"profile", "email", "content:read", "content:write"}, id="editor"
        ),
        pytest.param(
            ["admin"],
            {"profile", "email", "content:read", "content:write", "users:admin", "roles:admin"},
            id="admin",
        ),
        pytest.param([], set(), id="no-roles"),
    ],
)
def test_seeded_effective_permissions(direct: list[str], permissions: set[str]) -> None:
    """Effective permissions are the union over the closure."""
    assert effective_permissions(direct, SEEDED) == permissions


def test_diamond_includes_the_shared_base_once() -> None:
    """Two paths to one role: the closure holds it once and its permissions count once."""
    assert expand_roles(["top"], DIAMOND) == {"top", "left", "right", "base"}
    assert effective_permissions(["top"], DIAMOND) == {
        "top:read",
        "left:read",
        "right:read",
        "base:read",
    }
    assert expand_roles(["left"], DIAMOND) == {"left", "base"}


def test_unknown_parent_is_ignored() -> None:
    """A parent that no longer exists is skipped, not an error."""
    roles = graph(role("a", ("gone",), ("a:read",)))
    assert expand_roles(["a"], roles) == {"a"}
    assert effective_permissions(["a"], roles) == {"a:read"}


def test_closure_survives_a_cycle_in_the_data() -> None:
    """A cycle that got into the data anyway ends the walk instead of looping."""
    roles = graph(role("a", ("b",), ("a:x",)), role("b", ("a",), ("b:x",)))
    assert expand_roles(["a"], roles) == {"a", "b"}
    assert effective_permissions(["b"], roles) == {"a:x", "b:x"}


# ------------------------------------------------------------------ cycles


@pytest.mark.parametrize(
    ("roles", "changed", "cycle"),
    [
        pytest.param(SEEDED, role("user", ("user",)), ["user", "user"], id="self-parent"),
        pytest.param(SEEDED, role("user", ("editor",)), ["user", "editor", "user"], id="two-cycle"),
        pytest.param(
            SEEDED,
            role("user", ("admin",)),
            ["user", "admin", "editor", "user"],
            id="three-cycle-through-update",
        ),
        pytest.param(
            DIAMOND,
            role("base", ("top",)),
            ["base", "top", "left", "base"],
            id="diamond-shortest-path",
        ),
        pytest.param(SEEDED, role("user", ("ghost",)), None, id="unknown-parent-no-cycle"),
        pytest.param(SEEDED, role("admin", ("user",)), None, id="shortcut-no-cycle"),
        pytest.param(SEEDED, role("owner", ("admin",)), None, id="new-role-on-top"),
        pytest.param(SEEDED, role("user", ()), None, id="drop-parents"),
        pytest.param(DIAMOND, role("top", ("left", "right", "base")), None, id="diamond-extra"),
    ],
)
def test_find_cycle(roles: dict[str, Role], changed: Role, cycle: list[str] | None) -> None:
    """Writing `changed` would close a cycle exactly when find_cycle returns its path."""
    assert find_cycle(roles, changed) == cycle


def test_find_cycle_uses_the_changed_role_not_the_stored_one() -> None:
    """The stored version of the changed role is replaced: removing a link removes its cycle."""
    roles = graph(role("a", ("b",)), role("b"))
    assert find_cycle(roles, role("b", ("a",))) == ["b", "a", "b"]
    assert find_cycle(roles, role("a", ())) is None


def test_format_cycle() -> None:
    """A cycle reads `a → b → a` in messages."""
    assert format_cycle(["a", "b", "a"]) == "a → b → a"


# ------------------------------------------------------------------ deep graphs

DEPTH = 2_000


@pytest.fixture(scope="module")
def chain() -> dict[str, Role]:
    """r0 includes r1 includes … r1999: far deeper than the recursion limit allows."""
    return graph(
        *(
            role(f"r{i}", (f"r{i + 1}",) if i + 1 < DEPTH else (), (f"p{i}:read",))
            for i in range(DEPTH)
        )
    )


def test_deep_chain_closure(chain: dict[str, Role]) -> None:
    """Closure over a 2,000-role chain: no RecursionError, every role and permission."""
    assert len(expand_roles(["r0"], chain)) == DEPTH
    assert len(effective_permissions(["r0"], chain)) == DEPTH
    assert expand_roles([f"r{DEPTH - 1}"], chain) == {f"r{DEPTH - 1}"}


def test_deep_chain_cycle(chain: dict[str, Role]) -> None:
    """Closing a 2,000-role chain into a ring is found, with the whole path."""
    last = f"r{DEPTH - 1}"
    cycle = find_cycle(chain, role(last, ("r0",)))
    assert cycle is not None
    assert len(cycle) == DEPTH + 1
    assert cycle[0] == cycle[-1] == last
    assert cycle[1] == "r0"
    assert find_cycle(chain, role(last, ("extra",))) is None
