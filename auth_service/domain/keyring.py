"""The signing key ring shared by every replica through the store.

Lifecycle of a key: created and published, then (at least one JWKS max-age later, so verifiers
already hold it) it signs for one rotation interval, then stays published until every token it
signed has expired plus one max-age, then it is deleted. The very first key signs at once.
Exactly one replica creates each new key: keys carry a unique ``generation`` and a losing insert
just reloads the ring. A leaked key is withdrawn instead: deleted at once (so it leaves the JWKS
and never signs again) and recorded as withdrawn.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import RSAAlgorithm

from auth_service.domain.errors import KeyRingError
from auth_service.domain.models import StoredKey
from auth_service.domain.store import Store
from shared.jsonlog import audit

__all__ = ["KeyCipher", "KeyRing", "LoadedKey", "RotationPolicy", "Withdrawal"]

log = logging.getLogger(__name__)

RSA_KEY_BITS = 2048
_FORMAT = b"k1"


class KeyCipher:
    """AES-256-GCM over private keys, keyed by HKDF from each configured secret.

    The first secret encrypts; every secret decrypts, so secrets can be rotated by prepending.
    The key id is bound as associated data, so a ciphertext cannot be swapped onto another key.
    """

    def __init__(self, secrets: tuple[str, ...]) -> None:
        if not secrets:
            raise ValueError("at least one key-encryption secret is required")
        self._keys = [self._derive(secret) for secret in secrets]

    @staticmethod
    def _derive(secret: str) -> tuple[bytes, AESGCM]:
        material = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"auth_service key ring v1"
        ).derive(secret.encode())
        fingerprint = hashlib.sha256(material).digest()[:8]
        return fingerprint, AESGCM(material)

    def encrypt(self, kid: str, plaintext: bytes) -> bytes:
        fingerprint, aead = self._keys[0]
        nonce = os.urandom(12)
        return _FORMAT + fingerprint + nonce + aead.encrypt(nonce, plaintext, kid.encode())

    def decrypt(self, kid: str, blob: bytes) -> bytes:
        if blob[:2] != _FORMAT:
            raise KeyRingError(f"key {kid}: unknown encryption format")
        fingerprint, nonce, sealed = blob[2:10], blob[10:22], blob[22:]
        for candidate, aead in self._keys:
            if candidate == fingerprint:
                try:
                    return aead.decrypt(nonce, sealed, kid.encode())
                except InvalidTag as exc:
                    raise KeyRingError(f"key {kid}: ciphertext failed authentication") from exc
        raise KeyRingError(
            f"key {kid}: none of AUTH_KEY_ENCRYPTION_SECRETS decrypts it (was a secret removed?)"
        )


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    interval: float
    jwks_max_age: float
    access_token_ttl: float

    @property
    def lead(self) -> float:
        """How long before it signs a new key is published: a max-age plus reload slack."""
        return 2 * self.jwks_max_age

    @property
    def retention(self) -> float:
        """How long a replaced key stays published after its successor starts signing."""
        return self.access_token_ttl + self.jwks_max_age


@dataclass(frozen=True, slots=True)
class LoadedKey:
    kid: str
    generation: int
    activate_at: float
    public_jwk: dict[str, Any]
    private_key: rsa.RSAPrivateKey | None

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        key = RSAAlgorithm.from_jwk(self.public_jwk)
        assert isinstance(key, rsa.RSAPublicKey)
        return key


@dataclass(frozen=True, slots=True)
class Withdrawal:
    kid: str
    replacement: LoadedKey | None
    """The key made to sign at once because the withdrawn one was signing."""
    already: bool = False
    """The key had been withdrawn before: nothing changed (its announcement may be repeated)."""


class KeyRing:
    def __init__(self, store: Store, cipher: KeyCipher, policy: RotationPolicy) -> None:
        self._store = store
        self._cipher = cipher
        self.policy = policy
        self._keys: list[LoadedKey] = []
        self._by_kid: dict[str, LoadedKey] = {}
        self._public_keys: dict[str, rsa.RSAPublicKey] = {}

    @property
    def keys(self) -> list[LoadedKey]:
        return list(self._keys)

    async def open(self, secrets_source: str, database: str) -> None:
        """The first load, at start-up: a ring no configured secret opens stops it with the one
        error that says why, and no line per key before it (:meth:`check_unlocked`)."""
        await self.reload(report=False)
        self.check_unlocked(secrets_source, database)

    async def reload(self, *, report: bool = True) -> None:
        """Load the stored keys; ``report`` logs each that no configured secret decrypts."""
        stored = await self._store.list_signing_keys()
        loaded = []
        for row in stored:
            known = self._by_kid.get(row.kid)
            if known is not None and known.private_key is not None:
                loaded.append(known)
                continue
            loaded.append(await asyncio.to_thread(self._load, row, report))
        self._keys = loaded
        self._by_kid = {key.kid: key for key in loaded}
        self._public_keys = {
            kid: self._public_keys.get(kid) or key.public_key for kid, key in self._by_kid.items()
        }

    def _load(self, row: StoredKey, report: bool) -> LoadedKey:
        private: rsa.RSAPrivateKey | None = None
        try:
            der = self._cipher.decrypt(row.kid, row.private_key_encrypted)
            key = serialization.load_der_private_key(der, password=None)
            if isinstance(key, rsa.RSAPrivateKey):
                private = key
        except KeyRingError as exc:
            if report:
                log.error("signing key unusable", extra={"kid": row.kid, "reason": str(exc)})
        return LoadedKey(
            row.kid, row.generation, row.activate_at, json.loads(row.public_jwk), private
        )

    def check_unlocked(self, secrets_source: str, database: str) -> None:
        """Refuse a ring that no configured secret opens: it could never sign again, and serving
        on it would answer every login 503 with nothing in the logs saying why at start-up. The
        message names where the secret came from and the database, so the operator sees which
        two disagree."""
        if not self._keys or any(key.private_key is not None for key in self._keys):
            return
        raise KeyRingError(
            f"the key-encryption secret from {secrets_source} decrypts none of the "
            f"{len(self._keys)} signing key(s) in {database}: another secret stored them. Start "
            "with that one (the AUTH_KEY_ENCRYPTION_SECRETS the service first ran with, or the "
            "key-encryption-secret file in the data dir of the checkout that made them; "
            "AUTH_KEY_ENCRYPTION_SECRETS=new,old keeps both), or re-key on purpose with "
            "`python -m auth_service keys rotate --immediate` and the same variables (a new key "
            "signs at once; tokens the old keys signed stay valid until they expire)."
        )

    def current_key(self, now: float) -> LoadedKey | None:
        """The key of the newest generation whose activation time has come, usable or not.

        By generation, not activation time: a manual rotation while the scheduled key is pending
        makes a later generation activate first, and the pending key must then never sign, since
        retirement (:meth:`_delete_retired`) deletes a key by its successor's generation."""
        active = [k for k in self._keys if k.activate_at <= now]
        return max(active, key=lambda k: k.generation, default=None)

    def signing_key(self, now: float) -> LoadedKey | None:
        """The current key, if a configured secret decrypts it. Never an older one: it is retired,
        and deleted from the key set while its tokens would still live (a replica left on the old
        key-encryption secret signed with it; an outside probe). Such a replica is not ready."""
        current = self.current_key(now)
        return current if current is not None and current.private_key is not None else None

    def key(self, kid: str) -> LoadedKey | None:
        return self._by_kid.get(kid)

    def public_key(self, kid: str) -> rsa.RSAPublicKey | None:
        return self._public_keys.get(kid)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": [dict(key.public_jwk) for key in self._keys]}

    async def maintain(self, now: float) -> bool:
        """Reload, create the next key when due, delete keys past retention. True if it rotated."""
        await self.reload()
        rotated = False
        newest = max(self._keys, key=lambda k: k.generation, default=None)
        if newest is None:
            rotated = await self._create(1, activate_at=now, now=now, reason="initial")
        elif now >= newest.activate_at + self.policy.interval - self.policy.lead:
            activate_at = max(newest.activate_at + self.policy.interval, now + self.policy.lead)
            rotated = await self._create(
                newest.generation + 1, activate_at=activate_at, now=now, reason="scheduled"
            )
        await self._delete_retired(now)
        return rotated

    async def rotate(self, now: float, *, immediate: bool = False) -> LoadedKey:
        """Manual rotation: publish a new key now, signing after one max-age (or at once).

        At once too when no key signs now (a database no service has started on yet): there are
        no tokens for verifiers to keep verifying, and a key published ahead would leave every
        login refused for a max-age, since the ring's first key was made already."""
        await self.reload()
        immediate = immediate or self.current_key(now) is None
        generation = max((k.generation for k in self._keys), default=0) + 1
        activate_at = now if immediate else now + self.policy.jwks_max_age
        reason = "manual_immediate" if immediate else "manual"
        if not await self._create(generation, activate_at=activate_at, now=now, reason=reason):
            raise KeyRingError("another replica rotated at the same moment; try again")
        return self._keys[-1]

    async def withdraw(self, kid: str, now: float) -> Withdrawal:
        """Take a leaked key out of service at once. When it is the key signing now, a new key is
        made to sign first, so that logins and refreshes go on; an older key never signs again."""
        await self.reload()
        if kid not in self._by_kid:
            if any(key.kid == kid for key in await self._store.list_withdrawn_keys()):
                return Withdrawal(kid, None, already=True)
            raise KeyRingError(f"no signing key {kid!r} (see `keys list`)")
        # The current key, usable here or not: it must not be left without a successor.
        current = self.current_key(now)
        replacement = (
            await self.rotate(now, immediate=True) if current and current.kid == kid else None
        )
        generation = self._by_kid[kid].generation
        if not await self._store.withdraw_signing_key(kid, now):
            return Withdrawal(kid, replacement, already=True)
        await self.reload()
        audit("key_withdrawn", kid=kid, generation=generation)
        return Withdrawal(kid, replacement)

    async def _create(
        self, generation: int, *, activate_at: float, now: float, reason: str
    ) -> bool:
        private = await asyncio.to_thread(rsa.generate_private_key, 65537, RSA_KEY_BITS)
        numbers: dict[str, Any] = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        kid = _thumbprint(numbers)
        jwk = {
            "kty": "RSA",
            "n": numbers["n"],
            "e": numbers["e"],
            "kid": kid,
            "use": "sig",
            "alg": "RS256",
        }
        der = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        stored = StoredKey(
            kid=kid,
            generation=generation,
            private_key_encrypted=self._cipher.encrypt(kid, der),
            public_jwk=json.dumps(jwk, separators=(",", ":")),
            created_at=now,
            activate_at=activate_at,
        )
        created = await self._store.add_signing_key(stored)
        await self.reload()
        if created:
            audit(
                "key_rotated",
                kid=kid,
                generation=generation,
                activate_at=int(activate_at),
                reason=reason,
            )
        return created

    async def _delete_retired(self, now: float) -> None:
        ordered = sorted(self._keys, key=lambda k: k.generation)
        deleted = False
        for key, successor in itertools.pairwise(ordered):
            if successor.activate_at + self.policy.retention <= now:
                await self._store.delete_signing_key(key.kid)
                audit("key_deleted", kid=key.kid, generation=key.generation)
                deleted = True
        if deleted:
            await self.reload()


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: a kid that names the key itself."""
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
