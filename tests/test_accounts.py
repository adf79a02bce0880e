"""The accounts service over the real SQL user store (a temporary SQLite file)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import extract_parameters

from bastion.accounts import AccountService
from bastion.clock import FrozenClock
from bastion.errors import EmailAlreadyRegistered, InvalidCredentials, PasswordRejected
from bastion.password_policy import PasswordPolicy
from bastion.passwords import PasswordHasher
from bastion.stores.sql import SqlUserStore, create_engine, create_sessionmaker
from bastion.stores.sql.migrate import upgrade

pytestmark = pytest.mark.anyio

EMAIL = "alice@example.com"
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def users(tmp_path: Path) -> AsyncIterator[SqlUserStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'accounts.db'}"
    await upgrade(url)
    engine = create_engine(url)
    try:
        yield SqlUserStore(create_sessionmaker(engine))
    finally:
        await engine.dispose()


def fullwidth(text: str) -> str:
    """``text`` (printable ASCII) in fullwidth forms, which NFKC maps back to ASCII."""
    return "".join(chr(ord(ch) + 0xFEE0) for ch in text)


def make_service(users: SqlUserStore, clock: FrozenClock, *, time_cost: int = 1) -> AccountService:
    """A service with cheap argon2 parameters; ``time_cost`` lets a test change them."""
    return AccountService(
        users, PasswordHasher(memory_cost=8192, time_cost=time_cost), PasswordPolicy(), clock
    )


@pytest.fixture
def accounts(users: SqlUserStore, clock: FrozenClock) -> AccountService:
    return make_service(users, clock)


async def test_register_creates_active_unverified_user(
    accounts: AccountService, clock: FrozenClock
) -> None:
    """Registration stores an active, unverified user with an argon2id hash, never the password."""
    user = await accounts.register(email=EMAIL, password=PASSWORD, username="alice")
    assert (user.email, user.username) == (EMAIL, "alice")
    assert user.is_active
    assert not user.email_verified
    assert user.created_at == clock.now()
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


async def test_authenticate_returns_the_user(accounts: AccountService) -> None:
    """The right password for a registered email returns that user."""
    registered = await accounts.register(email=EMAIL, password=PASSWORD)
    user = await accounts.authenticate(email=EMAIL, password=PASSWORD)
    assert user.id == registered.id


@pytest.mark.parametrize(
    "login_email",
    [
        pytest.param("ALICE@EXAMPLE.COM", id="upper"),
        pytest.param("Alice@Example.com", id="mixed"),
        pytest.param("  alice@example.com ", id="surrounding-space"),
    ],
)
async def test_authenticate_email_is_case_insensitive(
    accounts: AccountService, login_email: str
) -> None:
    """Login finds the account whatever the case of the address (the store compares folded)."""
    registered = await accounts.register(email=EMAIL, password=PASSWORD)
    assert (await accounts.authenticate(email=login_email, password=PASSWORD)).id == registered.id


async def test_password_is_nfkc_normalised_at_login(accounts: AccountService) -> None:
    """A password registered in one Unicode form verifies when typed in an equivalent one."""
    await accounts.register(email=EMAIL, password=fullwidth("fullwidth") + " passphrase")
    user = await accounts.authenticate(email=EMAIL, password="fullwidth passphrase")
    assert user.email == EMAIL


@pytest.mark.parametrize(
    ("login_email", "login_password"),
    [
        pytest.param(EMAIL, "correct horse battery stapler", id="wrong-password"),
        pytest.param(EMAIL, "Correct horse battery staple", id="password-case"),
        pytest.param(EMAIL, "", id="empty-password"),
        pytest.param(EMAIL, "x" * 100_000, id="huge-password"),
        pytest.param(EMAIL, "lone \ud800 surrogate", id="unencodable-password"),
        pytest.param("bob@example.com", PASSWORD, id="unknown-email"),
        pytest.param("", PASSWORD, id="empty-email"),
    ],
)
async def test_authenticate_failures_are_indistinguishable(
    accounts: AccountService, login_email: str, login_password: str
) -> None:
    """Every failure is the same InvalidCredentials with the same message."""
    await accounts.register(email=EMAIL, password=PASSWORD)
    with pytest.raises(InvalidCredentials) as info:
        await accounts.authenticate(email=login_email, password=login_password)
    assert info.value.detail == InvalidCredentials.default_detail


async def test_unknown_user_spends_a_dummy_verification(
    accounts: AccountService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown email still costs one password verification (against the dummy)."""
    calls: list[str] = []
    hasher = accounts._hasher
    original = hasher.verify_dummy

    async def spy(password: str) -> None:
        calls.append(password)
        await original(password)

    monkeypatch.setattr(hasher, "verify_dummy", spy)
    with pytest.raises(InvalidCredentials):
        await accounts.authenticate(email="nobody@example.com", password=PASSWORD)
    assert calls == [PASSWORD]


