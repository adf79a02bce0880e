"""SQL stores: SQLAlchemy 2 async over SQLite (aiosqlite) or PostgreSQL
(asyncpg), with Alembic migrations shipped in the package.

Typical wiring::

    engine = create_engine(settings.database_url)
    await upgrade(settings.database_url)
    sessions = create_sessionmaker(engine)
    users, keys = SqlUserStore(sessions), SqlKeyStore(sessions)
    refresh = SqlRefreshTokenStore(sessions)
    revocations = SqlRevocationStore(sessions, clock=clock)
    roles, audit = SqlRoleStore(sessions), SqlAuditStore(sessions)
    ...
    await engine.dispose()
"""

from bastion.stores.sql.api_keys import SqlApiKeyStore
from bastion.stores.sql.audit import SqlAuditStore
from bastion.stores.sql.browser_sessions import SqlBrowserSessionStore
from bastion.stores.sql.clients import SqlClientStore
from bastion.stores.sql.engine import create_engine, create_sessionmaker, normalize_database_url
from bastion.stores.sql.keys import SqlKeyStore
from bastion.stores.sql.migrate import current_revision, head_revision, upgrade, upgrade_sync
from bastion.stores.sql.refresh import SqlRefreshTokenStore
from bastion.stores.sql.revocation import SqlRevocationStore
from bastion.stores.sql.roles import SqlRoleStore
from bastion.stores.sql.users import SqlUserStore

__all__ = [
    "SqlApiKeyStore",
    "SqlAuditStore",
    "SqlBrowserSessionStore",
    "SqlClientStore",
    "SqlKeyStore",
    "SqlRefreshTokenStore",
    "SqlRevocationStore",
    "SqlRoleStore",
    "SqlUserStore",
    "create_engine",
    "create_sessionmaker",
    "current_revision",
    "head_revision",
    "normalize_database_url",
    "upgrade",
    "upgrade_sync",
]
