"""The accounts service: registration, password login, active-user lookup.

No HTTP here (see the design note): the routes and the CLI call these methods
with plain values and map the domain errors (:mod:`bastion.errors`) to
responses. What this layer guarantees:

- A new password passes :class:`~bastion.password_policy.PasswordPolicy`
  (NIST SP 800-63B-4 §3.1.1.2, ASVS v4.0.3 §2.1) before anything is hashed or written; a refused
  password writes nothing.
- Login answers every failure (unknown address, wrong password, disabled
  account) with the same :class:`~bastion.errors.InvalidCredentials` and, as
  far as the code can make it, the same cost: an unknown address verifies
  against a dummy hash, and a disabled account still has its password verified
  (OWASP Authentication Cheat Sheet, "Authentication and Error Messages").
- A successful login whose stored hash was made with older parameters re-saves
  the hash with the current ones, so raising the Argon2 cost needs no migration.
- Passwords are NFKC-normalised the same way at registration and at login
  (:func:`~bastion.password_policy.normalize_password`).

Emails are taken as given, stripped of surrounding whitespace: the HTTP edge
validates their format, and the store compares them case-insensitively.
"""

from __future__ import annotations

import dataclasses
from uuid import UUID

from bastion.clock import Clock
from bastion.errors import InvalidCredentials
from bastion.password_policy import PasswordPolicy, normalize_password
from bastion.passwords import PasswordHasher
from bastion.stores.protocols import NewUser, User, UserStore

__all__ = ["AccountService"]


class AccountService:
    """Accounts and password authentication over a :class:`UserStore`."""

    def __init__(
        self,
        users: UserStore,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        clock: Clock,
    ) -> None:
        self._users = users
        self._hasher = hasher
        self._policy = policy
        self._clock = clock

    async def register(
        self,
        *,
        email: str,
        password: str,
        username: str | None = None,
        roles: frozenset[str] = frozenset(),
        email_verified: bool = False,
    ) -> User:
        """Create an active, unverified account.

        Raises :class:`~bastion.errors.PasswordRejected` when the policy refuses
        the password (nothing is hashed or written) and
        :class:`~bastion.errors.EmailAlreadyRegistered` when the address, in
        any case, or the username is taken.
        """
        email = email.strip()
        normalized = self._policy.check(password, email=email)
        password_hash = await self._hasher.hash(normalized)
        return await self._users.add(
            NewUser(
                email=email,
                username=username,
                password_hash=password_hash,
                email_verified=email_verified,
                roles=roles,
            ),
            now=self._clock.now(),
        )

    async def authenticate(self, *, email: str, password: str) -> User:
        """The active account ``email`` belongs to, if ``password`` is its password.

        Raises :class:`~bastion.errors.InvalidCredentials` otherwise, with the
        same message whichever check failed.
        """
        if len(password) > self._policy.max_input_length:
            # The policy never accepted a password this long, and refusing it
            # early depends only on the input, so it reveals nothing.
            raise InvalidCredentials()
        secret = normalize_password(password)
        user = await self._users.get_by_email(email.strip())
        if user is None:
            await self._hasher.verify_dummy(secret)
            raise InvalidCredentials()
        if not user.is_active:
            # Verify anyway, and without upgrading, so a disabled account costs
            # exactly what a wrong password costs.
            await self._hasher.verify(secret, user.password_hash)
            raise InvalidCredentials()
        matches, new_hash = await self._hasher.verify_and_update(secret, user.password_hash)
        if not matches:
            raise InvalidCredentials()
        if new_hash is not None:
            now = self._clock.now()
            await self._users.set_password_hash(user.id, new_hash, now=now)
            user = dataclasses.replace(user, password_hash=new_hash, updated_at=now)
        return user

    async def get_active_user(self, user_id: UUID) -> User | None:
        """The account ``user_id`` names, or ``None`` if it is gone or disabled.

        For callers that already authenticated someone (a token, a session)
        and must not keep serving a disabled account.
        """
        user = await self._users.get(user_id)
        if user is None or not user.is_active:
            return None
        return user

    async def change_password(self, user: User, *, current: str, new: str) -> None:
        """Replace ``user``'s password after proving the current one
        (ASVS v4.0.3 §2.1.6). The caller ends the user's other sessions.

        Raises :class:`~bastion.errors.InvalidCredentials` for a wrong current
        password and :class:`~bastion.errors.PasswordRejected` for a new one
        the policy refuses; nothing is written then.
        """
        if len(current) > self._policy.max_input_length or not await self._hasher.verify(
            normalize_password(current), user.password_hash
        ):
            raise InvalidCredentials("The current password is wrong.")
        normalized = self._policy.check(new, email=user.email)
        password_hash = await self._hasher.hash(normalized)
        await self._users.set_password_hash(user.id, password_hash, now=self._clock.now())

    async def get_by_email(self, email: str) -> User | None:
        return await self._users.get_by_email(email.strip())

    async def set_active(self, user_id: UUID, active: bool) -> None:
        """Enable or disable an account. The caller revokes a disabled user's
        tokens; this only flips the flag."""
        await self._users.set_active(user_id, active, now=self._clock.now())
