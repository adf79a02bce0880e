"""Failed-login lockout (bastion.lockout): one address guessing is throttled
without locking the owner out; many addresses guessing lock the account
softly, progressively and never past the cap; unknown accounts behave the
same; a success resets the address; administrators unlock; the refusal comes
before any Argon2 hash; counters are shared through Redis."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from uuid import uuid4

import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.settings import Settings
from tests.backends import delete_keys, redis_connection, redis_url
from tests.conftest import PASSWORD
from tests.http_checks import assert_oauth_error, assert_problem
from tests.limit_flows import (
    WallClock,
    client_from,
    install_wall_clock,
    rate_limit_fields,
    register_user,
    token_request,
)
from tests.token_flows import audit_events, bearer, running

pytestmark = pytest.mark.anyio

ALICE = "alice@example.com"
GHOST = "ghost@example.com"
WRONG = "not the password"
PAIR_LIMIT = 3
ACCOUNT_LIMIT = 6
Start = Callable[..., AbstractAsyncContextManager[Bastion]]


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    return install_wall_clock(monkeypatch)


@pytest.fixture
def start(make_settings: Callable[..., Settings], clock: FrozenClock) -> Start:
    """A started Bastion with the lockout on (3 per address, 6 per account,
    locks of 60 s doubling up to 120 s) and rate limits off."""

    @asynccontextmanager
    async def start(**overrides: object) -> AsyncIterator[Bastion]:
        settings = make_settings(
            **{
                "lockout_enabled": True,
                "lockout_ip_failures": PAIR_LIMIT,
                "lockout_account_failures": ACCOUNT_LIMIT,
                "lockout_duration": 60,
                "lockout_max_duration": 120,
                **overrides,
            }
        )
        async with running(settings, clock) as instance:
            yield instance

    return start


@pytest.fixture
def caplog_audit(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level("INFO", logger="bastion.audit")
    return caplog


async def statuses(instance: Bastion, ip: str, email: str, *passwords: str) -> list[int]:
    return [(await token_request(instance, ip, email, p)).status_code for p in passwords]


def count_hashes(instance: Bastion, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every Argon2 verification the hasher is asked for."""
    calls: list[str] = []
    for name in ("verify", "verify_and_update", "verify_dummy"):
        original: Callable[..., Awaitable[Any]] = getattr(instance.hasher, name)

        def counted(
            *args: Any, _name: str = name, _original: Callable[..., Awaitable[Any]] = original
        ) -> Awaitable[Any]:
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(instance.hasher, name, counted)
    return calls


