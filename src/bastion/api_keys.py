"""API keys: long-lived credentials for scripts, scoped by permissions.

A key reads ``bst_<key_id>_<secret>``: ``key_id`` is 16 lower-case hex
characters (64 random bits, public: it is the ``prefix`` users see in lists
and what audit events name), ``secret`` is 256 random bits in unpadded
base64url (43 characters). Only the SHA-256 of the secret is stored; a plain
hash is enough for a 256-bit random secret (nothing to guess, so nothing to
slow down), and it is compared in constant time. The whole key is shown once,
when it is created or rotated.

A key never carries more than its owner currently holds: its permissions are
checked against the owner's at creation (403 beyond them) and narrowed to the
owner's *current* effective permissions at every use, so a role taken away
narrows the key at once. A disabled or deleted owner disables every key.
Keys carry no roles (``Principal.roles`` is empty): ``require_roles`` never
admits an API key, ``require_permissions`` does.

Per request: a parse (no I/O for a malformed key), then an in-process cache
of keys accepted in the last ``cache_ttl`` seconds (at most 1 s, the
revocation cache's bound). A revocation or rotation made by this process, and
any change to the owner made through the revocation checker (roles, disabling,
password change, "sign out everywhere"), forgets the cached answers at once;
other instances see it within ``cache_ttl``. ``last_used_at`` is written at
most once per ``touch_interval`` seconds per key, not per request.

Services know nothing of HTTP: the guard (:mod:`bastion.credentials.api_key`)
and the routes (:mod:`bastion.server.routes.api_keys`) map the errors.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from uuid import UUID

from bastion.accounts import AccountService
from bastion.audit import AuditLog
from bastion.authz import AuthorizationService
from bastion.authz.permissions import WILDCARD, allows, validate_permission
from bastion.clock import Clock
from bastion.errors import (
    AuthorizationError,
    Conflict,
    InvalidApiKey,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)
from bastion.guard import Principal
from bastion.stores.protocols import ApiKeyRecord, ApiKeyStore
from bastion.tokens.grants import FIRST_PARTY_CLIENT_ID

__all__ = [
    "KEY_LENGTH",
    "KEY_PREFIX",
    "MAX_NAME_LENGTH",
    "MAX_PERMISSIONS",
    "ApiKeyService",
    "IssuedApiKey",
    "hash_secret",
    "new_api_key",
    "parse_api_key",
    "prefix_of",
]

logger = logging.getLogger("bastion.api_keys")

KEY_PREFIX: Final = "bst"
KEY_ID_BYTES: Final = 8
SECRET_BYTES: Final = 32
KEY_ID_LENGTH: Final = 2 * KEY_ID_BYTES
SECRET_LENGTH: Final = 43
"""``secrets.token_urlsafe(32)``: 32 bytes in unpadded base64url."""
KEY_LENGTH: Final = len(KEY_PREFIX) + 1 + KEY_ID_LENGTH + 1 + SECRET_LENGTH
MAX_NAME_LENGTH: Final = 100
MAX_PERMISSIONS: Final = 64
UNKNOWN_KEY: Final = "No such API key."

_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")


# ------------------------------------------------------------------ the key format


def new_api_key() -> tuple[str, str, str]:
    """A fresh ``(key, key_id, secret)``."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{KEY_PREFIX}_{key_id}_{secret}", key_id, secret


def parse_api_key(raw: str) -> tuple[str, str]:
    """``(key_id, secret)`` of a well-formed key; :class:`InvalidApiKey` (the
    reason chained) for anything else. The length is checked first, so a huge
    header costs nothing, and nothing here does I/O."""
    if not isinstance(raw, str) or len(raw) != KEY_LENGTH:
        raise InvalidApiKey() from ValueError("wrong length")
    prefix, _, rest = raw.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX:
        raise InvalidApiKey() from ValueError("wrong prefix")
    if not _KEY_ID.fullmatch(key_id) or not _SECRET.fullmatch(secret):
        raise InvalidApiKey() from ValueError("malformed id or secret")
    return key_id, secret


def is_key_id(value: str) -> bool:
    """Whether ``value`` could be a key id (for lookups by id: no I/O otherwise)."""
    return isinstance(value, str) and _KEY_ID.fullmatch(value) is not None


