"""The password checks that every way in shares: logins (the token endpoint's
password grant, the browser session login) and password changes.

One place decides what a login attempt costs and leaves behind: the lockout and
the per-account limit are consulted before the password is hashed (a refused
guess costs no argon2 work), the outcome counts towards them, and a failure
is audited under the account's digest, never the raw username (a password
mistyped into the username field must not land in a log).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.accounts import AccountService
from bastion.audit import AuditLog
from bastion.errors import InvalidCredentials
from bastion.ratelimit import account_key
from bastion.stores.protocols import User

if TYPE_CHECKING:
    from bastion.api_keys import ApiKeyService
    from bastion.lockout import Lockout
    from bastion.ratelimit import RateLimiter
    from bastion.tokens.revocation import RevocationService


class PasswordLogin:
    """Verifies a username and password under the lockout, auditing failures."""

    def __init__(
        self, accounts: AccountService, audit: AuditLog, lockout: Lockout | None = None
    ) -> None:
        self._accounts = accounts
        self._audit = audit
        self._lockout = lockout

    async def verify(self, *, username: str, password: str, client_id: str, ip: str | None) -> User:
        """The active user ``username`` names, when ``password`` is theirs.

        Raises :class:`InvalidCredentials` (one text for every cause) or, from
        the lockout, :class:`~bastion.errors.RateLimited`."""
        try:
            if self._lockout is None:
                return await self._accounts.authenticate(email=username, password=password)
            async with self._lockout.attempt(username, ip):
                return await self._accounts.authenticate(email=username, password=password)
        except InvalidCredentials:
            await self._audit.record(
                "login.failed", account=account_key(username), client_id=client_id, ip=ip
            )
            raise


class PasswordChange:
    """Changing a password, the one way both ``POST /me/password`` and the
    account page do it.

    The proof of the current password counts as a login of the account from
    the caller's address (a stolen session must not become an unthrottled
    password oracle), and is rate-limited per account. Afterwards every
    session and every access token issued until now ends, this caller's
    included, and every API key of the user: whoever knew the old password
    is out (ASVS v4.0.3 §3.3.3), with no key they made left behind.
    """

    def __init__(
        self,
        accounts: AccountService,
        audit: AuditLog,
        limiter: RateLimiter,
        lockout: Lockout,
        revocations: RevocationService,
        api_keys: ApiKeyService,
    ) -> None:
        self._accounts = accounts
        self._audit = audit
        self._limiter = limiter
        self._lockout = lockout
        self._revocations = revocations
        self._api_keys = api_keys

    async def change(self, user: User, *, current: str, new: str, ip: str | None) -> None:
        """Raises :class:`InvalidCredentials` for a wrong current password,
        :class:`~bastion.errors.PasswordRejected` for a refused new one and
        :class:`~bastion.errors.RateLimited`; nothing changes then."""
        await self._limiter.hit("password_change", account_key(user.email))
        async with self._lockout.attempt(user.email, ip, policy=None, subject=str(user.id)):
            await self._accounts.change_password(user, current=current, new=new)
        await self._revocations.revoke_everything(user.id, reason="password_changed")
        # API keys too: one made with the old password must not outlive it.
        await self._api_keys.revoke_all_for_user(user.id, actor=str(user.id))
        await self._audit.record("password.changed", actor=str(user.id), target=str(user.id))