async def test_one_address_guessing_does_not_lock_out_the_owner(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After 3 failures one address waits (even with the right password, and
    without a hash); the owner's own address still logs in."""
    async with start() as instance:
        await register_user(instance, ALICE)
        hashes = count_hashes(instance, monkeypatch)
        assert await statuses(instance, "6.6.6.6", ALICE, WRONG, WRONG, WRONG) == [400] * 3
        assert len(hashes) == 3
        refused = await token_request(instance, "6.6.6.6", ALICE, PASSWORD)
        assert_oauth_error(refused, 429, "invalid_request", PASSWORD)
        assert 1 <= rate_limit_fields(refused)["retry_after"] <= 900
        assert "ratelimit-policy" not in refused.headers
        assert len(hashes) == 3, "a throttled attempt must not cost a hash"
        owner = await token_request(instance, "198.51.100.1", ALICE, PASSWORD)
        assert owner.status_code == 200, owner.text
        elsewhere = await token_request(instance, "6.6.6.6", "bob@example.com", WRONG)
        assert_oauth_error(elsewhere, 400, "invalid_grant")


async def test_a_success_resets_the_address(start: Start) -> None:
    """Failures then a success from one address: its count starts again (the
    account's count does not, so the account limit is out of reach here)."""
    async with start(lockout_account_failures=100) as instance:
        await register_user(instance, ALICE)
        ip = "198.51.100.1"
        assert await statuses(instance, ip, ALICE, WRONG, WRONG, PASSWORD) == [400, 400, 200]
        assert await statuses(instance, ip, ALICE, WRONG, WRONG, PASSWORD) == [400, 400, 200]
        assert await statuses(instance, ip, ALICE, WRONG, WRONG, WRONG, PASSWORD) == [
            400,
            400,
            400,
            429,
        ]


async def test_many_addresses_lock_the_account_softly(
    start: Start, caplog_audit: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6 failures from 6 addresses lock the account for 60 s: addresses that
    failed are refused (no hash), a fresh one still gets its one attempt, and
    ``account.locked`` names the user."""
    async with start() as instance:
        user_id = await register_user(instance, ALICE)
        for n in range(ACCOUNT_LIMIT):
            assert await statuses(instance, f"192.0.2.{n}", ALICE, WRONG) == [400]
        [locked] = audit_events(caplog_audit, "account.locked")
        assert locked["target"] == user_id
        assert locked["duration"] == 60
        assert locked["failures"] == ACCOUNT_LIMIT
        assert locked["ip"] == f"192.0.2.{ACCOUNT_LIMIT - 1}"
        assert ALICE not in str(locked)

        hashes = count_hashes(instance, monkeypatch)
        refused = await token_request(instance, "192.0.2.0", ALICE, PASSWORD)
        assert_oauth_error(refused, 429, "invalid_request")
        assert 1 <= rate_limit_fields(refused)["retry_after"] <= 60
        assert hashes == []
        owner = await token_request(instance, "198.51.100.1", ALICE, PASSWORD)
        assert owner.status_code == 200, owner.text
        assert await statuses(instance, "198.51.100.2", ALICE, WRONG, PASSWORD) == [400, 429]


async def test_locks_grow_and_are_capped_and_end(start: Start, wall_clock: WallClock) -> None:
    """Each further lock within a day doubles (60, 120) up to the cap (120),
    and every lock ends by itself."""
    async with start() as instance:
        await register_user(instance, ALICE)
        durations = []
        for round_ in range(3):
            for n in range(ACCOUNT_LIMIT):
                ip = f"10.{round_}.0.{n}"
                assert await statuses(instance, ip, ALICE, WRONG) == [400]
            refused = await token_request(instance, f"10.{round_}.0.0", ALICE, PASSWORD)
            assert refused.status_code == 429
            durations.append(rate_limit_fields(refused)["retry_after"])
        assert durations == [60, 120, 120]
        wall_clock.advance(121)
        after = await token_request(instance, "10.2.0.0", ALICE, PASSWORD)
        assert after.status_code == 200, after.text


async def test_address_throttle_ends_with_its_window(start: Start, wall_clock: WallClock) -> None:
    """An address's throttle lasts at most the window from its first failure."""
    async with start(lockout_window=300) as instance:
        await register_user(instance, ALICE)
        assert await statuses(instance, "6.6.6.6", ALICE, WRONG, WRONG, WRONG) == [400] * 3
        wall_clock.advance(100)
        refused = await token_request(instance, "6.6.6.6", ALICE, PASSWORD)
        assert rate_limit_fields(refused)["retry_after"] == 200
        wall_clock.advance(200)
        assert await statuses(instance, "6.6.6.6", ALICE, PASSWORD) == [200]


async def test_unknown_accounts_are_counted_and_locked_identically(
    start: Start, caplog_audit: pytest.LogCaptureFixture, wall_clock: WallClock
) -> None:
    """The same attack on a real and an unknown account gets the same answers,
    status by status and body by body; the unknown one's lock names no user."""
    async with start() as instance:
        await register_user(instance, ALICE)

        async def attack(email: str) -> list[tuple[int, str, str | None]]:
            answers = []
            for ip in [*(f"192.0.2.{n}" for n in range(ACCOUNT_LIMIT)), "192.0.2.0"]:
                for _ in range(2):
                    response = await token_request(instance, ip, email, WRONG)
                    answers.append(
                        (response.status_code, response.text, response.headers.get("retry-after"))
                    )
            return answers

        assert await attack(ALICE) == await attack(GHOST)
        locks = audit_events(caplog_audit, "account.locked")
        assert [event["target"] is None for event in locks] == [False, True]


async def test_wrong_current_password_counts_towards_the_lockout(start: Start) -> None:
    """``POST /me/password`` with a wrong current password is a failed login
    of the account from the caller's address."""
    async with start() as instance:
        await register_user(instance, ALICE)
        token = (await token_request(instance, "6.6.6.6", ALICE)).json()["access_token"]
        attempt = {"current_password": WRONG, "new_password": "another long passphrase"}
        async with client_from(instance, "6.6.6.6") as http:
            codes = [
                (await http.post("/me/password", json=attempt, headers=bearer(token))).status_code
                for _ in range(PAIR_LIMIT + 1)
            ]
            assert codes == [403] * PAIR_LIMIT + [429]
            right = {**attempt, "current_password": PASSWORD}
            throttled = await http.post("/me/password", json=right, headers=bearer(token))
            assert_problem(throttled, 429, PASSWORD)
        assert await statuses(instance, "6.6.6.6", ALICE, PASSWORD) == [429]
        assert await statuses(instance, "198.51.100.1", ALICE, PASSWORD) == [200]


async def test_admin_unlock(start: Start, caplog_audit: pytest.LogCaptureFixture) -> None:
    """``POST /admin/users/{id}/unlock``: 401 without a token, 403 without
    ``users:admin``, 404 for an unknown user, 204 for an admin, after which the
    account and every address may try again; ``account.unlocked`` names both."""
    async with start() as instance:
        user_id = await register_user(instance, ALICE)
        admin_id = await register_user(instance, "root@example.com", "admin")
        admin = (await token_request(instance, "198.51.100.1", "root@example.com")).json()
        user = (await token_request(instance, "198.51.100.1", ALICE)).json()
        for n in range(ACCOUNT_LIMIT):
            await statuses(instance, "6.6.6.6" if n < PAIR_LIMIT else f"192.0.2.{n}", ALICE, WRONG)
        assert len(audit_events(caplog_audit, "account.locked")) == 1
        assert await statuses(instance, "6.6.6.6", ALICE, PASSWORD) == [429]
        assert await statuses(instance, f"192.0.2.{ACCOUNT_LIMIT - 1}", ALICE, PASSWORD) == [429]

        async with client_from(instance, "198.51.100.1") as http:
            path = f"/admin/users/{user_id}/unlock"
            assert (await http.post(path)).status_code == 401
            forbidden = await http.post(path, headers=bearer(user["access_token"]))
            assert_problem(forbidden, 403)
            unknown = await http.post(
                f"/admin/users/{uuid4()}/unlock", headers=bearer(admin["access_token"])
            )
            assert_problem(unknown, 404)
            assert audit_events(caplog_audit, "account.unlocked") == []
            done = await http.post(path, headers=bearer(admin["access_token"]))
            assert done.status_code == 204, done.text

        [unlocked] = audit_events(caplog_audit, "account.unlocked")
        assert unlocked["actor"] == admin_id
        assert unlocked["target"] == user_id
        assert unlocked["account"] == audit_events(caplog_audit, "account.locked")[0]["account"]
        assert await statuses(instance, "6.6.6.6", ALICE, PASSWORD) == [200]
        assert await statuses(instance, f"192.0.2.{ACCOUNT_LIMIT - 1}", ALICE, PASSWORD) == [200]
        # counting starts again from zero for the address that had failed
        assert await statuses(instance, "6.6.6.6", ALICE, WRONG, WRONG, WRONG, PASSWORD) == [
            400,
            400,
            400,
            429,
        ]


async def test_disabled_lockout_counts_nothing(start: Start) -> None:
    """BASTION_LOCKOUT_ENABLED=false: failures are not counted."""
    async with start(lockout_enabled=False) as instance:
        await register_user(instance, ALICE)
        passwords = [WRONG] * (ACCOUNT_LIMIT + 1) + [PASSWORD]
        assert await statuses(instance, "6.6.6.6", ALICE, *passwords) == [400] * (
            ACCOUNT_LIMIT + 1
        ) + [200]


@pytest.mark.redis
async def test_lockout_is_shared_by_instances_over_redis(start: Start) -> None:
    """Failures counted by one instance throttle the address on another; a
    success on the second resets it for both."""
    prefix = f"bastion:test:{secrets.token_hex(6)}"
    settings = {"redis_url": redis_url(), "rate_limit_key_prefix": prefix}
    async with redis_connection() as client:
        try:
            async with start(**settings) as first, start(**settings) as second:
                await register_user(first, ALICE)
                assert await statuses(first, "6.6.6.6", ALICE, WRONG, WRONG) == [400, 400]
                assert await statuses(second, "6.6.6.6", ALICE, PASSWORD) == [200]
                assert await statuses(first, "6.6.6.6", ALICE, WRONG, WRONG) == [400, 400]
                assert await statuses(second, "6.6.6.6", ALICE, WRONG) == [400]
                refused = await token_request(first, "6.6.6.6", ALICE, PASSWORD)
                assert refused.status_code == 429
                assert 1 <= rate_limit_fields(refused)["retry_after"] <= 900
                assert [key async for key in client.scan_iter(match=f"{prefix}*")]
                assert not [k async for k in client.scan_iter(match=f"{prefix}*alice*")]
        finally:
            await delete_keys(client, f"{prefix}*")


def test_settings_defaults_are_documented_values() -> None:
    """The defaults the README states: 5 per address, 20 per account, a 15
    minute window, locks from 60 s capped at 15 minutes."""
    fields = Settings.model_fields
    assert fields["lockout_ip_failures"].default == 5
    assert fields["lockout_account_failures"].default == 20
    assert fields["lockout_window"].default == 900
    assert fields["lockout_duration"].default == 60
    assert fields["lockout_max_duration"].default == 900
