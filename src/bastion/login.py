"""The password check that every login shares: the token endpoint's password
grant and the browser session login (form or JSON).

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
    from bastion.lockout import Lockout


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
