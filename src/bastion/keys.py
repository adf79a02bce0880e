"""Signing keys: generation, encryption at rest, rotation and publication.

Three parts, one per side of a token:

* :func:`generate_signing_key` and :func:`decrypt_signing_key` make and open the
  rows of :class:`~bastion.stores.protocols.KeyStore`. The private key is never
  stored in the clear: PKCS #8 DER sealed with AES-256-GCM under a key derived
  from ``BASTION_SECRET_KEY`` (HKDF-SHA256, RFC 5869), with the ``kid`` as
  associated data so a ciphertext cannot be moved to another row.
* :class:`LocalKeyManager` is the server's view: which key signs, which public
  keys the JWKS (RFC 7517 §5) publishes, and rotation. It caches so the hot
  path never touches the database.
* :class:`RemoteJWKS` is a resource server's view: the issuer's JWKS fetched
  over HTTP, cached, re-fetched on an unknown ``kid`` without storms.

Both views implement :class:`KeySource`, which the verifier in :mod:`bastion.jwt`
asks for a :class:`VerificationKey` by ``kid``. A verification key carries the
one algorithm it may be used with (RFC 8725 §3.1): the token header never
chooses it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, TypeAlias, cast, get_args
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from bastion.clock import Clock, SystemClock
from bastion.errors import ConfigurationError, ServiceUnavailable
from bastion.stores.protocols import KeyStore, SigningKeyRecord

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Algorithm",
    "KeyDecryptionError",
    "KeySource",
    "KeySourceUnavailable",
    "LocalKeyManager",
    "PrivateKey",
    "PublicKey",
    "RemoteJWKS",
    "SigningKey",
    "UnusableJWK",
    "VerificationKey",
    "decrypt_signing_key",
    "generate_signing_key",
    "strict_object_pairs",
]

logger = logging.getLogger("bastion.keys")

Algorithm = Literal["EdDSA", "ES256", "RS256"]
"""The JWS algorithms (RFC 7518 §3.1, RFC 8037 §3.1) Bastion signs and accepts."""

SUPPORTED_ALGORITHMS: Final[frozenset[str]] = frozenset(get_args(Algorithm))

PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

MAX_KID_LENGTH: Final = 128
"""Longest ``kid`` accepted from a JWKS or a token header; ours are 22 characters."""

RSA_KEY_SIZE: Final = 3072
"""Bits for new RSA keys: 2048 is the floor of RFC 7518 §3.3, 3072 reaches the
128-bit level NIST SP 800-57 asks for beyond 2030."""

_RSA_MIN_BITS: Final = 2048
_RSA_MAX_BITS: Final = 8192  # a huge modulus makes every verification slow: a DoS lever
_KTY: Final[Mapping[str, str]] = {"EdDSA": "OKP", "ES256": "EC", "RS256": "RSA"}
_CRV: Final[Mapping[str, str]] = {"EdDSA": "Ed25519", "ES256": "P-256"}
_PUBLIC_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    "OKP": ("crv", "x"),
    "EC": ("crv", "x", "y"),
    "RSA": ("n", "e"),
}
# RFC 7518 §6.2.2, §6.3.2, §6.4 and RFC 8037 §2: members that only private or
# symmetric keys have. A JWKS that carries them is a leak we refuse to use.
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_HKDF_INFO: Final = b"bastion signing-key encryption v1"
_ENVELOPE_VERSION: Final = b"\x01"
_NONCE_BYTES: Final = 12  # 96 bits, the GCM nonce size NIST SP 800-38D recommends


class UnusableJWK(ValueError):
    """A JWK that cannot serve as a verification key; the message says why.

    Internal: callers skip the key and log the reason."""


class KeyDecryptionError(ConfigurationError):
    """A stored private key does not open with the configured secret.

    Almost always ``BASTION_SECRET_KEY`` changed since the key was made. The
    message names the ``kid`` and nothing of the key material."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        super().__init__([f"cannot decrypt signing key {kid}: BASTION_SECRET_KEY changed?"])


class KeySourceUnavailable(ServiceUnavailable):
    """The key source could not load keys and has none cached.

    The verifier turns this into ``InvalidToken`` (401): a resource server whose
    issuer is unreachable rejects tokens, it does not fail with 500."""

    default_detail = "The signing keys of the issuer are unavailable."


