"""Signing keys: encryption at rest (AES-256-GCM, kid as AAD), the public JWK
(RFC 7517), rotation and publication windows, and the key manager's cache.

The store is the real :class:`SqlKeyStore` over a temporary SQLite file,
wrapped to count how often the manager reads it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from pydantic import SecretStr

import bastion.keys
from bastion.clock import FrozenClock
from bastion.errors import ConfigurationError, InvalidToken, ServiceUnavailable
from bastion.guard import TokenVerifier
from bastion.jwt import encode_access_token, verify_access_token
from bastion.keys import (
    Algorithm,
    KeyDecryptionError,
    LocalKeyManager,
    UnusableJWK,
    VerificationKey,
    decrypt_signing_key,
    generate_signing_key,
)
from bastion.stores.protocols import SigningKeyRecord
from bastion.stores.sql import SqlKeyStore, create_engine, create_sessionmaker, upgrade
from bastion.tokens import AccessTokenIssuer

pytestmark = pytest.mark.anyio

SECRET = SecretStr("a-test-secret-key-that-is-long-enough-0123")
OTHER_SECRET = SecretStr("another-secret-key-that-is-long-enough-456")
ALGORITHMS: list[Algorithm] = ["EdDSA", "ES256", "RS256"]
PUBLIC_MEMBERS = {"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"}
TTL, LEEWAY = 900, 30
ISS = AUD = "https://auth.example"


class CountingStore:
    """Delegates to a real store and counts reads; can be told to fail."""

    def __init__(self, inner: SqlKeyStore) -> None:
        self.inner = inner
        self.reads = 0
        self.failing = False

    async def list_keys(self) -> list[SigningKeyRecord]:
        self.reads += 1
        if self.failing:
            raise ServiceUnavailable("The database is unavailable.")
        return await self.inner.list_keys()

    async def activate(self, key: SigningKeyRecord, *, now: datetime) -> None:
        await self.inner.activate(key, now=now)

    async def delete_retired_before(self, moment: datetime) -> int:
        return await self.inner.delete_retired_before(moment)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    await upgrade(url)
    engine = create_engine(url)
    try:
        yield CountingStore(SqlKeyStore(create_sessionmaker(engine)))
    finally:
        await engine.dispose()


def manager(
    store: CountingStore,
    clock: FrozenClock,
    *,
    secret: SecretStr = SECRET,
    algorithm: Algorithm = "EdDSA",
) -> LocalKeyManager:
    return LocalKeyManager(
        store,
        secret,
        algorithm,
        clock,
        access_token_ttl=TTL,
        leeway=LEEWAY,
        cache_ttl=60,
    )


def kids(jwks: dict[str, Any]) -> list[str]:
    return [k["kid"] for k in jwks["keys"]]


# ------------------------------------------------------------------ at rest

RECORDS = {alg: generate_signing_key(alg, SECRET, FrozenClock().now()) for alg in ALGORITHMS}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_encryption_round_trip_signs_for_the_published_key(algorithm: Algorithm) -> None:
    """A decrypted key signs tokens that its own public JWK verifies."""
    record = RECORDS[algorithm]
    signing = decrypt_signing_key(record, SECRET)
    assert (signing.kid, signing.algorithm) == (record.kid, algorithm)
    public = VerificationKey.from_jwk(record.public_jwk)
    assert public.to_jwk() == record.public_jwk
    assert signing.verification_key().to_jwk() == record.public_jwk


@pytest.mark.parametrize(
    ("algorithm", "kty", "crv"),
    [("EdDSA", "OKP", "Ed25519"), ("ES256", "EC", "P-256"), ("RS256", "RSA", None)],
)
def test_key_types_follow_the_algorithm(algorithm: Algorithm, kty: str, crv: str | None) -> None:
    """EdDSA is Ed25519, ES256 is P-256, RS256 is RSA of at least 2048 bits."""
    jwk = RECORDS[algorithm].public_jwk
    assert (jwk["kty"], jwk.get("crv"), jwk["alg"], jwk["use"]) == (kty, crv, algorithm, "sig")
    if algorithm == "RS256":
        key = decrypt_signing_key(RECORDS[algorithm], SECRET).private_key
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size >= 2048


def test_private_key_is_not_stored_in_the_clear() -> None:
    """The sealed blob is version || 96-bit nonce || ciphertext, not PKCS #8."""
    record = RECORDS["EdDSA"]
    blob = record.encrypted_private_key
    assert blob[:1] == b"\x01"
    assert len(blob) == 1 + 12 + 48 + 16  # Ed25519 PKCS#8 DER is 48 bytes, GCM tag 16
    assert b"\x30\x2e\x02\x01\x00\x30\x05" not in blob  # the PKCS#8 Ed25519 prefix
    again = generate_signing_key("EdDSA", SECRET, FrozenClock().now())
    assert again.kid != record.kid
    assert again.encrypted_private_key[1:13] != blob[1:13]  # fresh nonce


