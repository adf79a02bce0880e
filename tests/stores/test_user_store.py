"""The UserStore contract, on every SQL backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import anyio
import pytest

from bastion.errors import (
    Conflict,
    EmailAlreadyRegistered,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)
from bastion.stores.protocols import NewUser, User, UserStore
from bastion.stores.sql import SqlUserStore, create_engine, create_sessionmaker

pytestmark = pytest.mark.anyio

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def new_user(email: str = "alice@example.com", username: str | None = None) -> NewUser:
    return NewUser(email=email, username=username, password_hash=HASH)


async def test_sql_user_store_satisfies_the_protocol(user_store: SqlUserStore) -> None:
    """SqlUserStore is usable wherever a UserStore is expected."""
    store: UserStore = user_store
    assert store is user_store


async def test_add_returns_the_stored_user(user_store: SqlUserStore) -> None:
    """add fills id and timestamps and keeps every field as given."""
    user = await user_store.add(
        NewUser(
            email="Alice@Example.com",
            username="Alice",
            password_hash=HASH,
            is_active=False,
            email_verified=True,
        ),
        now=NOW,
    )
    assert isinstance(user.id, uuid.UUID)
    assert user == User(
        id=user.id,
        email="Alice@Example.com",
        username="Alice",
        password_hash=HASH,
        is_active=False,
        email_verified=True,
        created_at=NOW,
        updated_at=NOW,
    )
    assert await user_store.get(user.id) == user


async def test_get_unknown_id_is_none(user_store: SqlUserStore) -> None:
    """An id nobody has gives None, not an error."""
    assert await user_store.get(uuid.uuid4()) is None


@pytest.mark.parametrize(
    ("stored", "looked_up"),
    [
        ("alice@example.com", "alice@example.com"),
        ("Alice@Example.COM", "alice@example.com"),
        ("alice@example.com", "ALICE@EXAMPLE.COM"),
        ("alice@example.com", "  alice@example.com "),
        ("jürgen@example.de", "JÜRGEN@EXAMPLE.DE"),
        ("j\u00fcrgen@example.de", "ju\u0308rgen@example.de"),  # composed vs combining
        ("straße@example.de", "STRASSE@example.de"),  # casefold, not lower
        ("σοφία@example.gr", "ΣΟΦΊΑ@example.gr"),  # final sigma
    ],
)
async def test_get_by_email_is_case_insensitive(
    user_store: SqlUserStore, stored: str, looked_up: str
) -> None:
    """Lookup folds case (Unicode caseless matching) and surrounding space."""
    user = await user_store.add(new_user(stored), now=NOW)
    found = await user_store.get_by_email(looked_up)
    assert found == user
    assert found is not None
    assert found.email == stored


async def test_get_by_email_unknown_is_none(user_store: SqlUserStore) -> None:
    """An unregistered address gives None."""
    await user_store.add(new_user("alice@example.com"), now=NOW)
    assert await user_store.get_by_email("bob@example.com") is None


@pytest.mark.parametrize(
    "second", ["alice@example.com", "ALICE@example.com", " Alice@Example.Com", "alice@EXAMPLE.com"]
)
async def test_duplicate_email_in_any_case_is_rejected_and_nothing_written(
    user_store: SqlUserStore, second: str
) -> None:
    """The same address in another case raises EmailAlreadyRegistered; no row is added."""
    first = await user_store.add(new_user("alice@example.com", "alice"), now=NOW)
    with pytest.raises(EmailAlreadyRegistered):
        await user_store.add(new_user(second, "someone-else"), now=NOW)
    assert await user_store.count() == 1
    assert await user_store.get_by_email(second) == first


@pytest.mark.parametrize("second", ["alice", "ALICE", "Alice"])
async def test_duplicate_username_in_any_case_is_a_conflict(
    user_store: SqlUserStore, second: str
) -> None:
    """A taken username (case-insensitively) raises Conflict, not the email error."""
    await user_store.add(new_user("alice@example.com", "alice"), now=NOW)
    with pytest.raises(Conflict, match="username") as excinfo:
        await user_store.add(new_user("bob@example.com", second), now=NOW)
    assert not isinstance(excinfo.value, EmailAlreadyRegistered)
    assert await user_store.count() == 1
    assert await user_store.get_by_email("bob@example.com") is None


async def test_many_users_without_username(user_store: SqlUserStore) -> None:
    """A missing username is not a value: any number of users may lack one."""
    for i in range(3):
        await user_store.add(new_user(f"user{i}@example.com"), now=NOW)
    assert await user_store.count() == 3


async def test_concurrent_registrations_of_one_email_let_exactly_one_win(
    user_store: SqlUserStore,
) -> None:
    """20 racing adds of one address in different cases: one succeeds, 19 conflict."""
    local = "racer"
    emails = [
        "".join(c.upper() if (i >> k) & 1 else c for k, c in enumerate(local)) + "@Example.com"
        for i in range(20)
    ]
    assert len(set(emails)) == 20
    won: list[User] = []
    lost: list[BaseException] = []

    async def register(email: str) -> None:
        try:
            won.append(await user_store.add(new_user(email), now=NOW))
        except EmailAlreadyRegistered as e:
            lost.append(e)

    async with anyio.create_task_group() as tg:
        for email in emails:
            tg.start_soon(register, email)

    assert len(won) == 1
    assert len(lost) == 19
    assert await user_store.count() == 1
    assert await user_store.get_by_email("RACER@example.com") == won[0]


async def test_set_password_hash_updates_hash_and_updated_at(user_store: SqlUserStore) -> None:
    """The new hash is stored and updated_at moves; created_at does not."""
    user = await user_store.add(new_user(), now=NOW)
    later = NOW + timedelta(hours=1)
    await user_store.set_password_hash(user.id, "$argon2id$new", now=later)
    stored = await user_store.get(user.id)
    assert stored is not None
    assert stored.password_hash == "$argon2id$new"
    assert stored.created_at == NOW
    assert stored.updated_at == later


@pytest.mark.parametrize("active", [False, True])
async def test_set_active_updates_flag_and_updated_at(
    user_store: SqlUserStore, active: bool
) -> None:
    """set_active stores the flag and moves updated_at."""
    user = await user_store.add(NewUser("a@example.com", None, HASH, is_active=not active), now=NOW)
    later = NOW + timedelta(minutes=5)
    await user_store.set_active(user.id, active, now=later)
    stored = await user_store.get(user.id)
    assert stored is not None
    assert stored.is_active is active
    assert stored.updated_at == later


async def test_updates_on_unknown_id_raise_not_found(user_store: SqlUserStore) -> None:
    """Changing a user who does not exist is NotFound, not a silent no-op."""
    with pytest.raises(NotFound):
        await user_store.set_password_hash(uuid.uuid4(), HASH, now=NOW)
    with pytest.raises(NotFound):
        await user_store.set_active(uuid.uuid4(), False, now=NOW)


async def test_timestamps_come_back_aware_utc(user_store: SqlUserStore) -> None:
    """A time given in another zone is stored as the same instant and read back in UTC."""
    paris = timezone(timedelta(hours=1))
    given = datetime(2030, 6, 1, 13, 30, 15, 123456, tzinfo=paris)
    user = await user_store.add(new_user(), now=given)
    stored = await user_store.get(user.id)
    assert stored is not None
    for moment in (user.created_at, stored.created_at, stored.updated_at):
        assert moment.tzinfo is UTC
        assert moment == given
        assert moment.hour == 12


async def test_naive_datetime_is_refused(user_store: SqlUserStore) -> None:
    """A naive `now` is a programming error, caught before anything is written."""
    with pytest.raises(ValueError, match="naive"):
        await user_store.add(new_user(), now=datetime(2030, 1, 1))
    assert await user_store.count() == 0


@pytest.mark.parametrize(
    "user",
    [
        NewUser("a" * 310 + "@example.com", None, HASH),
        NewUser("ß" * 200 + "@example.com", None, HASH),  # fits, but its folded key does not
        NewUser("a@example.com", "u" * 65, HASH),
        NewUser("a@example.com", None, "h" * 513),
    ],
    ids=["email", "folded-email", "username", "hash"],
)
async def test_values_longer_than_the_columns_are_invalid_input(
    user_store: SqlUserStore, user: NewUser
) -> None:
    """Both backends reject overlong values the same way (SQLite would store them)."""
    with pytest.raises(InvalidInput):
        await user_store.add(user, now=NOW)
    assert await user_store.count() == 0


async def test_database_outage_raises_instead_of_answering_no_user(
    broken_database_url: str,
) -> None:
    """An unreachable database is ServiceUnavailable, never 'no such user'."""
    engine = create_engine(broken_database_url)
    store = SqlUserStore(create_sessionmaker(engine))
    try:
        with pytest.raises(ServiceUnavailable):
            await store.get_by_email("alice@example.com")
        with pytest.raises(ServiceUnavailable):
            await store.get(uuid.uuid4())
        with pytest.raises(ServiceUnavailable):
            await store.add(new_user(), now=NOW)
    finally:
        await engine.dispose()
