"""Permission strings: the grammar, the wildcard rule and scope narrowing."""

from __future__ import annotations

import pytest

from bastion.authz.permissions import (
    MAX_PERMISSION_LENGTH,
    allows,
    narrow,
    permission_grants,
    validate_permission,
    validate_permissions,
    validate_role_name,
)
from bastion.errors import InvalidInput

# ------------------------------------------------------------------ matching

GRANTS = [
    pytest.param("invoices:read", "invoices:read", True, id="exact"),
    pytest.param("invoices:read", "invoices:write", False, id="other-action"),
    pytest.param("invoices:*", "invoices:read", True, id="wildcard-grants-action"),
    pytest.param("invoices:*", "invoices:*", True, id="wildcard-grants-itself"),
    pytest.param("invoices:read", "invoices:*", False, id="action-does-not-grant-wildcard"),
    pytest.param("invoices:*", "invoicesx:read", False, id="no-prefix-match-longer-resource"),
    pytest.param("invoice:*", "invoices:read", False, id="no-prefix-match-shorter-resource"),
    pytest.param("invoices:*", "invoices", False, id="wildcard-not-bare-word"),
    pytest.param("invoices", "invoices:read", False, id="bare-word-not-resource"),
    pytest.param("invoices:*", "invoices:read:all", False, id="wildcard-one-level-only"),
    pytest.param("invoices:*", "INVOICES:read", False, id="case-sensitive-resource"),
    pytest.param("invoices:read", "invoices:READ", False, id="case-sensitive-action"),
    pytest.param("profile", "profile", True, id="bare-word-exact"),
    pytest.param("profile", "Profile", False, id="bare-word-case"),
    pytest.param("*", "invoices:read", False, id="star-alone-grants-nothing"),
    pytest.param("*:*", "invoices:read", False, id="star-resource-grants-nothing"),
    pytest.param("a:b:*", "a:b:c", False, id="malformed-granted-wildcard"),
    pytest.param("invoices:*", "invoices:", False, id="empty-action"),
    pytest.param(":*", ":read", False, id="empty-resource"),
]


@pytest.mark.parametrize(("granted", "required", "expected"), GRANTS)
def test_permission_grants(granted: str, required: str, expected: bool) -> None:
    """A permission grants itself, and `resource:*` every action of that resource only."""
    assert permission_grants(granted, required) is expected


@pytest.mark.parametrize(("granted", "required", "expected"), GRANTS)
@pytest.mark.parametrize("container", [frozenset, set, list, tuple], ids=lambda c: c.__name__)
def test_allows_agrees_with_permission_grants(
    granted: str, required: str, expected: bool, container: type
) -> None:
    """`allows` gives the same answer whether the granted set is a set (fast path) or a list."""
    assert allows(container([granted, "other:thing"]), required) is expected


def test_allows_nothing_from_nothing() -> None:
    """No permissions allow nothing."""
    assert not allows(frozenset(), "invoices:read")
    assert not allows([], "invoices:read")


# ------------------------------------------------------------------ grammar


@pytest.mark.parametrize(
    "permission",
    [
        pytest.param("invoices:read", id="resource-action"),
        pytest.param("invoices:*", id="wildcard-action"),
        pytest.param("profile", id="bare-word"),
        pytest.param("offline_access", id="underscore"),
        pytest.param("api.v2-items:read_all", id="dots-dashes"),
        pytest.param("Invoices:Read", id="upper-case"),
        pytest.param("a" * 60 + ":" + "b" * 67, id="128-chars"),
    ],
)
def test_valid_permissions(permission: str) -> None:
    """Well-formed permissions come back unchanged."""
    assert validate_permission(permission) == permission