def test_wrong_secret_fails_cleanly() -> None:
    """A changed BASTION_SECRET_KEY gives one clear ConfigurationError naming the kid."""
    record = RECORDS["ES256"]
    with pytest.raises(KeyDecryptionError) as caught:
        decrypt_signing_key(record, OTHER_SECRET)
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert error.problems == [
        f"cannot decrypt signing key {record.kid}: BASTION_SECRET_KEY changed?"
    ]
    assert error.__cause__ is None
    assert error.__suppress_context__


def _tampered(record: SigningKeyRecord, index: int) -> SigningKeyRecord:
    blob = bytearray(record.encrypted_private_key)
    blob[index] ^= 1
    return replace(record, encrypted_private_key=bytes(blob))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: replace(
                RECORDS["EdDSA"], encrypted_private_key=RECORDS["ES256"].encrypted_private_key
            ),
            id="ciphertext-of-another-kid",
        ),
        pytest.param(lambda: replace(RECORDS["ES256"], kid=RECORDS["EdDSA"].kid), id="renamed-kid"),
        pytest.param(lambda: _tampered(RECORDS["EdDSA"], 0), id="version-byte"),
        pytest.param(lambda: _tampered(RECORDS["EdDSA"], 5), id="nonce"),
        pytest.param(lambda: _tampered(RECORDS["EdDSA"], 30), id="ciphertext"),
        pytest.param(lambda: _tampered(RECORDS["EdDSA"], -1), id="tag"),
        pytest.param(
            lambda: replace(RECORDS["EdDSA"], encrypted_private_key=b"\x01"), id="truncated"
        ),
        pytest.param(
            lambda: replace(RECORDS["EdDSA"], public_jwk=dict(RECORDS["ES256"].public_jwk)),
            id="public-jwk-of-another-key",
        ),
    ],
)
def test_sealed_key_is_bound_to_its_row(make: Any) -> None:
    """Moving, renaming or altering a sealed key makes it undecryptable (AAD = kid)."""
    with pytest.raises(KeyDecryptionError):
        decrypt_signing_key(make(), SECRET)


def test_same_key_with_two_kids_cannot_swap_ciphertexts() -> None:
    """Two rows of the same algorithm cannot exchange their ciphertexts."""
    a = generate_signing_key("EdDSA", SECRET, FrozenClock().now())
    b = generate_signing_key("EdDSA", SECRET, FrozenClock().now())
    for row, other in ((a, b), (b, a)):
        swapped = replace(row, encrypted_private_key=other.encrypted_private_key)
        with pytest.raises(KeyDecryptionError):
            decrypt_signing_key(swapped, SECRET)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signing_key_repr_shows_no_material(algorithm: Algorithm) -> None:
    """repr() of a decrypted key names kid and algorithm only."""
    signing = decrypt_signing_key(RECORDS[algorithm], SECRET)
    assert repr(signing) == f"SigningKey(kid={signing.kid!r}, algorithm={algorithm!r})"


# ------------------------------------------------------------------ JWK checks


def _jwk(algorithm: Algorithm = "ES256", **changes: Any) -> dict[str, Any]:
    jwk = dict(RECORDS[algorithm].public_jwk)
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not None}


