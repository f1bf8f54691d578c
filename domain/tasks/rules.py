"""Pure task rules: what a valid task is, and what a seller's answer means for the task."""

from __future__ import annotations

from typing import Any

import msgspec

from domain.graph.rules import MAX_AMOUNT, MAX_NAME
from domain.runtime.rules import PROVIDER_KEY
from domain.shared.documents import check_depth
from domain.shared.errors import ValidationFailed
from domain.tasks.commands import STRATEGIES, Constraints

MAX_INPUT_BYTES = 64 * 1024
MAX_FALLBACKS = 5
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 100, 120_000
MAX_SELLER_LIST = 100
MAX_PROVIDER_KEYS = 32

# Failure codes of a finished task (the API answers them as problems with the matching status).
UPSTREAM_REJECTED, UPSTREAM_AUTH_FAILED = "UPSTREAM_REJECTED", "UPSTREAM_AUTH_FAILED"
UPSTREAM_FAILED, UPSTREAM_TIMEOUT = "UPSTREAM_FAILED", "UPSTREAM_TIMEOUT"
# A seller refusing our credentials is not the client's 401/403: relayed as a 502 so no client mistakes it.
AUTH_STATUSES = frozenset({401, 403, 407})

_encode = msgspec.json.Encoder().encode


def check_capability(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise ValidationFailed(f"capability must be a non-blank string of at most {MAX_NAME} characters",
                               field="capability")
    return name


def check_input(value: Any) -> None:
    check_depth(value, "input")
    if len(_encode(value)) > MAX_INPUT_BYTES:
        raise ValidationFailed(f"input is over {MAX_INPUT_BYTES} bytes once encoded as JSON", field="input")


def check_constraints(c: Constraints) -> Constraints:
    """Validated and normalised (provider keys lower-cased, lists de-duplicated in order)."""
    if c.strategy not in STRATEGIES:
        raise ValidationFailed(f"constraints.strategy must be one of {', '.join(STRATEGIES)}",
                               field="constraints.strategy")
    if not 0 <= c.fallbacks <= MAX_FALLBACKS:
        raise ValidationFailed(f"constraints.fallbacks must be between 0 and {MAX_FALLBACKS}",
                               field="constraints.fallbacks")
    if not MIN_TIMEOUT_MS <= c.timeout_ms <= MAX_TIMEOUT_MS:
        raise ValidationFailed(f"constraints.timeoutMs must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS}",
                               field="constraints.timeoutMs")
    if c.max_price is not None and not 0 <= c.max_price.amount <= MAX_AMOUNT:
        raise ValidationFailed(f"constraints.maxPrice.amount must be between 0 and {MAX_AMOUNT}",
                               field="constraints.maxPrice")
    keys = tuple(dict.fromkeys(k.strip().lower() for k in c.provider_keys))
    if len(keys) > MAX_PROVIDER_KEYS or any(not PROVIDER_KEY.match(k) for k in keys):
        raise ValidationFailed(f"constraints.providerKeys must be at most {MAX_PROVIDER_KEYS} slugs matching "
                               f"{PROVIDER_KEY.pattern}", field="constraints.providerKeys")
    for field, ids in (("allow", c.sellers_allow), ("deny", c.sellers_deny)):
        if len(ids) > MAX_SELLER_LIST:
            raise ValidationFailed(f"constraints.sellers.{field} holds at most {MAX_SELLER_LIST} machine ids",
                                   field=f"constraints.sellers.{field}")
    return msgspec.structs.replace(c, provider_keys=keys, sellers_allow=tuple(dict.fromkeys(c.sellers_allow)),
                                   sellers_deny=tuple(dict.fromkeys(c.sellers_deny)))


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    succeeded: bool
    retryable: bool  # worth trying the next seller on the route
    code: str | None  # the task's failure code should this be its last attempt


def classify(http_status: int | None, error_class: str | None) -> Verdict:
    """A seller's answer (or our failure to get one) as success, a final refusal, or a reason to fall back.

    Connect errors, timeouts, 429 and 5xx are the seller's transient trouble: the next fallback may serve.
    Other 4xx are the seller refusing this input: another seller of the same capability is not tried.
    """
    if error_class is None and http_status is not None and 200 <= http_status < 300:
        return Verdict(succeeded=True, retryable=False, code=None)
    if error_class == "timeout":
        return Verdict(succeeded=False, retryable=True, code=UPSTREAM_TIMEOUT)
    if http_status in AUTH_STATUSES:
        return Verdict(succeeded=False, retryable=False, code=UPSTREAM_AUTH_FAILED)
    if http_status is not None and 400 <= http_status < 500 and http_status != 429 and error_class in (None,
                                                                                                       "http-4xx"):
        return Verdict(succeeded=False, retryable=False, code=UPSTREAM_REJECTED)
    # 429, 5xx, 3xx (redirects are never followed), connect errors, refused addresses, oversized or invalid bodies.
    return Verdict(succeeded=False, retryable=True, code=UPSTREAM_FAILED)
