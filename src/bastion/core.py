"""One Bastion instance: settings wired to stores, services and the guard.

The same object serves both ways in. ``bastion serve`` wraps it in an app
(:func:`bastion.server.app.create_app`); an embedding application does
``app.include_router(bastion.router)`` and uses ``bastion.current_principal``
in its own routes, with ``lifespan=bastion.lifespan``. Everything is built
eagerly and without I/O in ``__init__``; :meth:`startup` touches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.accounts import AccountService
from bastion.api_keys import ApiKeyService
from bastion.audit import AuditLog
from bastion.authz import AuthorizationService
from bastion.authz.defaults import DOCUMENTED_SCOPES
from bastion.browser_sessions import BrowserSessionService
from bastion.clients import ClientService
from bastion.clock import Clock, SystemClock
from bastion.credentials.any import AnyPrincipal
from bastion.credentials.api_key import ApiKeyGuard
from bastion.credentials.basic import HttpBasicGuard
from bastion.credentials.session_cookie import SessionGuard
from bastion.csrf import OriginPolicy, derive_csrf_key
from bastion.errors import ConfigurationError
from bastion.guard import BearerGuard, TokenVerifier
from bastion.keys import LocalKeyManager
from bastion.lockout import Lockout
from bastion.login import PasswordChange, PasswordLogin
from bastion.password_policy import PasswordPolicy
from bastion.passwords import PasswordHasher
from bastion.ratelimit import RateLimiter
from bastion.readiness import Probe, Sleep, wait_until_ready
from bastion.server.context import TrustedProxies
from bastion.settings import Settings
from bastion.stores.memory import MemoryBrowserSessionStore, MemoryRevocationStore
from bastion.stores.protocols import BrowserSessionStore, RevocationStore
from bastion.stores.redis import RedisBrowserSessionStore, RedisRevocationStore, create_redis
from bastion.stores.sql import (
    SqlApiKeyStore,
    SqlAuditStore,
    SqlBrowserSessionStore,
    SqlClientStore,
    SqlKeyStore,
    SqlRefreshTokenStore,
    SqlRevocationStore,
    SqlRoleStore,
    SqlUserStore,
    create_engine,
    create_sessionmaker,
)
from bastion.tokens.access import AccessTokenIssuer
from bastion.tokens.grants import GrantService
from bastion.tokens.introspection import IntrospectionService
from bastion.tokens.refresh import RefreshTokenService
from bastion.tokens.revocation import RevocationChecker, RevocationService

logger = logging.getLogger("bastion")

TOKEN_PATH = "/oauth/token"


class Bastion:
    """The wiring of one Bastion: build once per process, share everywhere."""

    def __init__(self, settings: Settings | None = None, *, clock: Clock | None = None) -> None:
        self.settings = settings = settings or Settings()
        settings.check_production()
        self.clock = clock = clock or SystemClock()

        self._housekeeping: asyncio.Task[None] | None = None
        self.engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            connect_timeout=settings.db_connect_timeout,
        )
        sessions = create_sessionmaker(self.engine)
        self.audit = AuditLog(clock, SqlAuditStore(sessions))
        self.users = SqlUserStore(sessions)
        self.role_store = SqlRoleStore(sessions)
        self.authz = AuthorizationService(
            self.role_store, self.audit, clock, cache_ttl=settings.role_cache_ttl
        )
        self.key_store = SqlKeyStore(sessions)
        self.refresh_store = SqlRefreshTokenStore(sessions)
        self.redis = (
            create_redis(settings.redis_url, max_connections=settings.redis_max_connections)
            if settings.redis_url
            else None
        )
        self.revocation_store = self._revocation_store(sessions)

        self.hasher = PasswordHasher(
            memory_cost=settings.argon2_memory_cost,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        )
        self.policy = PasswordPolicy(
            min_length=settings.password_min_length, max_length=settings.password_max_length
        )
        self.accounts = AccountService(self.users, self.hasher, self.policy, clock)

        # Rate limits and lockout share one storage: Redis when configured
        # (limits hold across instances), else this process's memory.
        self.trusted_proxies = TrustedProxies(settings.trusted_proxies)
        self.limiter = RateLimiter.from_settings(settings, self.redis)
        self.lockout = Lockout.from_settings(
            settings, self.limiter, self.audit, subject_of=self._subject_of
        )

        self.keys = LocalKeyManager(
            self.key_store,
            settings.resolved_secret_key(),
            settings.key_algorithm,
            clock,
            access_token_ttl=settings.access_token_ttl,
            leeway=settings.token_leeway,
            cache_ttl=settings.key_cache_ttl,
        )
        self.tokens = AccessTokenIssuer(
            self.keys,
            issuer=settings.issuer,
            audience=settings.audience,
            ttl=settings.access_token_ttl,
            clock=clock,
        )
        self.refresh = RefreshTokenService(
            self.refresh_store,
            self.audit,
            clock,
            ttl=settings.refresh_token_ttl,
            idle_timeout=settings.refresh_idle_timeout,
            reuse_grace=settings.refresh_reuse_grace,
        )
        self.password_login = PasswordLogin(self.accounts, self.audit, self.lockout)
        self.grants = GrantService(
            self.accounts,
            self.authz,
            self.tokens,
            self.refresh,
            password_grant_enabled=settings.allow_password_grant,
            audit=self.audit,
            login=self.password_login,
        )
        self.revocation_checker = RevocationChecker(
            self.revocation_store, clock, max_staleness=settings.revocation_cache_ttl
        )
        self.revocations = RevocationService(
            self.revocation_store,
            self.refresh,
            self.revocation_checker,
            self.audit,
            clock,
            access_token_ttl=settings.access_token_ttl,
            leeway=settings.token_leeway,
        )
        # The server's own routes verify strictly: signature and claims, and
        # also the denylist and watermarks (see RevocationChecker).
        self.verifier = TokenVerifier(
            self.keys,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.token_leeway,
            max_token_bytes=settings.max_token_bytes,
            clock=clock,
            cache_size=settings.verify_cache_size,
            revocations=self.revocation_checker,
        )
        self.introspection = IntrospectionService(
            self.verifier, self.revocation_checker, self.refresh
        )
        self.current_principal = BearerGuard(
            self.verifier,
            token_url=TOKEN_PATH,
            scheme_name="bastion",
            scopes=DOCUMENTED_SCOPES,
        )

        # ---- API keys (bastion.api_keys)
        self.api_key_store = SqlApiKeyStore(sessions)
        self.api_keys = ApiKeyService(
            self.api_key_store,
            self.accounts,
            self.authz,
            self.audit,
            clock,
            max_ttl=timedelta(days=settings.api_key_max_ttl_days),
            require_expiry=settings.api_key_require_expiry,
            max_per_user=settings.api_key_max_per_user,
            touch_interval=settings.api_key_touch_interval,
            cache_ttl=settings.revocation_cache_ttl,
            retention=timedelta(days=settings.api_key_retention_days),
        )
        # A change to a user's standing made here (roles, disabled, password,
        # "sign out everywhere") drops their keys' cached answers at once.
        self.revocation_checker.add_listener(self.api_keys.on_revocation)
        self.api_key_principal = ApiKeyGuard.from_settings(
            self.api_keys, settings, scheme_name="bastion_api_key"
        )
        """Requires an API key: 401 without one."""
        self.optional_api_key_principal = self.api_key_principal.optional()
        """``None`` without an API key, 401 for a bad one (for ``any_principal``)."""

        self.password_change = PasswordChange(
            self.accounts, self.audit, self.limiter, self.lockout, self.revocations, self.api_keys
        )

        # ---- OAuth clients and HTTP Basic (bastion.clients)
        self.client_store = SqlClientStore(sessions)
        self.clients = ClientService(self.client_store, self.audit, clock)
        self.basic_principal = HttpBasicGuard(
            self.clients,
            self.limiter,
            enabled=settings.http_basic_enabled,
            proxies=self.trusted_proxies,
            scheme_name="bastion_basic",
        )

        # ---- browser sessions and CSRF (bastion.browser_sessions)
        self.browser_session_store = self._browser_session_store(sessions)
        self.browser_sessions = BrowserSessionService(
            self.browser_session_store,
            clock,
            csrf_key=derive_csrf_key(settings.resolved_secret_key().get_secret_value()),
            origins=OriginPolicy(settings.trusted_origins),
            idle_timeout=settings.session_idle_timeout,
            absolute_timeout=settings.session_absolute_timeout,
            audit=self.audit,
            password_login=self.password_login,
            limiter=self.limiter,
        )
        # Password change, "sign out everywhere" and disabling a user end the
        # user's browser sessions too.
        self.revocations.also_end_sessions_with(self.browser_sessions.end_all)
        self.session_principal = SessionGuard(
            self.browser_sessions,
            self.accounts,
            self.authz,
            settings,
            scheme_name="bastion_session",
        )
        """Requires the session cookie (and CSRF proof on unsafe methods): 401 without one."""
        self.any_principal = AnyPrincipal(
            self.current_principal, self.optional_api_key_principal, self.session_principal
        )
        """A bearer token, an API key or the session cookie, in that order."""

        from bastion.server.routes import build_router  # the edge depends on the core

        self.router: APIRouter = build_router(self)

    async def startup(self, *, sleep: Sleep = asyncio.sleep) -> None:
        """Wait for the database and Redis (bounded retries with backoff, see
        :mod:`bastion.readiness`; ``sleep`` is injectable for tests), make sure
        a signing key exists (the first start creates one), and pay the one-off
        costs now rather than in the first user's request: the dummy hash that
        makes unknown-user logins cost a real verification, and the
        common-password list."""
        if not self.settings.is_production and self.settings.secret_key is None:
            logger.warning(
                "development mode: private signing keys are encrypted with the generated "
                "secret in %s; set BASTION_SECRET_KEY for production",
                self.settings.secret_key_file,
            )
        probes: dict[str, Probe] = {"database": lambda: self.database_ok(quiet=True)}
        if self.redis is not None:
            probes["redis"] = lambda: self.redis_ok(quiet=True)
        await wait_until_ready(
            probes,
            retries=self.settings.startup_retries,
            delay=self.settings.startup_retry_delay,
            optional={"redis"},  # its users fail closed with 503 until it is back
            sleep=sleep,
        )
        await self.keys.ensure_active_key()
        await self.hasher.warm_up()
        _ = self.policy.common_passwords  # loads the list once, at start
        if self.settings.purge_interval:
            self._housekeeping = asyncio.create_task(self._purge_periodically())

    async def _purge_periodically(self) -> None:
        """Opportunistic housekeeping; `bastion db purge` does the same on demand."""
        while True:
            await asyncio.sleep(self.settings.purge_interval)
            try:
                removed = await self.purge()
            except Exception:  # keep the loop alive through an outage; it is only housekeeping
                logger.warning("housekeeping failed", exc_info=True)
            else:
                logger.info("housekeeping removed %s", removed)

    async def shutdown(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        await self.limiter.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()

    def _revocation_store(self, sessions: async_sessionmaker[AsyncSession]) -> RevocationStore:
        """Redis when configured (shared by every instance, entries expire by
        themselves), else the SQL database; memory only when asked for, since
        a restart would forget every logout."""
        choice = self.settings.revocation_store
        if choice == "auto":
            choice = "redis" if self.redis is not None else "sql"
        if choice == "redis":
            if self.redis is None:
                raise ConfigurationError(["BASTION_REVOCATION_STORE=redis needs BASTION_REDIS_URL"])
            return RedisRevocationStore(self.redis, clock=self.clock)
        if choice == "memory":
            return MemoryRevocationStore(self.clock)
        return SqlRevocationStore(sessions, clock=self.clock)

    def _browser_session_store(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> BrowserSessionStore:
        """``BASTION_SESSION_STORE``, chosen like the revocation store: Redis
        when configured (shared by every instance, sessions expire by
        themselves), else SQL; memory only when asked for (a restart signs
        every browser out)."""
        choice = self.settings.session_store
        if choice == "auto":
            choice = "redis" if self.redis is not None else "sql"
        if choice == "redis":
            if self.redis is None:
                raise ConfigurationError(["BASTION_SESSION_STORE=redis needs BASTION_REDIS_URL"])
            return RedisBrowserSessionStore(
                self.redis, prefix=self.settings.session_redis_prefix, clock=self.clock
            )
        if choice == "memory":
            return MemoryBrowserSessionStore()
        return SqlBrowserSessionStore(sessions)

    async def _subject_of(self, account: str) -> str | None:
        """The user id an account identifier (an email) names, for audit events."""
        user = await self.accounts.get_by_email(account)
        return str(user.id) if user is not None else None

    async def purge(self) -> dict[str, int]:
        """Housekeeping: drop expired refresh families, denylist entries,
        watermarks and signing keys nobody can need any more."""
        return {
            "refresh_sessions": await self.refresh.purge(),
            "revocations": await self.revocation_store.purge(now=self.clock.now()),
            "signing_keys": await self.keys.prune(),
            "browser_sessions": await self.browser_sessions.purge(),
            "api_keys": await self.api_keys.purge(),
        }

    async def database_ok(self, *, quiet: bool = False) -> bool:
        """Whether the database answers a trivial query, for ``/health`` and
        start-up (``quiet``: one line without the traceback)."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as e:  # any driver error means "down" here, and only here
            _log_down("database", e, quiet)
            return False
        return True

    async def redis_ok(self, *, quiet: bool = False) -> bool:
        """Whether Redis answers ``PING``, for ``/health`` and start-up; true
        when no Redis is configured (nothing there can be down)."""
        if self.redis is None:
            return True
        try:
            await self.redis.ping()
        except Exception as e:  # any client error means "down" here, and only here
            _log_down("redis", e, quiet)
            return False
        return True

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """A FastAPI ``lifespan`` that starts and stops this instance."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()


def _log_down(dependency: str, error: Exception, quiet: bool) -> None:
    """Say a dependency is down: the error's type only when ``quiet`` (the
    start-up loop logs its own line), else the traceback for the operator."""
    if quiet:
        logger.debug("%s unreachable: %s", dependency, type(error).__name__)
    else:
        logger.warning("health check: %s unreachable", dependency, exc_info=True)