def hash_secret(secret: str) -> str:
    """What is stored of a secret: its SHA-256, in hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def prefix_of(key_id: str) -> str:
    """The public beginning of a key, shown in lists: ``bst_<key_id>``."""
    return f"{KEY_PREFIX}_{key_id}"


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    """A key just created or rotated: the only time the secret exists in the clear."""

    key: str = field(repr=False)
    """The whole key, ``bst_<key_id>_<secret>``; show it once, never store it."""

    record: ApiKeyRecord
    """What is stored (the secret's hash, never the secret)."""

    @property
    def prefix(self) -> str:
        return prefix_of(self.record.key_id)


@dataclass(frozen=True, slots=True)
class _Accepted:
    until: float
    secret_hash: str = field(repr=False)
    principal: Principal


# ------------------------------------------------------------------ the service


class ApiKeyService:
    """Create, list, revoke, rotate and authenticate API keys."""

    def __init__(
        self,
        store: ApiKeyStore,
        accounts: AccountService,
        authz: AuthorizationService,
        audit: AuditLog,
        clock: Clock,
        *,
        max_ttl: timedelta = timedelta(days=365),
        require_expiry: bool = False,
        max_per_user: int = 50,
        touch_interval: float = 60.0,
        cache_ttl: float = 1.0,
        retention: timedelta = timedelta(days=30),
        cache_size: int = 10_000,
    ) -> None:
        if max_per_user < 1 or touch_interval < 0 or cache_ttl < 0 or cache_size < 0:
            raise ValueError("max_per_user >= 1; touch_interval, cache_ttl, cache_size >= 0")
        self.store = store
        self._accounts = accounts
        self._authz = authz
        self._audit = audit
        self._clock = clock
        self.max_ttl = max_ttl
        self.require_expiry = require_expiry
        self.max_per_user = max_per_user
        self._touch_interval = touch_interval
        self._cache_ttl = cache_ttl
        self._retention = retention
        self._cache_size = cache_size
        self._cache: OrderedDict[str, _Accepted] = OrderedDict()
        self._generation = 0  # bumped by every forget: older lookups must not be cached
        self._touched: OrderedDict[str, float] = OrderedDict()

    # ------------------------------------------------------------------ management

    async def create(
        self,
        user_id: UUID,
        name: str,
        permissions: Iterable[str],
        expires_at: datetime | None = None,
        *,
        expires_in_days: int | None = None,
        actor: str | None = None,
    ) -> IssuedApiKey:
        """A new key for ``user_id``. Refused: a bad name, no or malformed
        permissions, a bad expiry (:class:`InvalidInput`, 422); permissions the
        owner does not hold now (:class:`AuthorizationError`, 403); the
        per-user cap reached (:class:`Conflict`, 409); an unknown or disabled
        owner (:class:`NotFound`). ``expires_in_days`` is the other way to say
        ``expires_at`` (not both). ``actor`` defaults to the owner."""
        name = _checked_name(name)
        wanted = _checked_permissions(permissions)
        now = self._clock.now()
        expiry = self._checked_expiry(now, expires_at, expires_in_days)
        owner = await self._accounts.get_active_user(user_id)
        if owner is None:
            raise NotFound("No such user.")
        held = (await self._authz.effective(user_id)).permissions
        beyond = sorted(p for p in wanted if not allows(held, p))
        if beyond:
            raise AuthorizationError(
                "An API key cannot carry permissions its owner does not hold: "
                + " ".join(beyond)
                + "."
            )
        key, key_id, secret = new_api_key()
        record = ApiKeyRecord(
            key_id=key_id,
            user_id=user_id,
            name=name,
            permissions=wanted,
            secret_hash=hash_secret(secret),
            created_at=now,
            expires_at=expiry,
        )
        if not await self.store.add(record, max_live=self.max_per_user, now=now):
            raise Conflict(f"At most {self.max_per_user} API keys per user; revoke one first.")
        await self._audit.record(
            "api_key.created",
            actor=actor if actor is not None else str(user_id),
            target=key_id,
            owner=str(user_id),
            name=name,
            permissions=" ".join(sorted(wanted)),
            expires_at=expiry.isoformat() if expiry is not None else None,
        )
        return IssuedApiKey(key, record)

    async def list(self, user_id: UUID) -> Sequence[ApiKeyRecord]:
        """The user's keys that are not revoked (expired ones too), newest first."""
        return await self.store.list_for_user(user_id)

    async def get(self, key_id: str, *, owner: UUID | None) -> ApiKeyRecord:
        """One unrevoked key; with ``owner``, only that user's (another user's
        key is :class:`NotFound` exactly like an unknown one: OWASP API1, BOLA)."""
        record = await self.store.get(key_id) if is_key_id(key_id) else None
        if record is None or record.revoked_at is not None:
            raise NotFound(UNKNOWN_KEY)
        if owner is not None and record.user_id != owner:
            raise NotFound(UNKNOWN_KEY)
        return record

    async def revoke(
        self, key_id: str, *, owner: UUID | None, actor: str | None = None
    ) -> ApiKeyRecord:
        """Revoke an unrevoked key; with ``owner``, only that user's (see
        :meth:`get`). It stops working on this instance at once. ``actor``
        defaults to the owner."""
        record = (
            await self.store.revoke(key_id, now=self._clock.now(), user_id=owner)
            if is_key_id(key_id)
            else None
        )
        if record is None:
            raise NotFound(UNKNOWN_KEY)
        self.forget(key_id=key_id)
        await self._audit.record(
            "api_key.revoked",
            actor=actor if actor is not None else str(record.user_id),
            target=key_id,
            owner=str(record.user_id),
        )
        return record

    async def rotate(
        self, key_id: str, *, owner: UUID | None, actor: str | None = None
    ) -> IssuedApiKey:
        """A new secret under a new id with the same name, permissions and
        expiry; the old key is revoked in the same transaction. With ``owner``,
        only that user's key (see :meth:`get`); an expired key cannot be
        rotated (:class:`Conflict`: create a new one)."""
        old = await self.get(key_id, owner=owner)
        now = self._clock.now()
        if not old.is_live(now):
            raise Conflict("The API key has expired; create a new one.")
        key, new_id, secret = new_api_key()
        successor = ApiKeyRecord(
            key_id=new_id,
            user_id=old.user_id,
            name=old.name,
            permissions=old.permissions,
            secret_hash=hash_secret(secret),
            created_at=now,
            expires_at=old.expires_at,
        )
        if not await self.store.replace(key_id, successor, now=now, user_id=owner):
            raise NotFound(UNKNOWN_KEY)  # revoked or expired meanwhile
        self.forget(key_id=key_id)
        await self._audit.record(
            "api_key.rotated",
            actor=actor if actor is not None else str(old.user_id),
            target=key_id,
            owner=str(old.user_id),
            successor=new_id,
        )
        return IssuedApiKey(key, successor)

    async def revoke_all_for_user(self, user_id: UUID, *, actor: str | None = None) -> int:
        """Revoke every key of the user (an administrator's broom); how many."""
        revoked = await self.store.revoke_all(user_id, now=self._clock.now())
        self.forget(subject=str(user_id))
        if revoked:
            await self._audit.record(
                "api_key.revoked_all", actor=actor, target=str(user_id), count=len(revoked)
            )
        return len(revoked)

    async def purge(self, now: datetime | None = None) -> int:
        """Delete keys that expired or were revoked more than the retention
        period before ``now``; how many."""
        moment = now if now is not None else self._clock.now()
        return await self.store.purge(before=moment - self._retention)

    # ------------------------------------------------------------------ authentication

    async def authenticate(self, raw_key: str) -> Principal:
        """The principal a key proves; :class:`InvalidApiKey` with one generic
        text for every failure (the reason is logged at debug level, never the
        key). :class:`ServiceUnavailable` when the store cannot answer: the
        caller must refuse the request, not treat it as anonymous."""
        key_id, secret = parse_api_key(raw_key)
        presented = hash_secret(secret)
        now_ts = self._clock.timestamp()
        cached = self._cache.get(key_id)
        if cached is not None:
            if now_ts < cached.until:
                if not hmac.compare_digest(presented, cached.secret_hash):
                    raise _rejected(key_id, "wrong secret")
                await self._touch(key_id)
                return cached.principal
            self._cache.pop(key_id, None)

        generation = self._generation
        record = await self.store.get(key_id)
        if record is None:
            raise _rejected(key_id, "unknown id")
        if not hmac.compare_digest(presented, record.secret_hash):
            raise _rejected(key_id, "wrong secret")
        now = self._clock.now()
        if record.revoked_at is not None:
            raise _rejected(key_id, "revoked")
        if record.expires_at is not None and now >= record.expires_at:
            raise _rejected(key_id, "expired")
        owner = await self._accounts.get_active_user(record.user_id)
        if owner is None:
            raise _rejected(key_id, "owner disabled or deleted")
        held = (await self._authz.effective(record.user_id)).permissions
        principal = Principal(
            subject=str(record.user_id),
            scopes=narrowed(record.permissions, held),
            roles=(),
            client_id=FIRST_PARTY_CLIENT_ID,
            claims=None,
            token_id=key_id,
            auth_method="api_key",
        )
        self._remember(record, principal, generation)
        await self._touch(key_id)
        return principal

    def forget(self, *, key_id: str | None = None, subject: str | None = None) -> None:
        """Drop cached acceptances: of one key, of every key of ``subject`` (a
        user id), or, with neither, all. Lookups in flight are not cached."""
        self._generation += 1
        if key_id is None and subject is None:
            self._cache.clear()
            return
        stale = [
            kid
            for kid, entry in self._cache.items()
            if kid == key_id or entry.principal.subject == subject
        ]
        for kid in stale:
            del self._cache[kid]

    def on_revocation(self, *, jti: str | None = None, subject: str | None = None) -> None:
        """A :class:`~bastion.tokens.revocation.RevocationChecker` listener: a
        change to a user's standing made here (roles, disabling, password,
        "sign out everywhere") also drops their keys' cached answers."""
        if subject is not None or jti is None:
            self.forget(subject=subject)

    def _remember(self, record: ApiKeyRecord, principal: Principal, generation: int) -> None:
        if not self._cache_ttl or not self._cache_size or generation != self._generation:
            return
        until = self._clock.timestamp() + self._cache_ttl
        if record.expires_at is not None:
            until = min(until, record.expires_at.timestamp())
        cache = self._cache
        cache.pop(record.key_id, None)
        while len(cache) >= self._cache_size:
            cache.popitem(last=False)
        cache[record.key_id] = _Accepted(until, record.secret_hash, principal)

    async def _touch(self, key_id: str) -> None:
        """Write ``last_used_at`` if this process has not for ``touch_interval``
        seconds. Best effort: a failed write is logged, the request goes on
        (the key was checked against the store already)."""
        now_ts = self._clock.timestamp()
        last = self._touched.get(key_id)
        if last is not None and now_ts - last < self._touch_interval:
            return
        touched = self._touched
        touched[key_id] = now_ts  # before the await: concurrent uses write once
        touched.move_to_end(key_id)
        while len(touched) > max(self._cache_size, 1):
            touched.popitem(last=False)
        try:
            await self.store.touch(key_id, at=self._clock.now())
        except ServiceUnavailable:
            logger.warning("could not record an API key's last use", exc_info=True)

    def _checked_expiry(
        self, now: datetime, expires_at: datetime | None, days: int | None
    ) -> datetime | None:
        if expires_at is not None and days is not None:
            raise InvalidInput("Give expires_at or expires_in_days, not both.")
        if days is not None:
            if isinstance(days, bool) or not isinstance(days, int) or days < 1:
                raise InvalidInput("expires_in_days must be a whole number of days, at least 1.")
            if days > self.max_ttl.days:
                raise InvalidInput(f"An API key may live at most {self.max_ttl.days} days.")
            expires_at = now + timedelta(days=days)
        if expires_at is None:
            if self.require_expiry:
                raise InvalidInput("An API key needs an expiry on this server.")
            return None
        if expires_at.tzinfo is None or expires_at.utcoffset() is None:
            raise InvalidInput("expires_at needs a time zone.")
        if expires_at <= now:
            raise InvalidInput("expires_at must be in the future.")
        if expires_at > now + self.max_ttl:
            raise InvalidInput(f"An API key may live at most {self.max_ttl.days} days.")
        return expires_at.astimezone(UTC)


# ------------------------------------------------------------------ helpers


def narrowed(permissions: frozenset[str], held: frozenset[str]) -> frozenset[str]:
    """What a key may do now: each of its permissions the owner still holds;
    for a wildcard the owner no longer holds whole (``invoices:*``), the
    owner's concrete permissions under it (``invoices:read``)."""
    kept: set[str] = set()
    for permission in permissions:
        if allows(held, permission):
            kept.add(permission)
        elif permission.endswith(":" + WILDCARD):
            resource = permission[: -len(WILDCARD)]
            kept.update(p for p in held if p.startswith(resource))
    return frozenset(kept)


def _rejected(key_id: str, reason: str) -> InvalidApiKey:
    # The id is public (the key's prefix); the secret never reaches a log.
    logger.debug("API key %s rejected: %s", prefix_of(key_id), reason)
    return InvalidApiKey()


def _checked_name(name: str) -> str:
    if not isinstance(name, str):
        raise InvalidInput("The name must be a string.")
    name = name.strip()
    if not 0 < len(name) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"The name must be 1 to {MAX_NAME_LENGTH} characters long.")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidInput("The name must not contain control or format characters.")
    return name


def _checked_permissions(permissions: Iterable[str]) -> frozenset[str]:
    if isinstance(permissions, str):  # a lone string would iterate by character
        raise InvalidInput("Permissions must be a list of strings.")
    listed = list(permissions)
    if not listed:
        raise InvalidInput("An API key needs at least one permission.")
    if len(listed) > MAX_PERMISSIONS:
        raise InvalidInput(f"An API key may carry at most {MAX_PERMISSIONS} permissions.")
    return frozenset(validate_permission(p) for p in listed)
