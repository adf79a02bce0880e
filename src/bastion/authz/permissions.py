"""Permission and role names, and the one rule for what a permission grants.

A permission is an OAuth scope-token (RFC 6749 §3.3) of a deliberately
narrower shape, so it reads the same in a token, a log line and an admin page:

- ``resource:action`` such as ``invoices:read``, or a bare word such as
  ``profile`` (the scopes clients already ask for);
- each part made of ASCII letters, digits, ``_``, ``.`` and ``-``;
- ``resource:*`` as the only wildcard: the whole action, never part of a word,
  never the resource, and never ``*`` alone (a grant-everything permission
  would survive every new resource added later);
- at most :data:`MAX_PERMISSION_LENGTH` characters.

Matching is exact and case-sensitive (§3.3 scope tokens are), except that a
granted ``invoices:*`` grants every ``invoices:<action>``. It does not grant
``invoicesx:read`` (no prefix matching) nor the bare word ``invoices``.

Scopes are permissions too: the ``scope`` of a token is the requested scopes
narrowed to the user's effective permissions (:func:`narrow`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from bastion.errors import InvalidInput

__all__ = [
    "MAX_PERMISSION_LENGTH",
    "MAX_ROLE_NAME_LENGTH",
    "WILDCARD",
    "allows",
    "narrow",
    "permission_grants",
    "validate_permission",
    "validate_permissions",
    "validate_role_name",
]

MAX_PERMISSION_LENGTH: Final = 128
MAX_ROLE_NAME_LENGTH: Final = 64
WILDCARD: Final = "*"

_PART = r"[A-Za-z0-9_.\-]+"
_PERMISSION = re.compile(rf"(?:{_PART})(?::(?:{_PART}|\*))?")
_ROLE_NAME = re.compile(r"[a-z][a-z0-9_\-]*")


def validate_permission(permission: str) -> str:
    """``permission`` unchanged if well formed; :class:`InvalidInput` otherwise."""
    if not isinstance(permission, str):
        raise InvalidInput("A permission must be a string.")
    if not 0 < len(permission) <= MAX_PERMISSION_LENGTH:
        raise InvalidInput(f"A permission must be 1 to {MAX_PERMISSION_LENGTH} characters long.")
    if not _PERMISSION.fullmatch(permission):
        raise InvalidInput(
            "A permission must be 'resource:action', 'resource:*' or a single word, "
            "made of letters, digits, '_', '.' and '-'."
        )
    return permission


def validate_permissions(permissions: Iterable[str]) -> frozenset[str]:
    """Every one of ``permissions`` validated, as a set."""
    if isinstance(permissions, str):  # a lone string would iterate by character
        raise InvalidInput("Permissions must be a list of strings.")
    return frozenset(validate_permission(p) for p in permissions)


def validate_role_name(name: str) -> str:
    """``name`` unchanged if it is a valid role name; :class:`InvalidInput` otherwise.

    Lower case only, so ``Admin`` and ``admin`` can never be two roles that an
    operator (or a case-insensitive comparison somewhere) confuses."""
    if not isinstance(name, str):
        raise InvalidInput("A role name must be a string.")
    if not 0 < len(name) <= MAX_ROLE_NAME_LENGTH or not _ROLE_NAME.fullmatch(name):
        raise InvalidInput(
            f"A role name must be 1 to {MAX_ROLE_NAME_LENGTH} characters: a lower-case "
            "letter, then lower-case letters, digits, '_' or '-'."
        )
    return name


def _wildcard_for(required: str) -> str | None:
    """The wildcard that would grant ``required`` (``invoices:*`` for
    ``invoices:read``), or None when no wildcard can (a bare word, a wildcard
    itself, anything malformed)."""
    resource, colon, action = required.partition(":")
    if not resource or not colon or not action or action == WILDCARD:
        return None
    if ":" in action or WILDCARD in resource:
        return None
    return f"{resource}:{WILDCARD}"


def permission_grants(granted: str, required: str) -> bool:
    """Whether holding ``granted`` allows what needs ``required``.

    Exact match, or ``granted`` is ``resource:*`` and ``required`` is
    ``resource:<action>`` for the same resource. A wildcard is granted only by
    itself: ``invoices:*`` is not implied by any set of concrete actions."""
    if granted == required:
        return True
    return granted.endswith(":*") and _wildcard_for(required) == granted


def allows(granted: Iterable[str], required: str) -> bool:
    """Whether any of ``granted`` grants ``required`` (see :func:`permission_grants`).

    Two set lookups when ``granted`` is a set or frozenset (a token's scopes
    are), so the check costs the same however many permissions a token holds."""
    if isinstance(granted, (set, frozenset)):
        if required in granted:
            return True
        wildcard = _wildcard_for(required)
        return wildcard is not None and wildcard in granted
    return any(permission_grants(g, required) for g in granted)


def narrow(requested: Iterable[str], effective: Iterable[str]) -> frozenset[str]:
    """The scopes to grant: RFC 6749 §3.3's "may fully or partially ignore the
    scope requested" applied to the user's ``effective`` permissions.

    - nothing requested: every effective permission;
    - otherwise each requested scope that an effective permission grants
      (``invoices:read`` through ``invoices:*``; a requested ``invoices:*`` only
      if ``invoices:*`` itself is effective), and nothing else.

    An empty result for a non-empty request is for the caller to refuse with
    ``invalid_scope``; this function does not raise."""
    effective_set = frozenset(effective)
    wanted = frozenset(requested)
    if not wanted:
        return effective_set
    return frozenset(scope for scope in wanted if allows(effective_set, scope))