def _foreign_jwk(key: Any, alg: str, kid: str = "foreign") -> dict[str, Any]:
    import jwt as pyjwt

    algorithm = pyjwt.get_algorithm_by_name(
        "EdDSA" if isinstance(key, ed448.Ed448PublicKey) else "ES256" if alg != "RS256" else alg
    )
    return {**algorithm.to_jwk(key, as_dict=True), "kid": kid, "alg": alg}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda: _jwk(d="AAAA"), "private", id="private-d"),
        pytest.param(lambda: _jwk("RS256", p="AAAA"), "private", id="private-p"),
        pytest.param(lambda: _jwk(k="AAAA"), "symmetric", id="symmetric-k"),
        pytest.param(lambda: _jwk(alg=None), "alg", id="alg-missing"),
        pytest.param(lambda: _jwk(alg="HS256"), "alg", id="alg-hs256"),
        pytest.param(lambda: _jwk(alg="none"), "alg", id="alg-none"),
        pytest.param(lambda: _jwk(alg="ES384"), "alg", id="alg-not-allowed"),
        pytest.param(lambda: _jwk(alg="EdDSA"), "kty", id="kty-does-not-fit-alg"),
        pytest.param(lambda: _jwk("EdDSA", alg="RS256"), "kty", id="okp-as-rs256"),
        pytest.param(lambda: _jwk(crv="P-384"), "crv", id="crv-mismatch"),
        pytest.param(lambda: _jwk(use="enc"), "use", id="use-enc"),
        pytest.param(lambda: _jwk(key_ops=["sign"]), "key_ops", id="key-ops-sign"),
        pytest.param(lambda: _jwk(kid=None), "kid", id="kid-missing"),
        pytest.param(lambda: _jwk(kid=""), "kid", id="kid-empty"),
        pytest.param(lambda: _jwk(x=None), "'x'", id="x-missing"),
        pytest.param(lambda: _jwk(x="!!!"), "does not load", id="x-garbage"),
        pytest.param(
            lambda: _foreign_jwk(
                # Deliberately weak, to prove it is refused.
                rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),  # noqa: S505
                "RS256",
            ),
            "out of range",
            id="rsa-1024",
        ),
        pytest.param(
            lambda: _foreign_jwk(ed448.Ed448PrivateKey.generate().public_key(), "EdDSA"),
            "crv",
            id="ed448",
        ),
        pytest.param(lambda: ["not", "an", "object"], "object", id="not-an-object"),
    ],
)
def test_unusable_jwks_are_refused(make: Any, reason: str) -> None:
    """A JWK must be a public key of an allowed alg with matching kty/crv/use."""
    with pytest.raises(UnusableJWK) as caught:
        VerificationKey.from_jwk(make())
    assert reason in str(caught.value)


def test_es256_jwk_on_another_curve_is_refused() -> None:
    """An EC key on P-384 labelled crv P-256 does not load as ES256."""
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    jwk = _foreign_jwk(key, "ES256")
    jwk["crv"] = "P-256"
    with pytest.raises(UnusableJWK):
        VerificationKey.from_jwk(jwk)


# ------------------------------------------------------------------ the manager


async def test_ensure_active_key_creates_one_key_once(
    store: CountingStore, clock: FrozenClock
) -> None:
    """The first start creates a key; later starts keep it."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    await keys.ensure_active_key()
    records = await keys.list_keys()
    assert len(records) == 1
    assert records[0].is_active
    assert kids(await keys.jwks()) == [records[0].kid]


async def test_changing_the_algorithm_rotates(store: CountingStore, clock: FrozenClock) -> None:
    """A start with another BASTION_KEY_ALGORITHM makes a new active key of it."""
    await manager(store, clock).ensure_active_key()
    clock.advance(1)
    es = manager(store, clock, algorithm="ES256")
    await es.ensure_active_key()
    assert (await es.signing_key()).algorithm == "ES256"
    assert [r.algorithm for r in await es.list_keys()] == ["ES256", "EdDSA"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_jwks_has_no_private_members(
    store: CountingStore, clock: FrozenClock, algorithm: Algorithm
) -> None:
    """Every JWK in the JWKS has only public members, and the document is JSON."""
    keys = manager(store, clock, algorithm=algorithm)
    await keys.ensure_active_key()
    await keys.rotate()
    document = json.loads(json.dumps(await keys.jwks()))
    assert len(document["keys"]) == 2
    for jwk in document["keys"]:
        assert set(jwk) <= PUBLIC_MEMBERS
        assert jwk["use"] == "sig"
        assert jwk["alg"] == algorithm


async def test_rotation_keeps_old_key_published_for_ttl_plus_leeway(
    store: CountingStore, clock: FrozenClock
) -> None:
    """A retired key stays in the JWKS for exactly access_token_ttl + leeway."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    old = (await keys.signing_key()).kid
    new = (await keys.rotate()).kid
    assert kids(await keys.jwks()) == [new, old]
    clock.advance(TTL + LEEWAY - 1)
    assert kids(await keys.jwks()) == [new, old]
    assert await keys.get(old) is not None
    clock.advance(1)
    assert kids(await keys.jwks()) == [new]
    assert await keys.get(old) is None
    assert await keys.get(new) is not None


