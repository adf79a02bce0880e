"""Argon2id hashing: parameters, upgrades, malformed hashes, the event loop, timing."""

from __future__ import annotations

import logging
import statistics
import threading
import time

import anyio
import pytest
from argon2 import extract_parameters

from bastion.passwords import PasswordHasher

pytestmark = pytest.mark.anyio

CHEAP = {"memory_cost": 8192, "time_cost": 1}
"""Fast parameters for tests where the cost itself is not the point."""


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(**CHEAP)


async def test_default_hash_is_owasp_argon2id() -> None:
    """Defaults are the OWASP baseline: argon2id, m=19456 KiB, t=2, p=1, in the encoded hash."""
    encoded = await PasswordHasher().hash("correct horse battery staple")
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        pytest.param("correct horse battery staple", True, id="right"),
        pytest.param("correct horse battery stapl", False, id="one-char-short"),
        pytest.param("Correct horse battery staple", False, id="case-differs"),
        pytest.param("", False, id="empty"),
        pytest.param("lone \ud800 surrogate", False, id="unencodable-input"),
    ],
)
async def test_verify(hasher: PasswordHasher, candidate: str, expected: bool) -> None:
    """Only the exact password verifies; odd input fails instead of raising."""
    encoded = await hasher.hash("correct horse battery staple")
    assert await hasher.verify(candidate, encoded) is expected
    assert await hasher.verify_and_update(candidate, encoded) == (expected, None)


async def test_hashes_are_salted(hasher: PasswordHasher) -> None:
    """The same password hashes differently each time (random salt)."""
    assert await hasher.hash("same password") != await hasher.hash("same password")


async def test_no_truncation(hasher: PasswordHasher) -> None:
    """Two 100-character passwords differing only in the last character do not cross-verify."""
    first, second = "p" * 99 + "a", "p" * 99 + "b"
    first_hash, second_hash = await hasher.hash(first), await hasher.hash(second)
    assert first_hash != second_hash
    assert await hasher.verify(first, first_hash)
    assert not await hasher.verify(second, first_hash)
    assert not await hasher.verify(first, second_hash)


async def test_unicode_password_round_trips(hasher: PasswordHasher) -> None:
    """Emoji and non-Latin text hash and verify as UTF-8."""
    password = "🔐 пароль 密码"
    assert await hasher.verify(password, await hasher.hash(password))


async def test_verify_and_update_upgrades_outdated_parameters() -> None:
    """A hash made with t=1 verifies under a t=2 hasher and comes back re-made with t=2."""
    old = await PasswordHasher(memory_cost=8192, time_cost=1).hash("swordfish swordfish")
    current = PasswordHasher(memory_cost=8192, time_cost=2)
    ok, new_hash = await current.verify_and_update("swordfish swordfish", old)
    assert ok
    assert new_hash is not None
    assert extract_parameters(new_hash).time_cost == 2
    assert await current.verify_and_update("swordfish swordfish", new_hash) == (True, None)


async def test_verify_and_update_keeps_current_hash(hasher: PasswordHasher) -> None:
    """A hash already made with the current parameters needs no update."""
    encoded = await hasher.hash("swordfish swordfish")
    assert await hasher.verify_and_update("swordfish swordfish", encoded) == (True, None)


async def test_wrong_password_never_upgrades() -> None:
    """An outdated hash is not re-made for a wrong password."""
    old = await PasswordHasher(memory_cost=8192, time_cost=1).hash("swordfish swordfish")
    current = PasswordHasher(memory_cost=8192, time_cost=2)
    assert await current.verify_and_update("not it at all", old) == (False, None)


async def test_verify_never_upgrades() -> None:
    """Plain verify reports a match without re-hashing (used for disabled accounts)."""
    old = await PasswordHasher(memory_cost=8192, time_cost=1).hash("swordfish swordfish")
    assert await PasswordHasher(memory_cost=8192, time_cost=2).verify("swordfish swordfish", old)


MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("not a hash", id="garbage"),
    pytest.param("$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234", id="bcrypt"),
    pytest.param("$argon2id$v=19$m=8192,t=1,p=1", id="no-salt-or-digest"),
    pytest.param("$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$", id="empty-digest"),
    pytest.param("$argon2id$v=19$m=8192,t=1,p=1$!!!!$!!!!", id="bad-base64"),
    pytest.param("$argon2id$v=19$m=x,t=1,p=1$c2FsdHNhbHQ$ZGlnZXN0", id="bad-parameter"),
]