async def test_inactive_user_is_refused_after_verifying(
    accounts: AccountService,
    users: SqlUserStore,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A disabled account gets the same InvalidCredentials, after a real verification."""
    user = await accounts.register(email=EMAIL, password=PASSWORD)
    await users.set_active(user.id, False, now=clock.now())
    verified: list[bool] = []
    hasher = accounts._hasher
    original = hasher.verify

    async def spy(password: str, hash: str) -> bool:
        verified.append(await original(password, hash))
        return verified[-1]

    monkeypatch.setattr(hasher, "verify", spy)
    with pytest.raises(InvalidCredentials) as info:
        await accounts.authenticate(email=EMAIL, password=PASSWORD)
    assert info.value.detail == InvalidCredentials.default_detail
    assert verified == [True]


async def test_inactive_user_hash_is_not_upgraded(users: SqlUserStore, clock: FrozenClock) -> None:
    """A login attempt on a disabled account writes nothing, even with an outdated hash."""
    user = await make_service(users, clock, time_cost=1).register(email=EMAIL, password=PASSWORD)
    await users.set_active(user.id, False, now=clock.now())
    with pytest.raises(InvalidCredentials):
        await make_service(users, clock, time_cost=2).authenticate(email=EMAIL, password=PASSWORD)
    stored = await users.get(user.id)
    assert stored is not None
    assert stored.password_hash == user.password_hash


@pytest.mark.parametrize(
    "second_email",
    [
        pytest.param(EMAIL, id="same"),
        pytest.param("ALICE@EXAMPLE.COM", id="upper"),
        pytest.param("Alice@example.com", id="capitalised"),
    ],
)
async def test_duplicate_email_in_any_case_is_refused(
    accounts: AccountService, users: SqlUserStore, second_email: str
) -> None:
    """A second registration for the same address, in any case, is a conflict; the first stays."""
    first = await accounts.register(email=EMAIL, password=PASSWORD)
    with pytest.raises(EmailAlreadyRegistered):
        await accounts.register(email=second_email, password="another good passphrase")
    assert await users.count() == 1
    assert (await accounts.authenticate(email=EMAIL, password=PASSWORD)).id == first.id


async def test_outdated_hash_is_upgraded_at_login(users: SqlUserStore, clock: FrozenClock) -> None:
    """A hash made with t=1 is re-saved with t=2 on login, and the password still verifies."""
    user = await make_service(users, clock, time_cost=1).register(email=EMAIL, password=PASSWORD)
    assert extract_parameters(user.password_hash).time_cost == 1

    clock.advance(60)
    upgraded = make_service(users, clock, time_cost=2)
    returned = await upgraded.authenticate(email=EMAIL, password=PASSWORD)

    stored = await users.get(user.id)
    assert stored is not None
    assert stored.password_hash != user.password_hash
    assert extract_parameters(stored.password_hash).time_cost == 2
    assert returned.password_hash == stored.password_hash
    assert stored.updated_at == clock.now()
    assert (await upgraded.authenticate(email=EMAIL, password=PASSWORD)).id == user.id


async def test_current_hash_is_not_rewritten(accounts: AccountService, users: SqlUserStore) -> None:
    """A login with an up-to-date hash writes nothing."""
    user = await accounts.register(email=EMAIL, password=PASSWORD)
    await accounts.authenticate(email=EMAIL, password=PASSWORD)
    stored = await users.get(user.id)
    assert stored is not None
    assert stored.password_hash == user.password_hash
    assert stored.updated_at == user.updated_at


@pytest.mark.parametrize(
    ("email", "password", "reason"),
    [
        pytest.param(EMAIL, "short", "too_short", id="too-short"),
        pytest.param(EMAIL, "x7" * 100, "too_long", id="too-long"),
        pytest.param(EMAIL, "Password1", "common", id="common"),
        pytest.param(EMAIL, "i am alice, trust me", "contains_email", id="contains-email"),
        pytest.param(EMAIL, "nul\x00inside it", "invalid_characters", id="control-char"),
    ],
)
async def test_policy_refusal_writes_nothing(
    accounts: AccountService, users: SqlUserStore, email: str, password: str, reason: str
) -> None:
    """A refused password raises PasswordRejected and leaves no account behind."""
    with pytest.raises(PasswordRejected) as info:
        await accounts.register(email=email, password=password)
    assert info.value.reason == reason
    assert await users.get_by_email(email) is None
    assert await users.count() == 0


async def test_get_active_user(
    accounts: AccountService, users: SqlUserStore, clock: FrozenClock
) -> None:
    """Active users are returned; disabled and missing ones are None."""
    user = await accounts.register(email=EMAIL, password=PASSWORD)
    assert (await accounts.get_active_user(user.id)) == user
    await users.set_active(user.id, False, now=clock.now())
    assert await accounts.get_active_user(user.id) is None
    assert await accounts.get_active_user(uuid.uuid4()) is None