@pytest.mark.parametrize(
    "permission",
    [
        pytest.param("", id="empty"),
        pytest.param("*", id="star-alone"),
        pytest.param("*:read", id="star-resource"),
        pytest.param("*:*", id="star-star"),
        pytest.param("invoices:re*", id="partial-wildcard"),
        pytest.param("invoices*:read", id="wildcard-in-resource"),
        pytest.param("a:*:b", id="wildcard-in-the-middle"),
        pytest.param("a:b:c", id="three-parts"),
        pytest.param(":read", id="no-resource"),
        pytest.param("invoices:", id="no-action"),
        pytest.param(":", id="colon-alone"),
        pytest.param("invoices read", id="space"),
        pytest.param(" invoices:read", id="leading-space"),
        pytest.param("invoices:read\n", id="newline"),
        pytest.param("invoices:read\t", id="tab"),
        pytest.param('invoices:"read"', id="double-quote"),
        pytest.param("invoices:'read'", id="single-quote"),
        pytest.param("invoices:re\\ad", id="backslash"),
        pytest.param("invoices:read\x00", id="nul"),
        pytest.param("factures:lire\u00e9", id="non-ascii"),
        pytest.param("<script>", id="markup"),
        pytest.param("a" * 64 + ":" + "b" * 64, id="129-chars"),
    ],
)
def test_invalid_permissions(permission: str) -> None:
    """Malformed permissions raise InvalidInput."""
    with pytest.raises(InvalidInput):
        validate_permission(permission)


def test_max_permission_length_is_128() -> None:
    """The limit the store's column and the validator share."""
    assert MAX_PERMISSION_LENGTH == 128


def test_validate_permissions_refuses_a_lone_string() -> None:
    """A string is not a list of permissions (it would iterate by character)."""
    with pytest.raises(InvalidInput):
        validate_permissions("invoices:read")
    assert validate_permissions(["a:b", "a:b", "c"]) == {"a:b", "c"}


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        pytest.param("admin", True, id="word"),
        pytest.param("billing-admin_2", True, id="dash-underscore-digit"),
        pytest.param("a" * 64, True, id="64-chars"),
        pytest.param("a" * 65, False, id="65-chars"),
        pytest.param("", False, id="empty"),
        pytest.param("Admin", False, id="upper-case"),
        pytest.param("2fa", False, id="leading-digit"),
        pytest.param("ad min", False, id="space"),
        pytest.param("admin:all", False, id="colon"),
        pytest.param("a.b", False, id="dot"),
        pytest.param("*", False, id="star"),
    ],
)
def test_role_names(name: str, valid: bool) -> None:
    """Role names are lower-case words; anything else is InvalidInput."""
    if valid:
        assert validate_role_name(name) == name
    else:
        with pytest.raises(InvalidInput):
            validate_role_name(name)


# ------------------------------------------------------------------ narrowing

EFFECTIVE = frozenset({"profile", "email", "content:read", "invoices:*"})


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        pytest.param(set(), EFFECTIVE, id="none-requested-all-effective"),
        pytest.param({"profile"}, {"profile"}, id="subset"),
        pytest.param({"profile", "admin:all"}, {"profile"}, id="excess-dropped"),
        pytest.param({"invoices:read"}, {"invoices:read"}, id="concrete-through-wildcard"),
        pytest.param({"invoices:*"}, {"invoices:*"}, id="wildcard-held-itself"),
        pytest.param({"content:*"}, set(), id="wildcard-not-built-from-actions"),
        pytest.param({"content:write"}, set(), id="nothing-left-caller-raises"),
        pytest.param({"invoicesx:read"}, set(), id="prefix-trap"),
        pytest.param({"*"}, set(), id="star"),
        pytest.param({"Profile"}, set(), id="case-sensitive"),
    ],
)
def test_narrow(requested: set[str], expected: set[str]) -> None:
    """Requested scopes are narrowed to what the effective permissions grant (RFC 6749 §3.3)."""
    assert narrow(requested, EFFECTIVE) == expected


def test_narrow_with_no_permissions_grants_nothing() -> None:
    """A user without permissions gets an empty scope, requested or not."""
    assert narrow([], []) == frozenset()
    assert narrow(["profile"], []) == frozenset()
