"""In-process measurements for bench/run.py: token verification and bare argon2id.

Nothing here opens a socket. Every comparison runs its variants in interleaved
rounds (the order rotated each round) so that a noisy neighbour slows all of
them alike, and reports per-call times per round; run.py takes medians.
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr

from bastion.core import Bastion
from bastion.guard import TokenVerifier
from bastion.jwt import parse_token, validate_claims, verify_signature
from bastion.settings import Settings
from bastion.stores.sql.migrate import upgrade

MICRO_ISSUER = "http://127.0.0.1:9"
"""Any issuer will do: the tokens never leave the process."""

Timer = Callable[[int], Awaitable[float]]
"""Runs ``n`` calls and returns nanoseconds per call."""


@dataclass
class MicroResult:
    """Per-round nanoseconds per call, by variant name, in the order measured."""

    iterations: dict[str, int]
    rounds: dict[str, list[float]] = field(default_factory=dict)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Collect first, then keep the collector out of the timed loop."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _time_async(n: int, call: Callable[[int], Awaitable[object]]) -> float:
    with _no_gc():
        start = time.perf_counter_ns()
        for i in range(n):
            await call(i)
        return (time.perf_counter_ns() - start) / n


async def _time_sync(n: int, call: Callable[[int], object]) -> float:
    with _no_gc():
        start = time.perf_counter_ns()
        for i in range(n):
            call(i)
        return (time.perf_counter_ns() - start) / n


async def _verification(tmp: Path, rounds: int, slow_n: int, fast_n: int) -> MicroResult:
    url = f"sqlite+aiosqlite:///{tmp / 'micro.db'}"
    await upgrade(url)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        secret_key=SecretStr("bench-micro-secret-" + uuid.uuid4().hex),
        issuer=MICRO_ISSUER,
    )
    bastion = Bastion(settings)
    async with bastion.lifespan():
        # Distinct tokens (each its own jti and sub), cycled through by every variant.
        tokens = [
            (
                await bastion.tokens.issue(
                    subject=str(uuid.uuid4()), scopes=["profile", "email"], client_id="bastion"
                )
            ).access_token
            for _ in range(64)
        ]
        kid = jwt.get_unverified_header(tokens[0])["kid"]
        key = await bastion.keys.get(kid)
        assert key is not None, "the key that signed the tokens is not published"
        public_key = key.public_key
        issuer, audience = settings.issuer, settings.audience

        # The server's own key manager (LocalKeyManager over SQLite), cache off:
        # every call parses, looks the key up, checks the signature and the claims.
        uncached = TokenVerifier(bastion.keys, issuer=issuer, audience=audience, cache_size=0)
        cached = TokenVerifier(bastion.keys, issuer=issuer, audience=audience)
        for token in tokens:
            await cached.authenticate(token)
        parsed = [parse_token(t) for t in tokens]
        payloads = [jwt.decode(t, options={"verify_signature": False}) for t in tokens]
        now = time.time()

        def mask(i: int) -> int:
            return i & 63

        timers: dict[str, tuple[int, Timer]] = {
            "pyjwt": (
                slow_n,
                lambda n: _time_sync(
                    n,
                    lambda i: jwt.decode(
                        tokens[mask(i)],
                        public_key,
                        algorithms=["EdDSA"],
                        audience=audience,
                        issuer=issuer,
                    ),
                ),
            ),
            "bastion": (
                slow_n,
                lambda n: _time_async(n, lambda i: uncached.authenticate(tokens[mask(i)])),
            ),
            "ed25519": (
                slow_n,
                lambda n: _time_sync(
                    n,
                    lambda i: public_key.verify(
                        parsed[mask(i)].signature, parsed[mask(i)].signing_input
                    ),
                ),
            ),
            "stage1": (
                fast_n // 10,
                lambda n: _time_sync(n, lambda i: parse_token(tokens[mask(i)])),
            ),
            "stage2": (
                slow_n,
                lambda n: _time_sync(n, lambda i: verify_signature(parsed[mask(i)], key)),
            ),
            "stage3": (
                fast_n // 10,
                lambda n: _time_sync(
                    n,
                    lambda i: validate_claims(
                        payloads[mask(i)], issuer=issuer, audience=audience, now=now
                    ),
                ),
            ),
            "keyget": (fast_n // 10, lambda n: _time_async(n, lambda i: bastion.keys.get(kid))),
            "cached": (fast_n, lambda n: _time_sync(n, lambda i: cached.cached(tokens[mask(i)]))),
            "cached_auth": (
                fast_n,
                lambda n: _time_async(n, lambda i: cached.authenticate(tokens[mask(i)])),
            ),
        }
        result = MicroResult(iterations={name: n for name, (n, _) in timers.items()})
        names = list(timers)
        for name, (_, timer) in timers.items():  # warm-up, not recorded
            await timer(max(1, timers[name][0] // 10))
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                n, timer = timers[name]
                result.rounds.setdefault(name, []).append(await timer(n))
        return result


def verification_rounds(tmp: Path, rounds: int, slow_n: int, fast_n: int) -> MicroResult:
    """Token verification, per call: Bastion's verifier (cache off) vs bare PyJWT,
    the Ed25519 floor, the three stages, and the cached hit."""
    return anyio.run(_verification, tmp, rounds, slow_n, fast_n)


@dataclass
class Argon2Baseline:
    """Bare argon2id verification with given parameters, off the event loop."""

    memory_cost: int
    time_cost: int
    parallelism: int
    threads: int
    password: bytes = b"the bench password, verified over and over"
    _stored: str | None = field(default=None, repr=False)

    def _hasher(self) -> PasswordHash:
        return PasswordHash(
            (
                Argon2Hasher(
                    memory_cost=self.memory_cost,
                    time_cost=self.time_cost,
                    parallelism=self.parallelism,
                ),
            )
        )

    def rate(self, duration: float) -> float:
        """Verifications per second over ``duration`` seconds: ``threads`` tasks,
        each ``anyio.to_thread.run_sync(verify)`` in a loop, bounded by a limiter
        of ``threads`` (what :class:`bastion.passwords.PasswordHasher` does).

        Worker threads inherit the calling thread's CPU affinity, and a fresh
        ``anyio.run`` starts fresh workers, so the caller pins this."""
        hasher = self._hasher()
        if self._stored is None:
            self._stored = hasher.hash(self.password)
        stored = self._stored

        async def main() -> float:
            limiter = anyio.CapacityLimiter(self.threads)
            done = 0
            start = time.perf_counter()
            deadline = start + duration

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    ok = await anyio.to_thread.run_sync(
                        hasher.verify, self.password, stored, limiter=limiter
                    )
                    assert ok
                    done += 1

            async with anyio.create_task_group() as tg:
                for _ in range(self.threads):
                    tg.start_soon(worker)
            return done / (time.perf_counter() - start)

        return anyio.run(main, backend_options={"use_uvloop": True})


@contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with the calling thread pinned to ``cpus`` (None: unchanged)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
