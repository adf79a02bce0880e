"""Users and signing keys.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Self-contained on purpose: types are spelled out here rather than imported
from ``bastion.stores.sql.tables``, so later changes to the models cannot
rewrite history. ``tests/stores/test_migrations.py`` checks the result matches
the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("email_canonical", sa.String(length=320), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("username_canonical", sa.String(length=64), nullable=True),
        sa.Column("password_hash", sa.String(length=512), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("email_verified", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email_canonical", name=op.f("uq_users_email_canonical")),
        sa.UniqueConstraint("username_canonical", name=op.f("uq_users_username_canonical")),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("encrypted_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    op.create_index(
        op.f("ix_signing_keys_retired_at"), "signing_keys", ["retired_at"], unique=False
    )
    # At most one active key: every active row has (retired_at IS NULL) = true.
    op.create_index(
        "uq_signing_keys_one_active",
        "signing_keys",
        [sa.text("(retired_at IS NULL)")],
        unique=True,
        sqlite_where=sa.text("retired_at IS NULL"),
        postgresql_where=sa.text("retired_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_signing_keys_one_active", table_name="signing_keys")
    op.drop_index(op.f("ix_signing_keys_retired_at"), table_name="signing_keys")
    op.drop_table("signing_keys")
    op.drop_table("users")
