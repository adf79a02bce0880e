"""``RevocationChecker``, strict mode's "was this token revoked?", without HTTP
except at the end: how long answers are remembered, single flight on a miss,
``forget()`` racing a lookup in flight, and failing closed with 503."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta

import anyio
import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI, Security

from bastion.clock import FrozenClock
from bastion.errors import ServiceUnavailable
from bastion.guard import BearerGuard
from bastion.jwt import AccessTokenClaims
from bastion.stores.memory import MemoryRevocationStore
from bastion.stores.protocols import RevocationStore
from bastion.stores.redis import RedisRevocationStore, create_redis
from bastion.stores.sql import SqlRevocationStore, create_engine, create_sessionmaker
from bastion.testing import TokenFactory
from bastion.tokens.revocation import RevocationChecker
from tests.token_flows import bearer

pytestmark = pytest.mark.anyio

STALENESS = 1.0


class CountingStore:
    """A :class:`MemoryRevocationStore` that counts ``is_revoked`` calls and,
    when ``gate`` is set, holds each answer (read from the store first) until
    the gate opens: a lookup in flight that already read its answer."""

    def __init__(self, clock: FrozenClock) -> None:
        self.inner = MemoryRevocationStore(clock)
        self.calls = 0
        self.gate: anyio.Event | None = None
        self.waiting = 0
        self.error: Exception | None = None

    async def is_revoked(self, jti: str | None, subject: str, issued_at: float) -> bool:
        self.calls += 1
        if self.error is not None:
            raise self.error
        answer = await self.inner.is_revoked(jti, subject, issued_at)
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
        return answer

    async def deny(self, jti: str, *, expires_at: datetime) -> None:
        await self.inner.deny(jti, expires_at=expires_at)

    async def set_watermark(self, subject: str, moment: datetime, *, keep_until: datetime) -> None:
        await self.inner.set_watermark(subject, moment, keep_until=keep_until)

    async def purge(self, *, now: datetime) -> int:
        return await self.inner.purge(now=now)


@pytest.fixture
def store(clock: FrozenClock) -> CountingStore:
    return CountingStore(clock)


@pytest.fixture
def checker(store: CountingStore, clock: FrozenClock) -> RevocationChecker:
    return RevocationChecker(store, clock, max_staleness=STALENESS)


def claims(clock: FrozenClock, jti: str = "jti-1", subject: str = "user-1") -> AccessTokenClaims:
    now = clock.timestamp()
    return AccessTokenClaims(
        issuer="https://bastion.test",
        subject=subject,
        audience=("https://bastion.test",),
        expires_at=now + 900,
        issued_at=now,
        jwt_id=jti,
        client_id="bastion",
        scopes=frozenset(),
        roles=(),
        not_before=now,
        raw={},
    )


async def deny(store: CountingStore, clock: FrozenClock, jti: str = "jti-1") -> None:
    await store.deny(jti, expires_at=clock.now() + timedelta(seconds=900))


# ------------------------------------------------------------------ remembering


async def test_answer_is_remembered_for_exactly_max_staleness(
    checker: RevocationChecker, store: CountingStore, clock: FrozenClock
) -> None:
    """One store call per token per ``max_staleness``: a revocation made
    elsewhere is missed until the remembered answer lapses, and seen right after."""
    token = claims(clock)
    assert await checker.is_revoked(token) is False
    assert store.calls == 1
    await deny(store, clock)  # another instance revokes it
    clock.advance(STALENESS - 0.001)
    assert await checker.is_revoked(token) is False  # still the remembered answer
    assert store.calls == 1
    clock.advance(0.001)  # exactly max_staleness after the lookup
    assert await checker.is_revoked(token) is True
    assert store.calls == 2
    assert await checker.is_revoked(token) is True
    assert store.calls == 2  # "revoked" is remembered too


async def test_tokens_are_remembered_separately(
    checker: RevocationChecker, store: CountingStore, clock: FrozenClock
) -> None:
    """Another ``jti``, subject or ``iat`` is another question to the store."""
    await checker.is_revoked(claims(clock))
    await checker.is_revoked(claims(clock, jti="jti-2"))
    await checker.is_revoked(claims(clock, subject="user-2"))
    clock.advance(0.5)
    await checker.is_revoked(claims(clock))  # a new iat
    assert store.calls == 4


async def test_zero_staleness_asks_every_time(store: CountingStore, clock: FrozenClock) -> None:
    """``max_staleness=0`` remembers nothing: every call asks the store."""
    checker = RevocationChecker(store, clock, max_staleness=0)
    token = claims(clock)
    for _ in range(3):
        assert await checker.is_revoked(token) is False
    assert store.calls == 3


async def test_cache_is_bounded(store: CountingStore, clock: FrozenClock) -> None:
    """With ``cache_size=2`` the oldest answer goes first."""
    checker = RevocationChecker(store, clock, max_staleness=STALENESS, cache_size=2)
    first, second, third = (claims(clock, jti=f"jti-{i}") for i in range(3))
    for token in (first, second, third):
        await checker.is_revoked(token)
    assert store.calls == 3
    await checker.is_revoked(third)
    assert store.calls == 3
    await checker.is_revoked(first)  # evicted: asked again
    assert store.calls == 4


# ------------------------------------------------------------------ single flight


async def test_concurrent_misses_share_one_store_call(
    checker: RevocationChecker, store: CountingStore, clock: FrozenClock
) -> None:
    """50 concurrent checks of one token on a cache miss make ONE store call."""
    store.gate = anyio.Event()
    token = claims(clock)
    answers: list[bool] = []

    async def check() -> None:
        answers.append(await checker.is_revoked(token))

    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(check)
        await anyio.wait_all_tasks_blocked()  # all 50 are inside is_revoked now
        assert store.waiting == 1
        store.gate.set()
    assert answers == [False] * 50
    assert store.calls == 1


async def test_a_failed_lookup_fails_every_waiter_and_is_not_remembered(
    checker: RevocationChecker, store: CountingStore, clock: FrozenClock
) -> None:
    """A store error reaches every request that shared the lookup, and the
    next call asks again instead of remembering the failure."""
    store.error = ServiceUnavailable("down")
    token = claims(clock)
    errors: list[BaseException] = []

    async def check() -> None:
        try:
            await checker.is_revoked(token)
        except ServiceUnavailable as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(check)
    assert len(errors) == 5
    assert store.calls == 1
    store.error = None
    assert await checker.is_revoked(token) is False
    assert store.calls == 2


# ------------------------------------------------------------------ forget()


async def test_forget_makes_the_next_call_ask_again(
    checker: RevocationChecker, store: CountingStore, clock: FrozenClock
) -> None:
    """After ``forget()`` (a revocation made in this process) the remembered answer is gone."""
    token = claims(clock)
    assert await checker.is_revoked(token) is False
    await deny(store, clock)
    checker.forget()
    assert await checker.is_revoked(token) is True
    assert store.calls == 2


async def test_lookup_in_flight_during_forget_does_not_poison_the_cache(
    checker: RevocationChecker, store: CountingStore, clock: FrozenClock
) -> None:
    """A lookup that read "not revoked" before a revocation and ``forget()`` is
    not remembered, and not shared with checks made after ``forget()``."""
    token = claims(clock)
    store.gate = anyio.Event()
    answers: dict[str, bool] = {}

    async def check(name: str) -> None:
        answers[name] = await checker.is_revoked(token)

    async with anyio.create_task_group() as group:
        group.start_soon(check, "before")
        await anyio.wait_all_tasks_blocked()
        assert store.waiting == 1  # it read "not revoked" and is held
        await deny(store, clock)
        checker.forget()
        group.start_soon(check, "after")
        await anyio.wait_all_tasks_blocked()
        assert store.waiting == 2  # its own lookup, not the stale one
        store.gate.set()
    assert answers == {"before": False, "after": True}
    assert store.calls == 2
    store.gate = None
    assert await checker.is_revoked(token) is True  # the fresh answer was remembered
    assert store.calls == 2


async def test_stale_lookup_finishing_after_forget_is_not_remembered(
    checker: RevocationChecker, store: CountingStore, clock: FrozenClock
) -> None:
    """The stale answer of a lookup released after ``forget()`` is not cached:
    the next call asks the store again."""
    token = claims(clock)
    store.gate = anyio.Event()
    answers: list[bool] = []

    async def check() -> None:
        answers.append(await checker.is_revoked(token))

    async with anyio.create_task_group() as group:
        group.start_soon(check)
        await anyio.wait_all_tasks_blocked()
        assert store.waiting == 1
        await deny(store, clock)
        checker.forget()
        store.gate.set()
    assert answers == [False]  # that request raced the revocation
    store.gate = None
    assert await checker.is_revoked(token) is True
    assert store.calls == 2


# ------------------------------------------------------------------ failing closed


@asynccontextmanager
async def raising(store: CountingStore, clock: FrozenClock) -> AsyncIterator[RevocationStore]:
    store.error = ServiceUnavailable("The revocation store is unavailable.")
    yield store


@asynccontextmanager
async def redis_down(store: CountingStore, clock: FrozenClock) -> AsyncIterator[RevocationStore]:
    """A Redis store whose server is not there (a closed port)."""
    client = create_redis("redis://127.0.0.1:1/0", timeout=0.5, retries=0)
    try:
        yield RedisRevocationStore(client, clock=clock)
    finally:
        await client.aclose()


@asynccontextmanager
async def postgres_down(store: CountingStore, clock: FrozenClock) -> AsyncIterator[RevocationStore]:
    """A SQL store whose PostgreSQL is not there (a closed port)."""
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    try:
        yield SqlRevocationStore(create_sessionmaker(engine), clock=clock)
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "outage",
    [
        pytest.param(raising, id="store-raises"),
        pytest.param(redis_down, id="redis-down"),
        pytest.param(postgres_down, id="postgres-down"),
    ],
)
async def test_unavailable_store_makes_the_guard_answer_503(
    store: CountingStore,
    clock: FrozenClock,
    outage: Callable[[CountingStore, FrozenClock], AbstractAsyncContextManager[RevocationStore]],
) -> None:
    """Strict mode fails closed: when the revocation store cannot answer, a
    valid token gets 503, never 200, 401 or 500."""
    factory = TokenFactory(clock=clock)
    token = factory.mint("user-1")
    async with outage(store, clock) as broken:
        checker = RevocationChecker(broken, clock, max_staleness=STALENESS)
        async with guarded_client(factory, checker) as http:
            first = await http.get("/resource", headers=bearer(token))
            again = await http.get("/resource", headers=bearer(token))  # failure not remembered
    for response in (first, again):
        assert response.status_code == 503, response.text
        assert response.json() == {"detail": ServiceUnavailable.default_detail}
        assert "www-authenticate" not in response.headers
        assert token not in response.text


async def test_guard_recovers_when_the_store_is_back(
    store: CountingStore, clock: FrozenClock
) -> None:
    """After an outage the same token works again, and a revocation is honoured."""
    factory = TokenFactory(clock=clock)
    token = factory.mint("user-1")
    checker = RevocationChecker(store, clock, max_staleness=STALENESS)
    async with guarded_client(factory, checker) as http:
        store.error = ServiceUnavailable()
        assert (await http.get("/resource", headers=bearer(token))).status_code == 503
        store.error = None
        assert (await http.get("/resource", headers=bearer(token))).status_code == 200
        jti = pyjwt.decode(token, options={"verify_signature": False})["jti"]
        await deny(store, clock, jti=jti)
        checker.forget()
        assert (await http.get("/resource", headers=bearer(token))).status_code == 401


@asynccontextmanager
async def guarded_client(
    factory: TokenFactory, checker: RevocationChecker
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a one-route app behind a strict guard over ``checker``."""
    guard = BearerGuard(factory.verifier(revocations=checker))
    app = FastAPI()

    @app.get("/resource", dependencies=[Security(guard)])
    async def resource() -> dict[str, bool]:
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.mark.parametrize(
    ("forget", "still_cached"),
    [
        ({"jti": "jti-1"}, {"jti-2", "jti-3"}),
        ({"subject": "user-1"}, {"jti-3"}),
        ({}, set()),
    ],
    ids=["by-jti", "by-subject", "everything"],
)
async def test_forget_drops_only_the_answers_the_revocation_changed(
    checker: RevocationChecker,
    store: CountingStore,
    clock: FrozenClock,
    forget: dict[str, str],
    still_cached: set[str],
) -> None:
    """A local logout re-asks the store for that token (or that user) only;
    other tokens keep their remembered answers."""
    tokens = {
        "jti-1": claims(clock, "jti-1", "user-1"),
        "jti-2": claims(clock, "jti-2", "user-1"),
        "jti-3": claims(clock, "jti-3", "user-2"),
    }
    for token in tokens.values():
        await checker.is_revoked(token)
    checker.forget(**forget)
    for jti, token in tokens.items():
        before = store.calls
        await checker.is_revoked(token)
        assert (store.calls == before) is (jti in still_cached), jti
