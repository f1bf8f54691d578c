"""Webhook signatures (Stripe's scheme) and the retry schedule, without I/O."""

from __future__ import annotations

import hashlib
import hmac
import random

from domain.webhooks.backoff import next_delay_s
from domain.webhooks.signing import sign, signature_header, verify

BODY = b'{"specversion":"1.0","id":"x"}'


def test_the_signature_is_hmac_sha256_of_t_dot_body_in_hex() -> None:
    expected = hmac.new(b"whsec_a", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign("whsec_a", 1700000000, BODY) == expected
    assert signature_header(["whsec_a"], 1700000000, BODY) == f"t=1700000000,v1={expected}"


def test_two_secrets_give_two_v1_and_either_verifies() -> None:
    header = signature_header(["whsec_new", "whsec_old"], 1700000000, BODY)
    assert header.count("v1=") == 2
    assert verify(header, "whsec_new", BODY, 1700000000) and verify(header, "whsec_old", BODY, 1700000000)
    assert not verify(header, "whsec_other", BODY, 1700000000)


def test_a_changed_body_or_a_stale_timestamp_fails() -> None:
    header = signature_header(["whsec_a"], 1700000000, BODY)
    assert not verify(header, "whsec_a", BODY + b" ", 1700000000)
    assert not verify(header, "whsec_a", BODY, 1700000000 + 301)
    assert not verify("v1=" + sign("whsec_a", 1, BODY), "whsec_a", BODY, 1)  # no t


def test_backoff_doubles_within_the_cap_with_jitter_in_the_upper_half() -> None:
    rand = random.Random(7)
    for attempts, step in ((1, 30), (2, 60), (3, 120), (12, 21600)):
        d = next_delay_s(attempts, 30, 21600, rand)
        assert step / 2 <= d <= step
