"""Authorization: roles with a hierarchy, their permissions, users' roles, and
the audit trail. Seeds the default roles and gives every existing user ``user``.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01

Self-contained like 0001: types and the seeded roles are spelled out here, not
imported from ``bastion.stores.sql.tables`` or elsewhere, so later changes
cannot rewrite what this revision did.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, description, parents, permissions): the roles the product ships with.
DEFAULT_ROLES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("user", "Every account", (), ("profile", "email")),
    ("editor", "Reads and writes content", ("user",), ("content:read", "content:write")),
    (
        "admin",
        "Administers users, roles, sessions and the audit log",
        ("editor",),
        ("users:admin", "roles:admin", "audit:read", "tokens:introspect", "sessions:admin"),
    ),
)
SEEDED_AT = datetime(2025, 3, 1, tzinfo=UTC)


def upgrade() -> None:
    roles = op.create_table(
        "roles",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_roles")),
    )
    role_parents = op.create_table(
        "role_parents",
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("parent", sa.String(length=64), nullable=False),
        sa.CheckConstraint("role <> parent", name=op.f("ck_role_parents_not_self")),
        sa.ForeignKeyConstraint(
            ["role"],
            ["roles.name"],
            name=op.f("fk_role_parents_role_roles"),
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent"],
            ["roles.name"],
            name=op.f("fk_role_parents_parent_roles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role", "parent", name=op.f("pk_role_parents")),
    )
    role_permissions = op.create_table(
        "role_permissions",
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("permission", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["role"],
            ["roles.name"],
            name=op.f("fk_role_permissions_role_roles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role", "permission", name=op.f("pk_role_permissions")),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_roles_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["role"],
            ["roles.name"],
            name=op.f("fk_user_roles_role_roles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "role", name=op.f("pk_user_roles")),
    )
    op.create_index(op.f("ix_user_roles_role"), "user_roles", ["role"], unique=False)
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_action"), "audit_events", ["action"], unique=False)
    op.create_index(op.f("ix_audit_events_actor"), "audit_events", ["actor"], unique=False)
    op.create_index(op.f("ix_audit_events_target"), "audit_events", ["target"], unique=False)
    op.create_index("ix_audit_events_at_id", "audit_events", ["at", "id"], unique=False)

    op.bulk_insert(
        roles,
        [
            {"name": name, "description": text, "created_at": SEEDED_AT, "updated_at": SEEDED_AT}
            for name, text, _, _ in DEFAULT_ROLES
        ],
    )
    op.bulk_insert(
        role_parents,
        [
            {"role": name, "parent": parent}
            for name, _, parents, _ in DEFAULT_ROLES
            for parent in parents
        ],
    )
    op.bulk_insert(
        role_permissions,
        [
            {"role": name, "permission": permission}
            for name, _, _, permissions in DEFAULT_ROLES
            for permission in permissions
        ],
    )
    # Every account has the base role ("Every account"), existing ones included.
    op.execute("INSERT INTO user_roles (user_id, role) SELECT id, 'user' FROM users")


def downgrade() -> None:
    op.drop_index("ix_audit_events_at_id", table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_target"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_actor"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_action"), table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index(op.f("ix_user_roles_role"), table_name="user_roles")
    op.drop_table("user_roles")
    op.drop_table("role_permissions")
    op.drop_table("role_parents")
    op.drop_table("roles")
