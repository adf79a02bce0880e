"""The roles Bastion ships with, as documentation for OpenAPI and the README.

The rows themselves are seeded by migration ``0003_authorization`` (migrations
are frozen history, so they keep their own copy); operators change them at
will through the admin API or ``bastion roles``.
"""

from __future__ import annotations

DOCUMENTED_SCOPES: dict[str, str] = {
    "profile": "Read your own account (role user)",
    "email": "Read your email address (role user)",
    "content:read": "Read content (role editor)",
    "content:write": "Change content (role editor)",
    "users:admin": "Manage users (role admin)",
    "roles:admin": "Manage roles and permissions (role admin)",
    "sessions:admin": "End other users' sessions (role admin)",
    "audit:read": "Read the audit log (role admin)",
    "tokens:introspect": "Introspect tokens, RFC 7662 (role admin)",
}
"""Scopes offered by Swagger UI's Authorize dialog; any permission a role
holds can be requested, listed here or not."""