async def test_tokens_of_the_old_key_verify_during_the_window(
    store: CountingStore, clock: FrozenClock
) -> None:
    """A token signed just before rotation verifies until it expires."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    issuer = AccessTokenIssuer(keys, ISS, AUD, TTL, clock)
    token = (await issuer.issue(subject="u1", scopes=["read"], client_id="bastion")).access_token
    await keys.rotate()
    fresh = (await issuer.issue(subject="u2", scopes=[], client_id="bastion")).access_token
    verifier = TokenVerifier(keys, issuer=ISS, audience=AUD, leeway=LEEWAY, clock=clock)
    clock.advance(TTL + LEEWAY - 1)
    assert (await verifier.verify(token)).subject == "u1"
    assert (await verifier.verify(fresh)).subject == "u2"
    verifier.clear_cache()
    clock.advance(1)
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    assert "no published key" in str(caught.value.__cause__)


async def test_signing_switches_to_the_new_key_at_once(
    store: CountingStore, clock: FrozenClock
) -> None:
    """After rotate(), new tokens carry the new kid."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    record = await keys.rotate()
    assert (await keys.signing_key()).kid == record.kid


async def test_hot_path_reads_the_store_once_per_cache_ttl(
    store: CountingStore, clock: FrozenClock
) -> None:
    """get(), jwks() and signing_key() are served from memory within cache_ttl."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    kid = (await keys.signing_key()).kid
    reads = store.reads
    for _ in range(100):
        assert await keys.get(kid) is not None
        await keys.jwks()
        await keys.signing_key()
    assert store.reads == reads
    clock.advance(60)
    await keys.get(kid)
    assert store.reads == reads + 1


async def test_private_key_is_decrypted_once(
    store: CountingStore, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """signing_key() decrypts the active key once, and again only after a rotation."""
    calls: list[str] = []
    real = bastion.keys.decrypt_signing_key

    def counting(record: SigningKeyRecord, *args: Any, **kwargs: Any) -> Any:
        calls.append(record.kid)
        return real(record, *args, **kwargs)

    monkeypatch.setattr(bastion.keys, "decrypt_signing_key", counting)
    keys = manager(store, clock)
    await keys.ensure_active_key()
    for _ in range(10):
        await keys.signing_key()
        clock.advance(61)  # even across cache reloads
    rotated = await keys.rotate()
    await keys.signing_key()
    assert len(calls) == 2
    assert calls[-1] == rotated.kid


async def test_second_manager_rotation_is_seen_on_unknown_kid_reload(
    store: CountingStore, clock: FrozenClock
) -> None:
    """Another process's new kid is found by one early reload, not by waiting cache_ttl."""
    first = manager(store, clock)
    await first.ensure_active_key()
    await first.jwks()  # loads the cache
    new = await manager(store, clock).rotate()
    reads = store.reads
    assert await first.get(new.kid) is None  # just loaded: no reload yet
    assert store.reads == reads
    clock.advance(5)  # the unknown-kid reload interval, well inside cache_ttl
    assert await first.get(new.kid) is not None
    assert store.reads == reads + 1
    assert (await first.signing_key()).kid == new.kid


async def test_unknown_kids_do_not_storm_the_store(
    store: CountingStore, clock: FrozenClock
) -> None:
    """Many unknown kids, sequential or concurrent, cost one reload per interval."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    await keys.jwks()
    clock.advance(5)
    reads = store.reads
    results = await asyncio.gather(*(keys.get(f"made-up-{i}") for i in range(50)))
    assert results == [None] * 50
    for i in range(50):
        assert await keys.get(f"other-{i}") is None
    assert store.reads == reads + 1


async def test_store_outage_keeps_cached_keys(
    store: CountingStore, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With the database down, cached keys keep verifying; the outage is logged."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    kid = (await keys.signing_key()).kid
    store.failing = True
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="bastion.keys"):
        assert await keys.get(kid) is not None
    assert "key store unreachable" in caplog.text
    reads = store.reads
    assert await keys.get(kid) is not None  # no retry until the short interval passes
    assert store.reads == reads


async def test_store_outage_without_cache_raises(store: CountingStore, clock: FrozenClock) -> None:
    """With nothing cached, the store's error propagates (the verifier makes it a 401)."""
    keys = manager(store, clock)
    store.failing = True
    with pytest.raises(ServiceUnavailable):
        await keys.get("any")


