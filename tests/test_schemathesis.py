"""Schemathesis against the app's own OpenAPI document, in process over ASGI.

Every operation gets schema-driven valid and invalid requests, anonymous and
with an admin's bearer token; bounded (25 examples per operation and mode),
derandomized so a failure reproduces, and run against a real app over a
temporary SQLite database with rate limits off (they would turn the run into
429s).

What the run found, and how the checks are narrowed so it stays a tripwire
for anything new rather than a list of known gaps (each is an OpenAPI
documentation gap in the routes, not a behaviour bug):

- Every problem-details answer is sent as ``application/problem+json`` but
  documented as ``application/json`` (FastAPI's default for ``{"model": ...}``
  responses): ``content_type_conformance`` is left out until the routes
  document the media type.
- ``POST /oauth/revoke`` answers 200 with an empty body (RFC 7009 §2.2) but
  documents a JSON 200: no response-schema check there.
- The status codes in :data:`UNDOCUMENTED` are answered but not documented.
  A body FastAPI cannot decode (not UTF-8) is a 400 "error parsing the body",
  as is a JSON body nested too deeply, on every operation with a JSON body.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bastion.core import Bastion
from bastion.server.app import create_app
from bastion.settings import Settings
from bastion.stores.sql.migrate import upgrade
from tests.conftest import TEST_SECRET

ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "schemathesis admin passphrase 7f3a"

UNDOCUMENTED: dict[str, frozenset[int]] = {
    "GET /me": frozenset({401}),
    "POST /me/password": frozenset({401}),
    "GET /me/sessions": frozenset({401}),
    "DELETE /me/sessions/{session_id}": frozenset({401}),
    "POST /me/sessions/revoke-all": frozenset({401}),
}
"""Operation → status codes it answers without documenting them."""

EMPTY_BODY_OPERATIONS = frozenset({"POST /oauth/revoke"})


def _operation(case: Any) -> str:
    return f"{case.operation.method.upper()} {case.operation.path}"


def documented_status_code(ctx: Any, response: Any, case: Any) -> bool | None:
    """status_code_conformance, minus the known gaps listed above."""
    status = response.status_code
    if status in UNDOCUMENTED.get(_operation(case), ()):
        return None
    if status == 400 and case.media_type == "application/json":
        return None
    return status_code_conformance(ctx, response, case)


def documented_response_schema(ctx: Any, response: Any, case: Any) -> bool | None:
    """response_schema_conformance, except where the body is documented wrongly."""
    if _operation(case) in EMPTY_BODY_OPERATIONS:
        return None
    return response_schema_conformance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    documented_status_code,
    documented_response_schema,
    response_headers_conformance,
    negative_data_rejection,
]

BOUNDED = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


async def _prepare(settings: Settings) -> None:
    """Migrate the database and create the admin, with a throwaway instance."""
    await upgrade(settings.database_url)
    instance = Bastion(settings)
    async with instance.lifespan():
        await instance.accounts.register(
            email=ADMIN_EMAIL, password=ADMIN_PASSWORD, username=None, roles=frozenset({"admin"})
        )


# The schema must exist at collection time (schemathesis 4.32's lazy
# `from_fixture` loader writes `Function._nodeid`, which pytest 9 no longer
# has), so the app is built here, without I/O: the document comes from
# `app.openapi()`, and the database is prepared by the fixture below before
# the first request starts the app's lifespan.
_DIRECTORY = Path(tempfile.mkdtemp(prefix="bastion-schemathesis-"))
atexit.register(shutil.rmtree, _DIRECTORY, ignore_errors=True)  # also when only collected
SETTINGS = Settings(
    _env_file=None,  # type: ignore[call-arg]
    database_url=f"sqlite+aiosqlite:///{_DIRECTORY / 'bastion.db'}",
    secret_key=TEST_SECRET,
    issuer="http://testserver",
    argon2_memory_cost=8192,
    argon2_time_cost=1,
    rate_limits_enabled=False,
    lockout_enabled=False,
    purge_interval=0,
)
APP = create_app(SETTINGS)
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(APP.openapi())))
schema.app = APP
schema.location = "/openapi.json"


@pytest.fixture(scope="module", autouse=True)
def _database() -> Iterator[None]:
    anyio.run(_prepare, SETTINGS)
    try:
        yield
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan ran in schemathesis' event loop


@pytest.fixture
def admin_token() -> str:
    """A fresh admin token per operation: logout and revoke-all may spend it."""
    with asgi.get_client(APP) as client:
        response = client.post(
            "/oauth/token",
            data={"grant_type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@schema.parametrize()
@BOUNDED
def test_anonymous_requests_conform(case: Any) -> None:
    """No credentials: never a 500, and every answer is documented."""
    case.call_and_validate(checks=CHECKS)


@schema.parametrize()
@BOUNDED
def test_admin_requests_conform(case: Any, admin_token: str) -> None:
    """With an admin's token: never a 500, and every answer is documented."""
    case.call_and_validate(checks=CHECKS, headers={"Authorization": f"Bearer {admin_token}"})
