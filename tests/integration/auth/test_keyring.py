"""Key ring lifecycle on a real SQLite store, driven by an explicit clock."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from auth_service.domain.errors import KeyRingError
from auth_service.domain.keyring import KeyCipher, KeyRing, RotationPolicy
from auth_service.domain.store import Store
from auth_service.store import open_store

POLICY = RotationPolicy(interval=1000, jwks_max_age=100, access_token_ttl=50)
SECRET = "key-ring-secret-0123456789"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'keys.db'}")
    yield opened
    await opened.close()


def ring(store: Store, *secrets: str) -> KeyRing:
    return KeyRing(store, KeyCipher(secrets or (SECRET,)), POLICY)


async def test_first_key_signs_at_once(store: Store) -> None:
    keys = ring(store)
    assert await keys.maintain(10_000) is True
    signing = keys.signing_key(10_000)
    assert signing is not None and signing.generation == 1
    assert await keys.maintain(10_001) is False


async def test_next_key_is_published_ahead_signs_then_old_one_is_deleted(store: Store) -> None:
    keys = ring(store)
    await keys.maintain(0)
    first = keys.signing_key(0)
    assert first is not None
    assert await keys.maintain(1000 - POLICY.lead - 1) is False
    assert await keys.maintain(1000 - POLICY.lead) is True
    second = max(keys.keys, key=lambda k: k.generation)
    assert second.activate_at == 1000
    assert [k["kid"] for k in keys.jwks()["keys"]] == [first.kid, second.kid]
    assert keys.signing_key(999) == first, "a published key waits one max-age before signing"
    assert keys.signing_key(1000) == second
    await keys.maintain(1000 + POLICY.retention - 1)
    assert first.kid in {k.kid for k in keys.keys}, "kept until its tokens expired plus a max-age"
    await keys.maintain(1000 + POLICY.retention)
    assert [k.kid for k in keys.keys] == [second.kid]


async def test_two_replicas_rotating_together_create_one_key(store: Store) -> None:
    a, b = ring(store), ring(store)
    await a.maintain(0)
    await b.reload()
    results = await asyncio.gather(a.maintain(900), b.maintain(900))
    assert sorted(results) == [False, True]
    await a.reload()
    await b.reload()
    assert [k.kid for k in a.keys] == [k.kid for k in b.keys]
    assert len(a.keys) == 2


async def test_manual_rotation_publishes_before_signing_unless_immediate(store: Store) -> None:
    keys = ring(store)
    await keys.maintain(0)
    planned = await keys.rotate(10)
    assert planned.activate_at == 10 + POLICY.jwks_max_age
    urgent = await keys.rotate(20, immediate=True)
    assert keys.signing_key(20) == urgent


async def test_private_keys_are_encrypted_at_rest(store: Store) -> None:
    keys = ring(store)
    await keys.maintain(0)
    (stored,) = await store.list_signing_keys()
    loaded = keys.signing_key(0)
    assert loaded is not None and loaded.private_key is not None
    der = loaded.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert der not in stored.private_key_encrypted
    assert der[32:64] not in stored.private_key_encrypted
    assert set(json.loads(stored.public_jwk)) == {"kty", "n", "e", "kid", "use", "alg"}


async def test_secret_rotation_and_wrong_secret(store: Store) -> None:
    await ring(store, SECRET).maintain(0)
    rotated = ring(store, "a-brand-new-secret-987654321", SECRET)
    await rotated.reload()
    assert rotated.signing_key(0) is not None, "old secrets still decrypt"
    stranger = ring(store, "an-unrelated-secret-000000000")
    await stranger.reload()
    assert stranger.signing_key(0) is None, "a key no secret decrypts never signs"
    assert len(stranger.jwks()["keys"]) == 1


def test_ciphertext_is_bound_to_its_kid() -> None:
    cipher = KeyCipher((SECRET,))
    blob = cipher.encrypt("kid-a", b"private")
    assert cipher.decrypt("kid-a", blob) == b"private"
    with pytest.raises(KeyRingError, match="authentication"):
        cipher.decrypt("kid-b", blob)
    with pytest.raises(KeyRingError, match="format"):
        cipher.decrypt("kid-a", b"xx" + blob)


async def test_a_ring_no_secret_opens_stops_start_up_saying_how_to_recover(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await ring(store, SECRET).maintain(0)
    await ring(store, SECRET).rotate(1)
    stranger = ring(store, "an-unrelated-secret-000000000")
    where = "sqlite:///keys.db"
    caplog.set_level(logging.INFO)
    caplog.clear()  # the setup's own key_rotated lines
    with pytest.raises(KeyRingError) as err:
        await stranger.open(".data/key-encryption-secret (AUTH_DEV=1)", where)
    assert err.value.description.startswith(
        "the key-encryption secret from .data/key-encryption-secret (AUTH_DEV=1) decrypts none "
        "of the 2 signing key(s) in sqlite:///keys.db: another secret stored them."
    )
    assert "generated anew" not in err.value.description, "the old guess was wrong"
    assert "new,old" in err.value.description and "keys rotate --immediate" in err.value.description
    assert not caplog.records, "the one error says it all: no line per key before it"
    await stranger.rotate(2, immediate=True)
    await stranger.open("AUTH_KEY_ENCRYPTION_SECRETS", where)  # the deliberate re-key recovers
    ring(store, SECRET).check_unlocked("AUTH_KEY_ENCRYPTION_SECRETS", where)  # nothing loaded yet


async def test_withdrawing_the_signing_key_makes_a_new_one_sign_first(store: Store) -> None:
    keys, other_replica = ring(store), ring(store)
    await keys.maintain(0)
    await other_replica.reload()
    leaked = keys.signing_key(0)
    assert leaked is not None
    withdrawal = await keys.withdraw(leaked.kid, 10)
    assert withdrawal.replacement is not None and not withdrawal.already
    assert keys.signing_key(10) == withdrawal.replacement
    assert [k["kid"] for k in keys.jwks()["keys"]] == [withdrawal.replacement.kid]
    assert keys.public_key(leaked.kid) is None, "no longer trusted for logout or tickets"
    await other_replica.reload()
    assert [k.kid for k in other_replica.keys] == [withdrawal.replacement.kid]
    assert [k.kid for k in await store.list_withdrawn_keys()] == [leaked.kid]


async def test_withdrawing_a_key_that_does_not_sign_leaves_the_signing_key(store: Store) -> None:
    keys = ring(store)
    await keys.maintain(0)
    signing = keys.signing_key(0)
    assert signing is not None
    pending = await keys.rotate(10)
    withdrawal = await keys.withdraw(pending.kid, 20)
    assert withdrawal.replacement is None
    assert [k.kid for k in keys.keys] == [signing.kid]
    assert keys.signing_key(10_000) == signing, "the withdrawn key never starts signing"


async def test_withdrawing_twice_is_harmless_and_an_unknown_kid_is_refused(store: Store) -> None:
    keys = ring(store)
    await keys.maintain(0)
    retired = keys.signing_key(0)
    assert retired is not None
    await keys.rotate(10, immediate=True)
    assert (await keys.withdraw(retired.kid, 20)).already is False
    again = await keys.withdraw(retired.kid, 30)
    assert (again.already, again.replacement) == (True, None)
    with pytest.raises(KeyRingError, match="no signing key 'nope'"):
        await keys.withdraw("nope", 30)


@pytest.mark.parametrize("action", ["rotate", "rotate_immediate", "withdraw_signing"])
async def test_a_key_that_signed_stays_published_while_its_tokens_live(
    store: Store, action: str
) -> None:
    """A manual rotation (or a withdrawal) while the scheduled next key is pending made a key of a
    later generation activate before one of an earlier generation: the earlier one then took over
    signing at its activation and was deleted as retired (its successor by generation had long
    been active) while it signed, so live tokens named a kid no key set published (an outside
    probe: `keys rotate` in the last two JWKS max-ages of a rotation interval)."""
    keys = ring(store)
    await keys.maintain(0)
    await keys.maintain(1000 - POLICY.lead)  # the scheduled key: pending, signs from 1000
    first = keys.signing_key(850)
    assert first is not None
    if action == "withdraw_signing":
        await keys.withdraw(first.kid, 900)
    else:
        await keys.rotate(900, immediate=action == "rotate_immediate")
    last_signed: dict[str, float] = {}
    for now in range(900, 1600, 5):
        await keys.maintain(now)
        published = {key.kid for key in keys.keys}
        for kid, signed_at in last_signed.items():
            if signed_at + POLICY.access_token_ttl > now:
                assert kid in published, f"a key that signed at {signed_at} left the JWKS at {now}"
        signing = keys.signing_key(now)
        assert signing is not None
        last_signed[signing.kid] = now


async def test_a_manual_rotation_with_no_key_signing_signs_at_once(store: Store) -> None:
    """`keys rotate` on a database no service had started on made the first key wait one
    max-age, and the services then started on a ring with a key but none signing: logins and
    /readyz 503 for AUTH_JWKS_MAX_AGE (an outside probe)."""
    keys = ring(store)
    first = await keys.rotate(10)
    assert first.activate_at == 10
    assert keys.signing_key(10) == first
    assert await ring(store).maintain(10) is False
    planned = await keys.rotate(20)
    assert planned.activate_at == 20 + POLICY.jwks_max_age, "a key signs: published ahead"


async def test_a_replica_whose_secret_opens_only_an_older_key_signs_with_none(
    store: Store,
) -> None:
    """A replica left on (or rolled back to) the old key-encryption secret opens only the retired
    key: it signed with it, and the other replicas deleted it from the key set while its tokens
    lived (an outside probe). It now signs with none and says why in its readiness."""
    old, new = "old-secret-0123456789abcdef", "new-secret-0123456789abcdef"
    await ring(store, old).maintain(0)
    rotated = ring(store, new, old)
    await rotated.maintain(1000 - POLICY.lead)  # the next key, under the new secret
    stale = ring(store, old)
    await stale.open("AUTH_KEY_ENCRYPTION_SECRETS", "db")  # it opens a key: start-up passes
    first = stale.signing_key(999)
    assert first is not None and first.generation == 1
    assert stale.signing_key(1000) is None, "the retired key would be deleted under its tokens"
    current = stale.current_key(1000)
    assert current is not None and current.generation == 2 and current.private_key is None
    second = rotated.signing_key(1000)
    assert second is not None and second.kid == current.kid


async def test_withdrawing_the_current_key_makes_a_successor_whatever_secrets_open_it(
    store: Store,
) -> None:
    """A withdrawal asked by a process whose secrets cannot open the current key made no
    successor: the previous generation, still published, signed again (an outside probe)."""
    old, new = "old-secret-0123456789abcdef", "new-secret-0123456789abcdef"
    await ring(store, old).maintain(0)
    rotated = ring(store, new, old)
    await rotated.maintain(1000 - POLICY.lead)
    current = rotated.current_key(1000)
    assert current is not None and current.generation == 2
    withdrawal = await ring(store, old).withdraw(current.kid, 1000)
    assert withdrawal.replacement is not None and withdrawal.replacement.generation == 3
    await rotated.reload()
    signing = rotated.signing_key(1000)
    assert signing is not None and signing.generation == 3