async def test_wrong_secret_breaks_signing_not_verification(
    store: CountingStore, clock: FrozenClock
) -> None:
    """A changed secret stops signing with a clear error; public keys still serve."""
    await manager(store, clock).ensure_active_key()
    keys = manager(store, clock, secret=OTHER_SECRET)
    with pytest.raises(KeyDecryptionError, match="BASTION_SECRET_KEY changed"):
        await keys.signing_key()
    assert len((await keys.jwks())["keys"]) == 1


async def test_signing_without_a_key_is_a_configuration_error(
    store: CountingStore, clock: FrozenClock
) -> None:
    """signing_key() before ensure_active_key() says what to do."""
    with pytest.raises(ConfigurationError, match="ensure_active_key"):
        await manager(store, clock).signing_key()


async def test_prune_deletes_only_unpublished_keys(
    store: CountingStore, clock: FrozenClock
) -> None:
    """prune() removes retired keys that have left the JWKS, nothing else."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    await keys.rotate()
    assert await keys.prune() == 0
    clock.advance(TTL + LEEWAY + 1)
    assert await keys.prune() == 1
    records = await keys.list_keys()
    assert [r.is_active for r in records] == [True]
    assert keys.is_published(records[0])


# ------------------------------------------------------------------ issuing


async def test_issued_token_has_the_rfc9068_claims(
    store: CountingStore, clock: FrozenClock
) -> None:
    """issue() signs iss, sub, aud, exp, iat, nbf, jti, client_id, scope and roles."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    issued = await AccessTokenIssuer(keys, ISS, AUD, TTL, clock).issue(
        subject="u1",
        scopes=["write", "read", "read"],
        client_id="bastion",
        roles=["admin"],
        extra={"tenant": "t1"},
    )
    now = clock.timestamp()
    assert (issued.token_type, issued.expires_in, issued.scope) == ("Bearer", TTL, "read write")
    assert issued.expires_at == now + TTL
    claims = await verify_access_token(
        issued.access_token, keys, issuer=ISS, audience=AUD, clock=clock
    )
    assert dict(claims.raw) == {
        "iss": ISS,
        "sub": "u1",
        "aud": AUD,
        "exp": int(now) + TTL,
        "iat": int(now),
        "nbf": int(now),
        "jti": issued.jti,
        "client_id": "bastion",
        "scope": "read write",
        "roles": ["admin"],
        "tenant": "t1",
    }
    assert len(issued.jti) >= 22


async def test_extra_claims_cannot_override_registered_ones(
    store: CountingStore, clock: FrozenClock
) -> None:
    """extra={"sub": ...} is refused rather than silently winning or losing."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    issuer = AccessTokenIssuer(keys, ISS, AUD, TTL, clock)
    with pytest.raises(ValueError, match="sub"):
        await issuer.issue(subject="u1", scopes=[], client_id="c", extra={"sub": "admin"})


async def test_token_from_another_key_set_is_rejected(
    store: CountingStore, clock: FrozenClock
) -> None:
    """A token signed by a key this manager never had does not verify."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    stranger = decrypt_signing_key(RECORDS["EdDSA"], SECRET)
    token = encode_access_token(
        {"iss": ISS, "aud": AUD, "sub": "x", "client_id": "c", "exp": 2e9, "iat": 1.9e9},
        stranger,
    )
    with pytest.raises(InvalidToken):
        await verify_access_token(token, keys, issuer=ISS, audience=AUD, clock=clock)


@pytest.mark.parametrize("scope", ["two words", 'quo"te', "", "back\\slash", "tab\t"])
async def test_scopes_outside_rfc6749_are_refused_at_issue(
    store: CountingStore, clock: FrozenClock, scope: str
) -> None:
    """A scope the verifier would reject cannot be put into a token in the first place."""
    keys = manager(store, clock)
    await keys.ensure_active_key()
    issuer = AccessTokenIssuer(keys, ISS, AUD, TTL, clock)
    with pytest.raises(ValueError, match="scope"):
        await issuer.issue(subject="u1", scopes=["read", scope], client_id="c")