def strict_object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads` that refuses duplicate members.

    RFC 7515 §5.2 and RFC 7519 §4 let a parser either reject duplicates or keep
    the last one; two parsers picking differently is how a claim is smuggled past
    one of them (RFC 8725 §3.5 hints at such ambiguities), so we reject."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member in JSON object")
    return result


# --------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key bound to the one algorithm it may verify (RFC 8725 §3.1).

    Built only through :meth:`from_jwk` or :meth:`from_public_key`, which check
    that the key's type, curve and size fit the algorithm."""

    kid: str
    algorithm: Algorithm
    public_key: PublicKey = field(repr=False)

    @classmethod
    def from_public_key(cls, kid: str, algorithm: str, public_key: object) -> VerificationKey:
        """Wrap ``public_key``; :class:`UnusableJWK` if it does not fit ``algorithm``."""
        _check_kid(kid)
        alg = _check_algorithm(algorithm)
        return cls(kid, alg, _check_public_key(alg, public_key))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any], *, algorithm: str | None = None) -> VerificationKey:
        """Validate a public JWK (RFC 7517 §4) and load it.

        The JWK must name its ``alg`` from the allow-list, with the matching
        ``kty`` (and ``crv``); ``use``, if present, must be ``sig`` (§4.2) and
        ``key_ops``, if present, must allow ``verify`` (§4.3). A JWK with private
        members is refused, not stripped: whoever published it leaked a key.
        ``algorithm``, when given (the stored row's), must equal the JWK's."""
        if not isinstance(jwk, Mapping):
            raise UnusableJWK("JWK is not an object")
        leaked = _PRIVATE_MEMBERS.intersection(jwk)
        if leaked:
            raise UnusableJWK(f"JWK has private or symmetric members {sorted(leaked)}")
        kid = jwk.get("kid")
        if not isinstance(kid, str):
            raise UnusableJWK("JWK has no string kid")
        _check_kid(kid)
        alg = _check_algorithm(jwk.get("alg"))
        if algorithm is not None and algorithm != alg:
            raise UnusableJWK(f"JWK alg {alg!r} differs from the key's algorithm {algorithm!r}")
        kty = jwk.get("kty")
        if kty != _KTY[alg]:
            raise UnusableJWK(f"kty {kty!r} does not fit alg {alg}")
        if alg in _CRV and jwk.get("crv") != _CRV[alg]:
            raise UnusableJWK(f"crv {jwk.get('crv')!r} does not fit alg {alg}")
        use = jwk.get("use")
        if use is not None and use != "sig":
            raise UnusableJWK(f"JWK use is {use!r}, not 'sig'")
        key_ops = jwk.get("key_ops")
        if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
            raise UnusableJWK("JWK key_ops does not allow verify")
        members: dict[str, Any] = {"kty": kty}
        for name in _PUBLIC_MEMBERS[kty]:
            value = jwk.get(name)
            if not isinstance(value, str) or not value:
                raise UnusableJWK(f"JWK member {name!r} is missing or not a string")
            members[name] = value
        try:
            public_key = jwt.get_algorithm_by_name(alg).from_jwk(members)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise UnusableJWK(f"JWK does not load: {exc}") from exc
        return cls(kid, alg, _check_public_key(alg, public_key))

    def to_jwk(self) -> dict[str, Any]:
        """The public JWK with ``kid``, ``alg`` and ``use: sig``, and nothing private.

        Built from an allow-list of public members (RFC 7517 §4, RFC 7518 §6,
        RFC 8037 §2), so no private or unexpected member can slip through."""
        full = jwt.get_algorithm_by_name(self.algorithm).to_jwk(self.public_key, as_dict=True)
        kty = _KTY[self.algorithm]
        jwk: dict[str, Any] = {"kty": kty}
        for name in _PUBLIC_MEMBERS[kty]:
            jwk[name] = full[name]
        jwk.update(kid=self.kid, alg=self.algorithm, use="sig")
        return jwk


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A decrypted private key, its ``kid`` and its algorithm. Lives in memory
    only; its repr shows no key material."""

    kid: str
    algorithm: Algorithm
    private_key: PrivateKey = field(repr=False)

    def verification_key(self) -> VerificationKey:
        return VerificationKey(self.kid, self.algorithm, self.private_key.public_key())


class KeySource(Protocol):
    """Where a verifier finds the key for a token's ``kid``.

    Returns ``None`` for a ``kid`` it does not publish; raises
    :class:`KeySourceUnavailable` when it cannot tell (no keys loaded at all)."""

    async def get(self, kid: str) -> VerificationKey | None: ...


def _check_kid(kid: str) -> None:
    if not kid or len(kid) > MAX_KID_LENGTH:
        raise UnusableJWK("kid is empty or too long")


def _check_algorithm(alg: object) -> Algorithm:
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        raise UnusableJWK(f"alg {alg!r} is not one of {sorted(SUPPORTED_ALGORITHMS)}")
    return cast(Algorithm, alg)  # narrowed by the membership test above


def _check_public_key(alg: Algorithm, key: object) -> PublicKey:
    """The key's type, curve and size must be those of ``alg`` (RFC 8725 §3.1)."""
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if (
        alg == "ES256"
        and isinstance(key, ec.EllipticCurvePublicKey)
        and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
        if not _RSA_MIN_BITS <= key.key_size <= _RSA_MAX_BITS:
            raise UnusableJWK(f"RSA key of {key.key_size} bits is out of range")
        return key
    raise UnusableJWK(f"a {type(key).__name__} cannot verify {alg}")


# ------------------------------------------------------------- generation, at rest


def _new_private_key(algorithm: Algorithm) -> PrivateKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
    raise ValueError(f"unsupported algorithm {algorithm!r}")


def _aead(secret_key: SecretStr) -> AESGCM:
    """AES-256-GCM keyed by HKDF-SHA256 (RFC 5869) over the configured secret.

    HKDF with a fixed ``info`` gives a key used for nothing else, so the same
    secret can safely feed other derivations with other labels."""
    secret = secret_key.get_secret_value().encode("utf-8")
    if not secret:
        raise ConfigurationError(["BASTION_SECRET_KEY is empty"])
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)
    return AESGCM(derived)


def _aad(kid: str) -> bytes:
    return b"bastion signing key\x00" + kid.encode("utf-8")


def generate_signing_key(
    algorithm: Algorithm, secret_key: SecretStr, now: datetime
) -> SigningKeyRecord:
    """A new key pair as a store row: public JWK in the clear, private key sealed.

    EdDSA uses Ed25519 (RFC 8037), ES256 P-256, RS256 RSA-3072. The ``kid`` is
    128 random bits (RFC 7515 §4.1.4 leaves its form to us); random rather than
    a thumbprint so it reveals nothing and never collides on re-import.
    The sealed form is ``0x01 || nonce (96 bits) || AES-256-GCM(PKCS #8 DER)``
    with the ``kid`` as associated data."""
    private_key = _new_private_key(algorithm)
    kid = secrets.token_urlsafe(16)
    plaintext = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _aead(secret_key).encrypt(nonce, plaintext, _aad(kid))
    public = VerificationKey(kid, algorithm, private_key.public_key())
    return SigningKeyRecord(
        kid=kid,
        algorithm=algorithm,
        public_jwk=public.to_jwk(),
        encrypted_private_key=_ENVELOPE_VERSION + nonce + sealed,
        created_at=now,
    )


def decrypt_signing_key(
    record: SigningKeyRecord, secret_key: SecretStr, *, aead: AESGCM | None = None
) -> SigningKey:
    """Open a stored private key.

    Raises :class:`KeyDecryptionError` (naming only the ``kid``) when the secret
    is wrong, the blob was altered or moved from another row, or the private key
    does not match the row's published public key."""
    blob = record.encrypted_private_key
    algorithm = _check_algorithm(record.algorithm)
    if len(blob) <= 1 + _NONCE_BYTES or blob[:1] != _ENVELOPE_VERSION:
        raise KeyDecryptionError(record.kid)
    nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    try:
        plaintext = (aead or _aead(secret_key)).decrypt(nonce, sealed, _aad(record.kid))
    except InvalidTag:
        raise KeyDecryptionError(record.kid) from None  # the tag failure says nothing more
    private_key = serialization.load_der_private_key(plaintext, password=None)
    if not isinstance(
        private_key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise KeyDecryptionError(record.kid)
    signing = SigningKey(record.kid, algorithm, private_key)
    try:
        published = VerificationKey.from_jwk(record.public_jwk, algorithm=algorithm)
    except UnusableJWK:
        raise KeyDecryptionError(record.kid) from None
    if published.kid != record.kid or published.to_jwk() != signing.verification_key().to_jwk():
        raise KeyDecryptionError(record.kid)
    return signing


def _timestamp(moment: datetime) -> float:
    """Seconds since the epoch; a naive datetime (SQLite drops the zone) is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# ------------------------------------------------------------------ server side


@dataclass(frozen=True, slots=True)
class _Published:
    key: VerificationKey
    jwk: Mapping[str, Any]
    until: float
    """Timestamp after which the key leaves the JWKS; ``inf`` while active."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One consistent read of the key store."""

    records: tuple[SigningKeyRecord, ...]
    active: SigningKeyRecord | None
    published: Mapping[str, _Published]


class LocalKeyManager:
    """The server's signing keys: creation, rotation, signing and the JWKS.

    Keys are read from the store at most once per ``cache_ttl`` seconds (by the
    injected clock); a ``kid`` not in the cache triggers one early reload, at
    most once per ``miss_reload_interval``, so a second server process that
    rotated is noticed quickly while a flood of made-up ``kid`` values costs the
    database nothing. Private keys are decrypted once, when first needed.

    A retired key stays published for ``access_token_ttl + leeway`` after its
    retirement: the tokens it signed just before may live that long (RFC 7517
    §5 leaves rollover to us)."""

    def __init__(
        self,
        store: KeyStore,
        secret_key: SecretStr,
        algorithm: Algorithm = "EdDSA",
        clock: Clock | None = None,
        access_token_ttl: int = 900,
        leeway: int = 30,
        cache_ttl: float = 60,
        *,
        miss_reload_interval: float = 5,
    ) -> None:
        self._store = store
        self._secret_key = secret_key
        self._algorithm = _check_algorithm(algorithm)
        self._clock = clock or SystemClock()
        self._publish_window = float(access_token_ttl + leeway)
        self._cache_ttl = float(cache_ttl)
        self._miss_interval = float(min(miss_reload_interval, cache_ttl))
        self._aead: AESGCM | None = None
        self._snapshot: _Snapshot | None = None
        self._generation = 0
        self._reload_at = -math.inf
        self._miss_reload_at = -math.inf
        self._signing: SigningKey | None = None
        self._lock = asyncio.Lock()

    @property
    def algorithm(self) -> Algorithm:
        return self._algorithm

    @property
    def publish_window(self) -> float:
        """Seconds a retired key stays in the JWKS."""
        return self._publish_window

    # -- cache

    async def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and self._clock.timestamp() < self._reload_at:
            return snapshot
        return await self._reload(self._generation)

    async def _reload(self, seen_generation: int) -> _Snapshot:
        """Read the store, unless another task already did since ``seen_generation``."""
        async with self._lock:
            snapshot = self._snapshot
            if snapshot is not None and self._generation != seen_generation:
                return snapshot
            now = self._clock.timestamp()
            try:
                records = await self._store.list_keys()
            except Exception:
                if snapshot is None:
                    raise
                # Keep verifying with what we have; retry soon, not per request.
                logger.warning("key store unreachable; using cached keys", exc_info=True)
                self._reload_at = self._miss_reload_at = now + self._miss_interval
                return snapshot
            snapshot = self._build(records)
            self._snapshot = snapshot
            self._generation += 1
            self._reload_at = now + self._cache_ttl
            self._miss_reload_at = now + self._miss_interval
            return snapshot

    def _build(self, records: list[SigningKeyRecord]) -> _Snapshot:
        active = [r for r in records if r.retired_at is None]
        # Active first, then retired ones, newest first (the store's order).
        ordered = active + [r for r in records if r.retired_at is not None]
        published: dict[str, _Published] = {}
        for record in ordered:
            try:
                key = VerificationKey.from_jwk(record.public_jwk, algorithm=record.algorithm)
            except UnusableJWK as exc:
                logger.error("stored signing key %s is unusable: %s", record.kid, exc)
                continue
            if key.kid != record.kid:
                logger.error("stored signing key %s has a JWK for another kid", record.kid)
                continue
            until = (
                math.inf
                if record.retired_at is None
                else _timestamp(record.retired_at) + self._publish_window
            )
            published[record.kid] = _Published(key, key.to_jwk(), until)
        return _Snapshot(tuple(records), active[0] if active else None, published)

    def invalidate(self) -> None:
        """Forget the cache; the next call reads the store."""
        self._reload_at = self._miss_reload_at = -math.inf

    # -- KeySource

    async def get(self, kid: str) -> VerificationKey | None:
        """The published key for ``kid``, or ``None``."""
        snapshot = await self._current()
        entry = snapshot.published.get(kid)
        now = self._clock.timestamp()
        if entry is None and now >= self._miss_reload_at:
            snapshot = await self._reload(self._generation)
            entry = snapshot.published.get(kid)
        if entry is None or now >= entry.until:
            return None
        return entry.key

    # -- server operations

    async def ensure_active_key(self) -> None:
        """Create the first key, or a new one when the configured algorithm changed.

        Called at start. Two processes starting at once may both create a key;
        the store keeps the later one active and both stay published."""
        self.invalidate()
        snapshot = await self._current()
        active = snapshot.active
        if active is None:
            record = await self.rotate()
            logger.info("created signing key %s (%s)", record.kid, record.algorithm)
        elif active.algorithm != self._algorithm:
            record = await self.rotate()
            logger.info(
                "signing algorithm changed from %s to %s: rotated to key %s",
                active.algorithm,
                self._algorithm,
                record.kid,
            )

    async def rotate(self) -> SigningKeyRecord:
        """Make a new key the active one; the previous one is retired by the store
        and stays in the JWKS for :attr:`publish_window` seconds."""
        record = generate_signing_key(self._algorithm, self._secret_key, self._clock.now())
        await self._store.activate(record, now=self._clock.now())
        self.invalidate()
        return record

    async def signing_key(self) -> SigningKey:
        """The active private key, decrypted once and kept while it stays active."""
        snapshot = await self._current()
        record = snapshot.active
        if record is None:
            raise ConfigurationError(["no active signing key: call ensure_active_key() at start"])
        signing = self._signing
        if signing is None or signing.kid != record.kid:
            if self._aead is None:
                self._aead = _aead(self._secret_key)
            signing = decrypt_signing_key(record, self._secret_key, aead=self._aead)
            self._signing = signing
        return signing

    async def jwks(self) -> dict[str, Any]:
        """The JWK Set document (RFC 7517 §5): the active key and the retired keys
        whose tokens may still be valid. Public members only."""
        snapshot = await self._current()
        now = self._clock.timestamp()
        return {"keys": [dict(p.jwk) for p in snapshot.published.values() if now < p.until]}

    async def list_keys(self) -> list[SigningKeyRecord]:
        """Every stored key, newest first, read fresh (for the CLI)."""
        return await self._store.list_keys()

    def is_published(self, record: SigningKeyRecord) -> bool:
        """Whether ``record`` belongs in the JWKS now (for the CLI's listing)."""
        if record.retired_at is None:
            return True
        return self._clock.timestamp() < _timestamp(record.retired_at) + self._publish_window

    async def prune(self) -> int:
        """Delete retired keys that have left the JWKS; returns how many."""
        cutoff = datetime.fromtimestamp(self._clock.timestamp() - self._publish_window, UTC)
        removed = await self._store.delete_retired_before(cutoff)
        self.invalidate()
        return removed


# ----------------------------------------------------------------- remote JWKS


class RemoteJWKS:
    """A resource server's :class:`KeySource`: the issuer's JWKS over HTTP.

    The set is cached for ``cache_ttl`` seconds. An unknown ``kid`` (the issuer
    rotated) triggers a re-fetch, but at most once per ``min_refetch_interval``
    and one at a time: concurrent misses wait for the same fetch, so made-up
    ``kid`` values cannot turn every bad token into a request to the issuer.

    Only keys that pass :meth:`VerificationKey.from_jwk` are kept (allow-listed
    ``alg`` with matching ``kty``; no private members). Responses larger than
    ``max_bytes`` are refused, redirects are not followed, and nothing in a
    token (``jku``, ``x5u``) ever chooses the URL (RFC 8725 §3.10).

    When a fetch fails the stale keys stay in use; with none at all,
    :meth:`get` raises :class:`KeySourceUnavailable`, which the verifier turns
    into a 401."""

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        cache_ttl: float = 300,
        min_refetch_interval: float = 30,
        clock: Clock | None = None,
        max_bytes: int = 64 * 1024,
        max_keys: int = 64,
        timeout: float = 5.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the JWKS URL must be an absolute http(s) URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            logger.warning("fetching the JWKS over plain http from %s", parts.hostname)
        self.url = url
        self._client = client
        self._owns_client = client is None
        self._cache_ttl = float(cache_ttl)
        self._min_interval = float(min_refetch_interval)
        self._clock = clock or SystemClock()
        self._max_bytes = max_bytes
        self._max_keys = max_keys
        self._timeout = timeout
        self._keys: dict[str, VerificationKey] | None = None
        self._expires_at = -math.inf
        self._last_attempt = -math.inf
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> RemoteJWKS:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def get(self, kid: str) -> VerificationKey | None:
        keys = self._keys
        now = self._clock.timestamp()
        if keys is not None and now < self._expires_at:
            key = keys.get(kid)
            if key is not None:
                return key
            if now - self._last_attempt < self._min_interval and not self._lock.locked():
                return None  # fetched a moment ago, and no fetch in flight to wait for
        return (await self._refresh(kid)).get(kid)

    async def _refresh(self, kid: str) -> Mapping[str, VerificationKey]:
        async with self._lock:
            now = self._clock.timestamp()
            keys = self._keys
            if keys is not None and now < self._expires_at and kid in keys:
                return keys  # another task's fetch brought it
            if now - self._last_attempt < self._min_interval:
                # Someone fetched (or failed to) a moment ago: do not hammer the issuer.
                if keys is None:
                    raise KeySourceUnavailable()
                return keys
            self._last_attempt = now
            try:
                loaded = await self._fetch()
            except (httpx.HTTPError, UnusableJWKS) as exc:
                logger.warning("could not fetch the JWKS from %s: %s", self.url, exc)
                if keys is None:
                    raise KeySourceUnavailable() from exc
                return keys
            self._keys = loaded
            self._expires_at = now + self._cache_ttl
            return loaded

    async def _fetch(self) -> dict[str, VerificationKey]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        body = bytearray()
        async with self._client.stream(
            "GET",
            self.url,
            headers={"Accept": "application/jwk-set+json, application/json"},
            follow_redirects=False,
            timeout=self._timeout,
        ) as response:
            if response.status_code != 200:
                raise UnusableJWKS(f"HTTP status {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                raise UnusableJWKS("response too large")
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise UnusableJWKS("response too large")
        return self._parse(bytes(body))

    def _parse(self, body: bytes) -> dict[str, VerificationKey]:
        try:
            document = json.loads(
                body.decode("utf-8"),
                object_pairs_hook=strict_object_pairs,
                parse_constant=_refuse_constant,
            )
        except (ValueError, RecursionError) as exc:
            raise UnusableJWKS(f"not a JSON object: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise UnusableJWKS("no 'keys' array (RFC 7517 §5.1)")
        entries: list[Any] = document["keys"]
        if len(entries) > self._max_keys:
            raise UnusableJWKS(f"more than {self._max_keys} keys")
        keys: dict[str, VerificationKey] = {}
        ambiguous: set[str] = set()
        for entry in entries:
            try:
                key = VerificationKey.from_jwk(entry)
            except UnusableJWK as exc:
                kid = entry.get("kid") if isinstance(entry, dict) else None
                logger.debug("ignoring JWK %r from %s: %s", kid, self.url, exc)
                continue
            if key.kid in keys:
                ambiguous.add(key.kid)
            keys[key.kid] = key
        for kid in ambiguous:  # RFC 7517 §4.5: a kid must pick one key; two is no answer
            logger.warning("ignoring kid %r: it names several keys in %s", kid, self.url)
            del keys[kid]
        return keys


class UnusableJWKS(ValueError):
    """A JWKS response that cannot be used at all (status, size, syntax)."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