@pytest.mark.parametrize("encoded", MALFORMED)
async def test_malformed_hash_fails_verification(
    hasher: PasswordHasher, encoded: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken stored hash is a failed verification, never an exception, nor logged verbatim."""
    caplog.set_level(logging.WARNING, logger="bastion.passwords")
    assert await hasher.verify_and_update("anything at all", encoded) == (False, None)
    assert await hasher.verify("anything at all", encoded) is False
    if encoded:
        assert all(encoded not in record.getMessage() for record in caplog.records)


async def test_unparseable_hash_is_logged_at_warning(
    hasher: PasswordHasher, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator learns that a stored hash is unusable, without seeing the hash."""
    caplog.set_level(logging.WARNING, logger="bastion.passwords")
    await hasher.verify_and_update("anything at all", "$1$legacy$md5cryptvalue")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "legacy" not in record.getMessage()


async def test_verify_dummy_returns_nothing(hasher: PasswordHasher) -> None:
    """The dummy verification only spends time; it has no answer to leak."""
    assert await hasher.verify_dummy("whatever") is None  # type: ignore[func-returns-value]
    await hasher.warm_up()
    assert await hasher.verify_dummy("whatever") is None  # type: ignore[func-returns-value]


async def test_verify_dummy_costs_about_a_wrong_password() -> None:
    """An unknown user costs about what a wrong password does (median ratio within 0.5-2.0)."""
    hasher = PasswordHasher()
    encoded = await hasher.hash("the real password")
    await hasher.warm_up()

    async def timed_wrong() -> float:
        start = time.perf_counter()
        await hasher.verify_and_update("a wrong password", encoded)
        return time.perf_counter() - start

    async def timed_dummy() -> float:
        start = time.perf_counter()
        await hasher.verify_dummy("a wrong password")
        return time.perf_counter() - start

    wrong, dummy = [], []
    for _ in range(7):
        wrong.append(await timed_wrong())
        dummy.append(await timed_dummy())
    ratio = statistics.median(dummy) / statistics.median(wrong)
    assert 0.5 < ratio < 2.0, (wrong, dummy)


async def test_event_loop_stays_responsive_while_hashing() -> None:
    """Eight concurrent hashes leave the loop free: no heartbeat gap near one hash's time."""
    hasher = PasswordHasher(memory_cost=65_536, time_cost=3)
    start = time.perf_counter()
    await hasher.hash("calibration run")
    one_hash = time.perf_counter() - start

    max_gap = 0.0
    done = anyio.Event()

    async def heartbeat() -> None:
        nonlocal max_gap
        last = time.perf_counter()
        while not done.is_set():
            await anyio.sleep(0.001)
            now = time.perf_counter()
            max_gap = max(max_gap, now - last)
            last = now

    async def hash_all() -> None:
        async with anyio.create_task_group() as hashes:
            for i in range(8):
                hashes.start_soon(hasher.hash, f"password number {i}")
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        tg.start_soon(hash_all)

    # Run on the loop, one hash would block it for `one_hash` (and eight for 8x that).
    assert max_gap < one_hash / 2, (max_gap, one_hash)


async def test_concurrency_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No more hashes run at once than max_concurrency allows."""
    hasher = PasswordHasher(**CHEAP, max_concurrency=2)
    running = peak = 0
    lock = threading.Lock()
    original = hasher._hash.hash

    def counting_hash(secret: bytes) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            return original(secret)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(hasher._hash, "hash", counting_hash)
    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(hasher.hash, f"password {i}")
    assert peak <= 2


def test_construction_is_cheap() -> None:
    """Building a hasher computes no hash (the dummy is made lazily, never at import)."""
    start = time.perf_counter()
    hasher = PasswordHasher(memory_cost=262_144, time_cost=10)
    assert time.perf_counter() - start < 0.5  # one such hash takes seconds
    assert hasher._dummy_hash is None


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"time_cost": 0}, id="time-zero"),
        pytest.param({"parallelism": 0}, id="parallelism-zero"),
        pytest.param({"memory_cost": 7}, id="memory-below-argon2-minimum"),
        pytest.param({"max_concurrency": 0}, id="no-concurrency"),
    ],
)
def test_invalid_parameters_refused(kwargs: dict[str, int]) -> None:
    """Parameters argon2 cannot run with fail at construction, not at the first login."""
    with pytest.raises(ValueError, match="must be at least"):
        PasswordHasher(**kwargs)


def test_repr_shows_parameters_only() -> None:
    """The repr names the cost parameters (no hashes, no dummy)."""
    assert repr(PasswordHasher(**CHEAP, max_concurrency=3)) == (
        "PasswordHasher(memory_cost=8192, time_cost=1, parallelism=1, max_concurrency=3)"
    )
