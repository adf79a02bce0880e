"""Authorization: roles as data, ``resource:action`` permissions, scopes.

- :mod:`~bastion.authz.permissions`: names, the wildcard rule, scope narrowing;
- :mod:`~bastion.authz.hierarchy`: role closures and cycle checks;
- :mod:`~bastion.authz.service`: :class:`AuthorizationService`, what the token
  endpoint and the admin API call;
- :mod:`~bastion.authz.ownership`: object-level checks (OWASP API1:2023).

Route-level checks are on the guard: ``guard.require_roles(...)``,
``guard.require_permissions(...)`` (:class:`bastion.guard.BearerGuard`).
"""

from bastion.authz.hierarchy import effective_permissions, expand_roles, find_cycle
from bastion.authz.ownership import ensure_owner_or_permission, is_owner
from bastion.authz.permissions import (
    allows,
    narrow,
    permission_grants,
    validate_permission,
    validate_permissions,
    validate_role_name,
)
from bastion.authz.service import AuthorizationService, Effective

__all__ = [
    "AuthorizationService",
    "Effective",
    "allows",
    "effective_permissions",
    "ensure_owner_or_permission",
    "expand_roles",
    "find_cycle",
    "is_owner",
    "narrow",
    "permission_grants",
    "validate_permission",
    "validate_permissions",
    "validate_role_name",
]
