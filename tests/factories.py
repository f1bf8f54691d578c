"""factory-boy factories for test data: HTTP request bodies (camelCase dicts) and domain command structs."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import factory
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.crypto import digest, new_api_key
from domain.machines.commands import (
    ChangeStatus,
    IssueIdentityChallenge,
    RegisterMachine,
    ReviseProfile,
    VerifyIdentity,
)
from domain.shared.context import CommandContext

# One fixed instant so decisions built from factories stay deterministic; pass `at=` / `expires_at=` to move it.
FIXED_AT = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class MachineKey:
    """An Ed25519 key pair as a machine holds it: the public half travels as standard base64."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_key = public_key_b64(private_key)

    def sign(self, nonce: str) -> str:
        """The answer to an identity challenge: the signature of the nonce's UTF-8 bytes, base64."""
        return base64.b64encode(self.private_key.sign(nonce.encode("utf-8"))).decode()


class MachineRegistration:
    """A register-machine body together with the private key that can answer its identity challenges."""

    def __init__(self, key: MachineKey, payload: dict[str, Any]) -> None:
        self.key = key
        self.payload = payload

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self.key.private_key


class MachineKeyFactory(factory.Factory):
    class Meta:
        model = MachineKey

    private_key = factory.LazyFunction(Ed25519PrivateKey.generate)


def _labels() -> dict[str, str]:
    return {"region": "eu-west-1", "tier": "gpu"}


# --- request bodies (what a client sends; camelCase) ----------------------------------------------


class RegisterMachinePayloadFactory(factory.DictFactory):
    """POST /v1/machines. A fresh real key each time; use MachineRegistrationFactory to keep the private half."""

    name = factory.Sequence(lambda n: f"machine-{n}")
    description = factory.Faker("sentence", nb_words=6)
    publicKey = factory.LazyFunction(lambda: MachineKeyFactory().public_key)
    labels = factory.LazyFunction(_labels)


class MachineRegistrationFactory(factory.Factory):
    """`.payload` is a RegisterMachinePayload whose publicKey belongs to `.private_key`."""

    class Meta:
        model = MachineRegistration

    key = factory.SubFactory(MachineKeyFactory)
    payload = factory.LazyAttribute(lambda o: RegisterMachinePayloadFactory(publicKey=o.key.public_key))


class ReviseMachinePayloadFactory(factory.DictFactory):
    """PATCH /v1/machines/{id}."""

    name = factory.Sequence(lambda n: f"machine-renamed-{n}")
    description = factory.Faker("sentence", nb_words=4)
    labels = factory.LazyFunction(lambda: {"region": "us-east-1"})


class VerifyIdentityPayloadFactory(factory.DictFactory):
    """POST /v1/machines/{id}/identity/verify; pass challengeId and signature from a real challenge."""

    challengeId = factory.LazyFunction(lambda: str(uuid.uuid4()))
    signature = factory.LazyFunction(lambda: base64.b64encode(bytes(64)).decode())


class StatusChangePayloadFactory(factory.DictFactory):
    reason = factory.Faker("sentence", nb_words=3)


class OpenAccountPayloadFactory(factory.DictFactory):
    """POST /v1/accounts (admin only)."""

    name = factory.Sequence(lambda n: f"account-{n}")
    isAdmin = False


class IssueKeyPayloadFactory(factory.DictFactory):
    """POST /v1/accounts/{id}/api-keys."""

    label = factory.Sequence(lambda n: f"key-{n}")


# --- commands and decision arguments (what the domain receives) ----------------------------------


class RegisterMachineCommandFactory(factory.Factory):
    """A valid RegisterMachine; pass public_key=MachineKeyFactory().public_key to keep the private half."""

    class Meta:
        model = RegisterMachine

    machine_id = factory.LazyFunction(uuid.uuid4)
    account_id = factory.LazyFunction(uuid.uuid4)
    name = factory.Sequence(lambda n: f"machine-{n}")
    description = factory.Faker("sentence", nb_words=6)
    public_key = factory.LazyFunction(lambda: MachineKeyFactory().public_key)
    labels = factory.LazyFunction(_labels)


class IssueIdentityChallengeFactory(factory.Factory):
    class Meta:
        model = IssueIdentityChallenge

    challenge_id = factory.LazyFunction(uuid.uuid4)
    nonce = factory.Sequence(lambda n: f"nonce-{n}-{uuid.uuid4().hex}")
    expires_at = FIXED_AT + timedelta(minutes=5)


class VerifyIdentityCommandFactory(factory.Factory):
    """Defaults to a well-formed (64-byte) signature that no key produced."""

    class Meta:
        model = VerifyIdentity

    challenge_id = factory.LazyFunction(uuid.uuid4)
    signature = factory.LazyFunction(lambda: base64.b64encode(bytes(64)).decode())


class ReviseProfileCommandFactory(factory.Factory):
    class Meta:
        model = ReviseProfile

    name = factory.Sequence(lambda n: f"machine-renamed-{n}")
    description = factory.Faker("sentence", nb_words=4)
    labels = factory.LazyFunction(lambda: {"region": "us-east-1"})


class ChangeStatusCommandFactory(factory.Factory):
    class Meta:
        model = ChangeStatus

    reason = factory.Faker("sentence", nb_words=3)


class CommandContextFactory(factory.Factory):
    class Meta:
        model = CommandContext

    at = FIXED_AT
    actor = factory.Sequence(lambda n: f"api-key:{n}")
    account_id = factory.LazyFunction(uuid.uuid4)
    request_id = factory.LazyFunction(lambda: uuid.uuid4().hex)


class _GeneratedKey:
    def __init__(self, key: str, prefix: str) -> None:
        self.key, self.prefix = key, prefix


class OpenAccountArgsFactory(factory.DictFactory):
    """Keyword arguments of Account.open (accounts take plain arguments, not a command struct)."""

    account_id = factory.LazyFunction(uuid.uuid4)
    name = factory.Sequence(lambda n: f"account-{n}")
    is_admin = False
    at = FIXED_AT


class IssueKeyArgsFactory(factory.DictFactory):
    """Keyword arguments of Account.issue_key for a freshly generated key (the plaintext is not included)."""

    class Params:
        issued = factory.LazyFunction(lambda: _GeneratedKey(*new_api_key()))

    key_id = factory.LazyFunction(uuid.uuid4)
    key_hash = factory.LazyAttribute(lambda o: digest(o.issued.key))
    prefix = factory.LazyAttribute(lambda o: o.issued.prefix)
    label = factory.Sequence(lambda n: f"key-{n}")
    at = FIXED_AT
