"""The AuditStore contract, on every SQL backend."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bastion.errors import InvalidInput, ServiceUnavailable
from bastion.stores.protocols import AuditEvent, AuditStore
from bastion.stores.sql import SqlAuditStore, create_engine, create_sessionmaker
from bastion.stores.sql.audit import decode_cursor, encode_cursor

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def event(
    at: datetime = T0,
    *,
    action: str = "user.updated",
    actor: str | None = "admin-1",
    target: str | None = "user-1",
    **fields: Any,
) -> AuditEvent:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "at": at,
        "action": action,
        "actor": actor,
        "target": target,
        "request_id": "req-1",
        "before": None,
        "after": None,
        "details": {},
    }
    values.update(fields)
    return AuditEvent(**values)


def newest_first(events: list[AuditEvent]) -> list[AuditEvent]:
    return sorted(events, key=lambda e: (e.at, e.id), reverse=True)


async def walk(store: SqlAuditStore, limit: int, **filters: Any) -> list[list[AuditEvent]]:
    """Every page, following next_cursor until it is None."""
    pages: list[list[AuditEvent]] = []
    cursor: str | None = None
    while True:
        page = await store.page(limit=limit, cursor=cursor, **filters)
        pages.append(page.events)
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 100, "cursor does not advance"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_sql_audit_store_satisfies_the_protocol(audit_store: SqlAuditStore) -> None:
    """SqlAuditStore is usable wherever an AuditStore is expected."""
    store: AuditStore = audit_store
    assert store is audit_store


async def test_empty_log_is_one_empty_page(audit_store: SqlAuditStore) -> None:
    """No events: no events and no cursor."""
    page = await audit_store.page(limit=10)
    assert (page.events, page.next_cursor) == ([], None)


async def test_events_come_back_newest_first(audit_store: SqlAuditStore) -> None:
    """page() orders by `at` descending whatever the insertion order."""
    events = [event(T0 + timedelta(minutes=m)) for m in (3, 1, 4, 2, 0)]
    for e in events:
        await audit_store.add(e)
    page = await audit_store.page(limit=10)
    assert page.events == newest_first(events)
    assert page.next_cursor is None


async def test_exactly_a_full_page_has_no_next_cursor(audit_store: SqlAuditStore) -> None:
    """When the events fit the page exactly, there is no next page to ask for."""
    for m in range(3):
        await audit_store.add(event(T0 + timedelta(minutes=m)))
    page = await audit_store.page(limit=3)
    assert len(page.events) == 3
    assert page.next_cursor is None


@pytest.mark.parametrize("limit", [1, 3, 25])
async def test_cursor_walks_every_event_exactly_once(
    audit_store: SqlAuditStore, limit: int
) -> None:
    """Pages of any size cover the log once, ties on `at` included."""
    events = [event(T0 + timedelta(seconds=i // 4)) for i in range(22)]  # groups of 4 share `at`
    for e in events:
        await audit_store.add(e)

    pages = await walk(audit_store, limit)

    assert [e for page in pages for e in page] == newest_first(events)
    assert all(len(page) == limit for page in pages[:-1])
    assert 0 < len(pages[-1]) <= limit


async def test_events_added_while_paging_do_not_shift_the_walk(
    audit_store: SqlAuditStore,
) -> None:
    """Keyset paging: newer events arriving between pages are neither shown
    nor make older ones repeat."""
    old = [event(T0 + timedelta(seconds=i)) for i in range(6)]
    for e in old:
        await audit_store.add(e)
    first = await audit_store.page(limit=3)
    for i in range(5):
        await audit_store.add(event(T0 + timedelta(hours=1, seconds=i)))
    second = await audit_store.page(limit=3, cursor=first.next_cursor)
    assert first.events + second.events == newest_first(old)
    assert second.next_cursor is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"action": "role.deleted"}, [2]),
        ({"actor": "admin-2"}, [1, 2]),
        ({"target": "user-1"}, [0, 3]),
        ({"actor": "admin-1", "target": "user-1"}, [0]),
        ({"action": "user.updated", "actor": "nobody"}, []),
    ],
)
async def test_filters_select_matching_events_across_pages(
    audit_store: SqlAuditStore, filters: dict[str, str], expected: list[int]
) -> None:
    """action, actor and target filters combine, and cursors respect them."""
    events = [
        event(T0, actor="admin-1", target="user-1"),
        event(T0 + timedelta(seconds=1), actor="admin-2", target="user-2"),
        event(T0 + timedelta(seconds=2), action="role.deleted", actor="admin-2", target="editor"),
        event(T0 + timedelta(seconds=3), actor=None, target="user-1"),
    ]
    for e in events:
        await audit_store.add(e)
    pages = await walk(audit_store, 1, **filters)
    assert [e for page in pages for e in page] == newest_first([events[i] for i in expected])


async def test_limit_is_clamped(audit_store: SqlAuditStore) -> None:
    """A limit below 1 gives pages of one; above 500, pages of 500."""
    for m in range(3):
        await audit_store.add(event(T0 + timedelta(minutes=m)))
    for limit in (0, -5):
        page = await audit_store.page(limit=limit)
        assert len(page.events) == 1
        assert page.next_cursor is not None
    assert len((await audit_store.page(limit=10_000)).events) == 3


async def test_event_round_trips_with_json_fields(audit_store: SqlAuditStore) -> None:
    """before, after and details come back as the same JSON values; times in UTC."""
    at = datetime(2030, 6, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    stored = event(
        at,
        action="role.replaced",
        request_id="0f1e2d3c",
        before={"permissions": ["a:read"], "parents": [], "nested": {"n": 1, "x": None}},
        after={"permissions": ["a:*", "b"], "unicode": "caf\u00e9 \u2603", "ok": True, "f": 1.5},
        details={"reason": "cleanup", "count": 3},
    )
    await audit_store.add(stored)
    [back] = (await audit_store.page(limit=1)).events
    assert back == stored
    assert back.at.tzinfo is UTC
    assert back.at.hour == 12


async def test_missing_before_and_after_stay_none(audit_store: SqlAuditStore) -> None:
    """None for before/after/actor/target/request_id comes back as None."""
    stored = event(actor=None, target=None, request_id=None, before=None, after=None)
    await audit_store.add(stored)
    assert (await audit_store.page(limit=1)).events == [stored]


async def test_overlong_parties_are_cut_to_fit(audit_store: SqlAuditStore) -> None:
    """A long actor, target or request id is shortened, not refused."""
    await audit_store.add(event(actor="a" * 300, target="t" * 300, request_id="r" * 100))
    [back] = (await audit_store.page(limit=1)).events
    assert (back.actor, back.target, back.request_id) == ("a" * 255, "t" * 255, "r" * 64)


@pytest.mark.parametrize("action", ["", "x" * 65])
async def test_bad_action_is_invalid(audit_store: SqlAuditStore, action: str) -> None:
    """An empty or overlong action is a programming error; nothing is stored."""
    with pytest.raises(InvalidInput):
        await audit_store.add(event(action=action))
    assert (await audit_store.page(limit=1)).events == []


def test_cursor_round_trips() -> None:
    """decode_cursor inverts encode_cursor, and the cursor is URL-safe."""
    at, event_id = datetime(2030, 1, 1, 0, 0, 0, 1, tzinfo=UTC), uuid.uuid4()
    cursor = encode_cursor(at, event_id)
    assert decode_cursor(cursor) == (at, event_id)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


GOOD_ID = "0b0e9d5e-8b5e-4f7e-9a55-2a0c2d7b1f00"

MALFORMED_CURSORS = {
    "empty": "",
    "garbage": "not a cursor!",
    "bad padding": "abc",
    "standard alphabet": base64.b64encode(
        json.dumps(["2030-01-01T00:00:00+00:00", GOOD_ID]).encode() + b"\xfb\xff"
    ).decode(),
    "non-ascii": "\u00e9\u00e9\u00e9\u00e9",
    "not json": b64(b"\x00\xff\x10binary"),
    "not utf-8": b64(b'["\xff"]'),
    "json object": b64(b'{"at": "2030-01-01T00:00:00+00:00"}'),
    "json string": b64(b'"2030-01-01T00:00:00+00:00"'),
    "json null": b64(b"null"),
    "one element": b64(b'["2030-01-01T00:00:00+00:00"]'),
    "three elements": b64(json.dumps(["2030-01-01T00:00:00+00:00", GOOD_ID, 1]).encode()),
    "numbers": b64(b"[1, 2]"),
    "nulls": b64(b"[null, null]"),
    "bool id": b64(b'["2030-01-01T00:00:00+00:00", true]'),
    "nested": b64(json.dumps([["2030-01-01T00:00:00+00:00"], GOOD_ID]).encode()),
    "bad date": b64(json.dumps(["yesterday", GOOD_ID]).encode()),
    "naive date": b64(json.dumps(["2030-01-01T00:00:00", GOOD_ID]).encode()),
    "date overflows in UTC": b64(json.dumps(["0001-01-01T00:00:00+05:00", GOOD_ID]).encode()),
    "bad uuid": b64(json.dumps(["2030-01-01T00:00:00+00:00", "not-a-uuid"]).encode()),
    "deep nesting": b64(b"[" * 5000),
    "huge": b64(json.dumps(["2030-01-01T00:00:00+00:00", GOOD_ID, "x" * 10_000]).encode()),
    "huge garbage": "A" * 1_000_000,
}


@pytest.mark.parametrize("cursor", MALFORMED_CURSORS.values(), ids=MALFORMED_CURSORS.keys())
def test_malformed_cursors_are_invalid_input(cursor: str) -> None:
    """Anything encode_cursor would not produce is InvalidInput, never a server error."""
    with pytest.raises(InvalidInput):
        decode_cursor(cursor)


async def test_page_refuses_malformed_cursors(audit_store: SqlAuditStore) -> None:
    """page() answers every cursor of the table above with InvalidInput."""
    await audit_store.add(event())
    for cursor in MALFORMED_CURSORS.values():
        with pytest.raises(InvalidInput):
            await audit_store.page(limit=10, cursor=cursor)


async def test_database_outage_raises(broken_database_url: str) -> None:
    """An unreachable database is ServiceUnavailable, never an empty log."""
    engine = create_engine(broken_database_url)
    store = SqlAuditStore(create_sessionmaker(engine))
    try:
        with pytest.raises(ServiceUnavailable):
            await store.page(limit=10)
        with pytest.raises(ServiceUnavailable):
            await store.add(event())
    finally:
        await engine.dispose()
