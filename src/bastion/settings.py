"""Settings, read from ``BASTION_*`` environment variables and ``.env``.

Secure by default: in ``production`` mode :meth:`Settings.check_production`
refuses a configuration that would be unsafe and names every offending
setting; in ``development`` mode missing secrets are generated and kept in a
local file so a restart does not invalidate keys.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bastion.errors import ConfigurationError
from bastion.keys import Algorithm as KeyAlgorithm

logger = logging.getLogger("bastion.settings")

MIN_SECRET_KEY_LENGTH = 32
"""Characters; a random 32-character secret carries well over 128 bits."""


class Mode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every knob of a Bastion server; each field is ``BASTION_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="BASTION_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    mode: Mode = Mode.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    issuer: str = Field(default="", description="Defaults to http://HOST:PORT.")
    audience: str = Field(default="", description="Defaults to the issuer.")

    database_url: str = "sqlite+aiosqlite:///./bastion.db"
    redis_url: str | None = None
    # ------------------------------------------------ pools and start-up
    # See bastion.stores.sql.engine, bastion.stores.redis and Bastion.startup.
    # Every instance holds up to db_pool_size + db_max_overflow PostgreSQL
    # connections: keep the sum over all workers below the server's
    # max_connections. SQLite ignores the pool settings.
    db_pool_size: int = Field(
        default=10, ge=1, le=1000, description="PostgreSQL connections kept open per process."
    )
    db_max_overflow: int = Field(
        default=10, ge=0, le=1000, description="Extra PostgreSQL connections under bursts."
    )
    db_pool_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds to wait for a free connection; then 503."
    )
    db_connect_timeout: float = Field(
        default=5.0, gt=0, le=300, description="Seconds to open a PostgreSQL connection."
    )
    redis_max_connections: int = Field(
        default=50,
        ge=1,
        le=100_000,
        description="Redis connections per process; a request waits for a free one "
        "for at most the Redis timeout (2 s), then 503.",
    )
    startup_retries: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Extra attempts to reach the database and Redis at start before giving up.",
    )
    startup_retry_delay: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="Seconds before the first retry at start; each next one doubles (cap 10 s).",
    )
    # ------------------------------------------------ end of pools and start-up

    secret_key: SecretStr | None = None
    secret_key_file: Path = Path(".bastion/secret_key")

    access_token_ttl: int = Field(default=900, ge=30, le=86_400)
    key_algorithm: KeyAlgorithm = "EdDSA"
    token_leeway: int = Field(default=30, ge=0, le=300)
    max_token_bytes: int = Field(default=8192, ge=512, le=65_536)
    key_cache_ttl: int = Field(default=60, ge=1, le=3600)
    verify_cache_size: int = Field(default=10_000, ge=0)
    max_body_bytes: int = Field(default=65_536, ge=1024, description="Larger bodies get 413.")

    refresh_token_ttl: int = Field(
        default=604_800, ge=60, description="Absolute lifetime of a refresh family, seconds."
    )
    refresh_idle_timeout: int = Field(
        default=259_200, ge=60, description="A refresh token unused this long dies, seconds."
    )
    refresh_reuse_grace: int = Field(
        default=0,
        ge=0,
        le=60,
        description="Seconds in which replaying a just-spent refresh token fails without "
        "revoking its family (a client's immediate retry).",
    )
    revocation_store: Literal["auto", "memory", "sql", "redis"] = Field(
        default="auto", description="auto: redis when REDIS_URL is set, else sql."
    )
    revocation_cache_ttl: float = Field(
        default=1.0,
        ge=0,
        le=1.0,
        description="Strict mode remembers a token's revocation state this long, seconds.",
    )

    purge_interval: int = Field(
        default=3600, ge=0, description="Seconds between housekeeping runs; 0 turns them off."
    )

    allow_registration: bool = True
    allow_password_grant: bool = True
    role_cache_ttl: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="Seconds the role table is remembered between token issues; "
        "changes made on another instance show within this time.",
    )
    default_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["user"],
        description="Roles every new account gets (registration, admin API, CLI).",
    )

    password_min_length: int = Field(default=8, ge=8, le=64)
    password_max_length: int = Field(default=128, ge=64, le=1024)

    argon2_memory_cost: int = Field(default=19_456, ge=8_192, description="KiB")
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False

    # ------------------------------------------------ HTTP hardening
    # See bastion.security_headers and bastion.middleware; wired in
    # bastion.server.app.create_app. `None` means "decided by the mode".
    hsts: bool | None = Field(
        default=None, description="Strict-Transport-Security; None: on in production only."
    )
    hsts_max_age: int = Field(default=63_072_000, ge=0, description="Seconds.")
    docs_enabled: bool | None = Field(
        default=None, description="/docs and /redoc; None: on in development only."
    )
    https_redirect: bool = Field(
        default=False, description="Redirect GET/HEAD over http to https; refuse the rest."
    )
    trusted_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Host headers answered; empty: any."
    )
    max_json_depth: int = Field(default=32, ge=2, le=512, description="Deeper bodies get 400.")
    max_form_fields: int = Field(default=32, ge=1, le=1000, description="Form fields per request.")
    max_form_part_bytes: int = Field(
        default=16_384, ge=1024, description="Largest single form field, bytes."
    )
    max_header_bytes: int = Field(
        default=32_768, ge=8_192, description="Request header fields in all; more gets 431."
    )

    @model_validator(mode="before")
    @classmethod
    def _split_trusted_hosts(cls, data: object) -> object:
        """Accept ``BASTION_TRUSTED_HOSTS=auth.example.com,*.example.com``."""
        if isinstance(data, dict) and isinstance(data.get("trusted_hosts"), str):
            raw: str = data["trusted_hosts"]
            hosts = [v.strip() for v in raw.replace(" ", ",").split(",") if v.strip()]
            data = {**data, "trusted_hosts": hosts}
        return data

    @property
    def hsts_enabled(self) -> bool:
        return self.is_production if self.hsts is None else self.hsts

    @property
    def docs_visible(self) -> bool:
        return not self.is_production if self.docs_enabled is None else self.docs_enabled

    # ------------------------------------------------ end of HTTP hardening

    log_level: str = "INFO"

    # ------------------------------------------------ rate limits and lockout
    # See bastion.ratelimit and bastion.lockout. Limit strings use the `limits`
    # notation ("30/minute", "10 per hour"); a bad one refuses start-up.
    rate_limits_enabled: bool = Field(
        default=True, description="Off only behind a gateway that limits, or in tests."
    )
    rate_limit_token_ip: str = "30/minute"
    rate_limit_token_account: str = "10/minute"
    rate_limit_register_ip: str = "10/hour"
    rate_limit_password_change: str = "5/minute"
    rate_limit_key_prefix: str = Field(
        default="bastion:limits", min_length=1, description="Redis key prefix of limits."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="IPs/CIDRs whose X-Forwarded-For is believed; nobody else's is.",
    )
    lockout_enabled: bool = True
    lockout_ip_failures: int = Field(
        default=5, ge=1, description="Failures of one account from one IP before that pair waits."
    )
    lockout_account_failures: int = Field(
        default=20, ge=1, description="Failures of one account from any IPs before a lock."
    )
    lockout_window: int = Field(
        default=900, ge=1, le=86_400, description="Seconds failures are counted for."
    )
    lockout_duration: int = Field(
        default=60, ge=1, description="Seconds of the first account lock; each next one doubles."
    )
    lockout_max_duration: int = Field(
        default=900, ge=1, le=86_400, description="Cap of an account lock, seconds."
    )

    # ------------------------------------------------ API keys (bastion.api_keys)
    # See bastion.api_keys and bastion.credentials.api_key.
    api_key_header: str = Field(
        default="X-API-Key",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9-]+$",
        description="Request header that carries an API key.",
    )
    api_key_query_param: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Also accept the key in this query parameter; off by default because "
        "query strings end up in access logs, proxies and browser history.",
    )
    api_key_cookie: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Also accept the key in this cookie; off by default: a cookie is an "
        "ambient credential (sent cross-site), which the CSRF defence does not cover.",
    )
    api_key_max_ttl_days: int = Field(
        default=365, ge=1, le=3650, description="Longest lifetime a new API key may have, days."
    )
    api_key_require_expiry: bool = Field(
        default=False, description="Refuse API keys without an expiry."
    )
    api_key_max_per_user: int = Field(
        default=50, ge=1, le=10_000, description="Live API keys one user may hold."
    )
    api_key_touch_interval: int = Field(
        default=60,
        ge=0,
        le=86_400,
        description="A key's last_used_at is written at most once per this many seconds.",
    )
    api_key_retention_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        description="Housekeeping deletes API keys this many days after they expired or "
        "were revoked.",
    )

    # ------------------------------------------------ OAuth clients, HTTP Basic (bastion.clients)
    # See bastion.clients and bastion.credentials.basic.
    http_basic_enabled: bool = Field(
        default=False,
        description="Accept HTTP Basic (client id and secret, RFC 7617) on routes "
        "guarded by bastion.basic_principal; off, they answer 401 as if nothing came.",
    )
    rate_limit_basic_ip: str = Field(
        default="60/minute", description="HTTP Basic attempts per client IP."
    )
    rate_limit_basic_client: str = Field(
        default="20/minute",
        description="Failed HTTP Basic attempts per client id; past it even the "
        "right secret waits.",
    )

    # ------------------------------------------------ browser sessions, CSRF (browser_sessions)
    # See bastion.browser_sessions, bastion.csrf and bastion.credentials.session_cookie.
    session_store: Literal["auto", "memory", "sql", "redis"] = Field(
        default="auto",
        description="Where browser sessions live; auto: redis when REDIS_URL is set, else sql.",
    )
    session_idle_timeout: int = Field(
        default=1800,
        ge=60,
        le=86_400,
        description="A browser session unused this long ends, seconds (precision: the "
        "touch interval, 60 s at most).",
    )
    session_absolute_timeout: int = Field(
        default=43_200,
        ge=60,
        le=2_592_000,
        description="A browser session ends this long after login whatever its use, seconds.",
    )
    session_cookie_name: str = Field(
        default="__Host-bastion_session",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The session cookie; production requires the __Host- prefix "
        "(Secure, Path=/, no Domain: RFC 6265bis §4.1.3.2).",
    )
    session_cookie_secure: bool = Field(
        default=True,
        description="Secure flag of the session cookie; browsers accept it over http "
        "on localhost only. Production refuses false.",
    )
    session_redis_prefix: str = Field(
        default="bastion:session:", min_length=1, description="Redis key prefix of sessions."
    )
    csrf_trusted_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) allowed to send state-changing "
        "cookie requests and the session login; empty: the issuer's origin.",
    )

    pages_enabled: bool = Field(
        default=True,
        description="The server-rendered /login, /logout and /account pages; an embedding "
        "application with its own pages turns them off.",
    )

    @model_validator(mode="after")
    def _check_sessions(self) -> Settings:
        """The idle timeout never exceeds the absolute one; trusted origins
        must be origins (a path could never match an ``Origin`` header)."""
        from bastion.csrf import OriginPolicy

        if self.session_idle_timeout > self.session_absolute_timeout:
            object.__setattr__(self, "session_idle_timeout", self.session_absolute_timeout)
        if self.csrf_trusted_origins:
            OriginPolicy(self.csrf_trusted_origins)  # ValueError names the bad entry
        return self

    @property
    def trusted_origins(self) -> list[str]:
        """The origins the CSRF defence trusts: the setting, or the issuer's."""
        return self.csrf_trusted_origins or [self.issuer]

    def _session_problems(self) -> list[str]:
        problems = []
        if not self.session_cookie_name.startswith("__Host-"):
            problems.append(
                "BASTION_SESSION_COOKIE_NAME must start with __Host- "
                "(pins the cookie to this host, Secure, Path=/)"
            )
        if not self.session_cookie_secure:
            problems.append("BASTION_SESSION_COOKIE_SECURE must be true")
        return problems

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        """Accept ``BASTION_CORS_ORIGINS=https://a,https://b`` (and the other
        lists) as well as a list."""
        if isinstance(data, dict):
            for name in (
                "cors_origins",
                "default_roles",
                "trusted_proxies",
                "csrf_trusted_origins",
            ):
                raw = data.get(name)
                if isinstance(raw, str):
                    data = {
                        **data,
                        name: [v.strip() for v in raw.replace(" ", ",").split(",") if v.strip()],
                    }
        return data

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        if not self.issuer:
            object.__setattr__(self, "issuer", f"http://{self.host}:{self.port}")
        object.__setattr__(self, "issuer", self.issuer.rstrip("/"))
        if not self.audience:
            object.__setattr__(self, "audience", self.issuer)
        if self.refresh_idle_timeout > self.refresh_token_ttl:
            object.__setattr__(self, "refresh_idle_timeout", self.refresh_token_ttl)
        if self.password_min_length > self.password_max_length:
            raise ValueError("password_min_length must not exceed password_max_length")
        return self

    @property
    def is_production(self) -> bool:
        return self.mode is Mode.PRODUCTION

    def production_problems(self) -> list[str]:
        """Why this configuration is unsafe for production; empty when it is fine."""
        problems: list[str] = []
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if not key:
            problems.append("BASTION_SECRET_KEY is not set")
        elif len(key) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"BASTION_SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters"
            )
        if _is_insecure_url(self.issuer):
            problems.append(
                f"BASTION_ISSUER must use https:// (got {self.issuer!r}); "
                "plain http is allowed only on loopback"
            )
        if self.cors_allow_credentials and "*" in self.cors_origins:
            problems.append(
                "BASTION_CORS_ORIGINS contains '*' while BASTION_CORS_ALLOW_CREDENTIALS is true"
            )
        problems.extend(self._session_problems())
        return problems

    def check_production(self) -> None:
        """Raise :class:`ConfigurationError` if production mode is unsafe."""
        if self.is_production:
            problems = self.production_problems()
            if problems:
                raise ConfigurationError(problems)

    def resolved_secret_key(self) -> SecretStr:
        """The key that encrypts private signing keys at rest.

        Production must set ``BASTION_SECRET_KEY``. Development generates one
        into ``secret_key_file`` (mode 0600) on first use and keeps it, so keys
        stay readable across restarts; it says so once, at start.
        """
        if self.secret_key is not None:
            return self.secret_key
        if self.is_production:
            raise ConfigurationError(["BASTION_SECRET_KEY is not set"])
        return SecretStr(_load_or_create_dev_secret(self.secret_key_file))


def _is_insecure_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return False
    if parts.scheme != "http":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _load_or_create_dev_secret(path: Path) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value)
    logger.debug("generated a development secret key in %s", path)  # start-up says so once
    return value
