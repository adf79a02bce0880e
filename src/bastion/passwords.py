"""Password hashing: Argon2id, off the event loop, with a dummy for unknown users.

Why it looks like this:

- **Argon2id** with the OWASP Password Storage Cheat Sheet baseline, m=19 MiB
  (19456 KiB), t=2, p=1: a salted, deliberately expensive password hashing
  function, as ASVS v4.0.3 2.4.1 and SP 800-63B-4 §3.1.1.2 (rev. 3 §5.1.1.2)
  require for storing passwords. The
  parameters are encoded in every hash, so :meth:`PasswordHasher.verify_and_update`
  can tell when a stored hash was made with other ones and hand back a new hash
  for the caller to save: raising the cost needs no migration.
- **Off the event loop.** One hash costs tens of milliseconds of CPU on purpose;
  run on the loop it would stall every other request for that long, and a burst
  of logins would stall the server. argon2-cffi releases the GIL, so hashes run
  in worker threads (``anyio.to_thread``), bounded by a dedicated
  :class:`anyio.CapacityLimiter` sized to the CPUs: more threads than cores
  would only add memory (m KiB each) without adding throughput, and the
  limiter keeps hashing from exhausting anyio's shared default thread pool.
- **A dummy hash for unknown users.** Login for an address that has no account
  verifies the password against a hash made with the same parameters, so it
  costs what a wrong password costs and timing does not reveal which accounts
  exist (OWASP Authentication Cheat Sheet, "Authentication and Error
  Messages"). The dummy is made once, lazily, in a worker thread, never at import.
- **A malformed stored hash fails verification** and is logged at warning
  (without the hash); it never turns into an exception that reaches the client,
  and it still costs one dummy verification.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Final, TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.to_thread
from argon2 import extract_parameters
from argon2.exceptions import InvalidHashError
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

__all__ = [
    "DEFAULT_MEMORY_COST",
    "DEFAULT_PARALLELISM",
    "DEFAULT_TIME_COST",
    "PasswordHasher",
]

logger = logging.getLogger("bastion.passwords")

DEFAULT_MEMORY_COST: Final = 19_456
"""KiB (19 MiB): the OWASP Password Storage Cheat Sheet Argon2id baseline."""
DEFAULT_TIME_COST: Final = 2
DEFAULT_PARALLELISM: Final = 1

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


def _cpu_count() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells us)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _verify_bytes(password: str) -> bytes:
    """``password`` as bytes for verification.

    ``surrogatepass`` lets a lone surrogate (which strict UTF-8 cannot encode)
    through as bytes that no stored password can have been made from, so such
    input fails at the normal cost instead of raising.
    """
    return password.encode("utf-8", "surrogatepass")


class PasswordHasher:
    """Argon2id hashing and verification that never blocks the event loop.

    ``max_concurrency`` bounds how many hashes run at once (default: the number
    of CPUs available to the process); further calls wait their turn without
    blocking the loop.
    """

    def __init__(
        self,
        memory_cost: int = DEFAULT_MEMORY_COST,
        time_cost: int = DEFAULT_TIME_COST,
        parallelism: int = DEFAULT_PARALLELISM,
        *,
        max_concurrency: int | None = None,
    ) -> None:
        if parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        if time_cost < 1:
            raise ValueError("time_cost must be at least 1")
        if memory_cost < 8 * parallelism:
            raise ValueError("memory_cost must be at least 8 KiB per lane (8 * parallelism)")
        concurrency = _cpu_count() if max_concurrency is None else max_concurrency
        if concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.memory_cost = memory_cost
        self.time_cost = time_cost
        self.parallelism = parallelism
        self.max_concurrency = concurrency
        self._hash = PasswordHash(
            (Argon2Hasher(memory_cost=memory_cost, time_cost=time_cost, parallelism=parallelism),)
        )
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"PasswordHasher(memory_cost={self.memory_cost}, time_cost={self.time_cost}, "
            f"parallelism={self.parallelism}, max_concurrency={self.max_concurrency})"
        )

    async def hash(self, password: str) -> str:
        """Hash ``password`` (already checked and normalised by the policy).

        Raises ``UnicodeEncodeError`` for text that is not valid Unicode (a lone
        surrogate); :class:`~bastion.password_policy.PasswordPolicy` refuses
        such passwords before they get here.
        """
        secret = password.encode("utf-8")
        return await self._run(self._hash.hash, secret)

    async def verify(self, password: str, hash: str) -> bool:
        """Whether ``password`` matches ``hash``; never upgrades the hash.

        For checks that must not have a side effect, such as a login attempt on
        a disabled account (which must cost exactly what a wrong password costs).
        """
        ok, _ = await self._run(self._verify_sync, _verify_bytes(password), hash, False)
        return ok

    async def verify_and_update(self, password: str, hash: str) -> tuple[bool, str | None]:
        """Verify ``password`` against ``hash``.

        Returns ``(matches, new_hash)``: ``new_hash`` is set only when the
        password matches and ``hash`` was made with other parameters (or another
        algorithm than the current one); the caller stores it so the account
        moves to the current cost. A malformed ``hash`` gives ``(False, None)``.
        """
        return await self._run(self._verify_sync, _verify_bytes(password), hash, True)

    async def verify_dummy(self, password: str) -> None:
        """Spend what verifying a wrong password costs, and learn nothing.

        For logins to unknown accounts: the answer must not come back faster
        than for a known account with a wrong password.
        """
        await self._run(self._verify_dummy_sync, _verify_bytes(password))

    async def warm_up(self) -> None:
        """Make the dummy hash now rather than on the first unknown-user login.

        Optional; a server calls it at start so that even the first such login
        costs the same as a wrong password.
        """
        await self._run(self._get_dummy_hash)

    async def _run(self, func: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    def _get_dummy_hash(self) -> str:
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._hash.hash(secrets.token_bytes(32))
            return self._dummy_hash

    def _verify_dummy_sync(self, secret: bytes) -> None:
        self._hash.verify(secret, self._get_dummy_hash())

    def _verify_sync(self, secret: bytes, hash: str, update: bool) -> tuple[bool, str | None]:
        if not _is_well_formed(hash):
            logger.warning(
                "a stored password hash is malformed or of an unsupported scheme; "
                "verification fails"
            )
            self._verify_dummy_sync(secret)
            return False, None
        try:
            if update:
                return self._hash.verify_and_update(secret, hash)
            return self._hash.verify(secret, hash), None
        except (UnknownHashError, InvalidHashError):
            # Defensive: _is_well_formed should have caught these already.
            logger.warning("a stored password hash could not be parsed; verification fails")
            return False, None


def _is_well_formed(hash: object) -> bool:
    """Whether ``hash`` is an Argon2 encoded hash whose parameters parse."""
    if not isinstance(hash, str) or not Argon2Hasher.identify(hash):
        return False
    try:
        extract_parameters(hash)
    except InvalidHashError:
        return False
    return True
