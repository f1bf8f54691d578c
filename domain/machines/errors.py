"""Machine errors with the codes every machine-scoped endpoint shares."""

from __future__ import annotations

from domain.shared.errors import DomainError


class MachineNotActivated(DomainError):
    """Identity never verified: the machine has not proven it holds its key."""

    code = "MACHINE_NOT_ACTIVATED"


class MachineNotActive(DomainError):
    code = "MACHINE_NOT_ACTIVE"


class IdentityAlreadyVerified(DomainError):
    code = "IDENTITY_ALREADY_VERIFIED"


class ChallengeMissing(DomainError):
    code = "IDENTITY_CHALLENGE_MISSING"


class ChallengeExpired(DomainError):
    code = "IDENTITY_CHALLENGE_EXPIRED"


class SignatureInvalid(DomainError):
    code = "IDENTITY_SIGNATURE_INVALID"
