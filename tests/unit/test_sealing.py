"""Sealing credentials at rest: AES-GCM bound to a context, tamper-evident, tied to its key."""

from __future__ import annotations

import uuid

import pytest

from app.sealing import PREFIX, Sealer, SecretsUnavailable, new_secret_key
from app.settings import Settings, load_settings

CONTEXT = uuid.uuid4().bytes


def test_round_trip_and_every_seal_differs() -> None:
    sealer = Sealer(new_secret_key())
    a, b = sealer.seal("tok-123", CONTEXT), sealer.seal("tok-123", CONTEXT)
    assert a != b and a.startswith(PREFIX + ".") and "tok-123" not in a
    assert sealer.unseal(a, CONTEXT) == sealer.unseal(b, CONTEXT) == "tok-123"
    assert sealer.matches(a, "tok-123", CONTEXT) and not sealer.matches(a, "other", CONTEXT)
    assert sealer.matches(None, None, CONTEXT) and not sealer.matches(a, None, CONTEXT)


def test_a_sealed_value_only_opens_in_its_context_with_its_key() -> None:
    key = new_secret_key()
    sealed = Sealer(key).seal("tok", CONTEXT)
    with pytest.raises(SecretsUnavailable):
        Sealer(key).unseal(sealed, uuid.uuid4().bytes)  # moved to another endpoint
    with pytest.raises(SecretsUnavailable):
        Sealer(new_secret_key()).unseal(sealed, CONTEXT)  # another key
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretsUnavailable):
        Sealer(key).unseal(tampered, CONTEXT)
    assert not Sealer(new_secret_key()).matches(sealed, "tok", CONTEXT)  # unreadable counts as different


def test_without_a_key_nothing_is_sealed() -> None:
    with pytest.raises(SecretsUnavailable):
        Sealer(None).seal("tok", CONTEXT)


@pytest.mark.parametrize("bad", ["", "short", "A" * 43, "!" * 44])
def test_a_malformed_key_fails_at_start_up(bad: str) -> None:
    with pytest.raises(ValueError, match="MM_SECRET_KEY"):
        load_settings({"MM_SECRET_KEY": bad}) if bad else Settings(secret_key="x")


def test_the_key_comes_from_the_environment() -> None:
    key = new_secret_key()
    assert load_settings({"MM_SECRET_KEY": key}).secret_key == key
