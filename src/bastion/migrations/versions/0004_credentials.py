"""More ways in: API keys, OAuth clients, browser sessions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Self-contained like the earlier revisions: types are spelled out here, not
imported from ``bastion.stores.sql.tables``, so later changes to the models
cannot rewrite what this revision did. One section per table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401 (used by the sections below)
from alembic import op  # noqa: F401 (used by the sections below)

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _upgrade_api_keys()
    _upgrade_oauth_clients()
    _upgrade_browser_sessions()


def downgrade() -> None:
    _downgrade_browser_sessions()
    _downgrade_oauth_clients()
    _downgrade_api_keys()


# ------------------------------------------------------------------ API keys


def _upgrade_api_keys() -> None:
    pass


def _downgrade_api_keys() -> None:
    pass


# ------------------------------------------------------------------ OAuth clients


def _upgrade_oauth_clients() -> None:
    pass


def _downgrade_oauth_clients() -> None:
    pass


# ------------------------------------------------------------------ browser sessions


def _upgrade_browser_sessions() -> None:
    pass


def _downgrade_browser_sessions() -> None:
    pass
