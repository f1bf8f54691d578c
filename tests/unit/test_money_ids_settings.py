"""Shared value types (money, ids) and the settings loader (the one reader of the environment)."""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pytest

from app.settings import Settings, load_settings
from domain.shared.ids import NAMESPACE, derived_id, new_id
from domain.shared.money import Money

# --- money ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY"])
def test_money_accepts_iso_currency_codes(currency: str) -> None:
    assert Money(1250, currency) == Money(amount=1250, currency=currency)


@pytest.mark.parametrize("currency", ["usd", "US", "USDT", "", "U5D", " USD"])
def test_money_refuses_anything_but_three_upper_case_letters(currency: str) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(100, currency)


def test_money_decoding_validates_the_currency_too() -> None:
    assert msgspec.json.decode(b'{"amount": 5, "currency": "GBP"}', type=Money) == Money(5, "GBP")
    with pytest.raises(msgspec.ValidationError, match="ISO 4217"):
        msgspec.convert({"amount": 5, "currency": "gbp"}, Money)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"amount": 5.5, "currency": "GBP"}, Money)  # minor units are integers


def test_money_adds_and_subtracts_in_the_same_currency() -> None:
    assert Money(1000, "USD") + Money(250, "USD") == Money(1250, "USD")
    assert Money(1000, "USD") - Money(250, "USD") == Money(750, "USD")
    assert Money(100, "USD") - Money(250, "USD") == Money(-150, "USD")
    a = Money(7, "EUR")
    assert a + Money(0, "EUR") == a and a - a == Money(0, "EUR")


@pytest.mark.parametrize("op", [Money.__add__, Money.__sub__])
def test_money_refuses_to_mix_currencies(op: object) -> None:
    with pytest.raises(ValueError, match="cannot combine USD with EUR"):
        op(Money(100, "USD"), Money(100, "EUR"))  # type: ignore[operator]


def test_money_is_immutable() -> None:
    m = Money(1, "USD")
    with pytest.raises(AttributeError):
        m.amount = 2  # type: ignore[misc]


# --- ids ------------------------------------------------------------------------------------------


def test_derived_id_is_stable_for_the_same_parts() -> None:
    key_id = uuid.UUID("00000000-0000-0000-0000-000000000001")
    assert derived_id("idem", key_id, "k-1", 0) == derived_id("idem", key_id, "k-1", 0)
    assert derived_id("idem", key_id, "k-1", 0) == uuid.uuid5(NAMESPACE, f'["idem", "{key_id}", "k-1", 0]')
    assert derived_id("idem", key_id, "k-1", 0).version == 5


def test_derived_id_is_pinned_across_releases() -> None:
    # Stored event ids depend on this value: changing the namespace or the encoding breaks idempotent retries.
    assert NAMESPACE == uuid.UUID("6f1c1a52-3d0e-4c55-9a57-6d6d2d6d6b74")
    assert derived_id("account", "bootstrap-admin") == uuid.UUID("6f1c7f14-9d71-5a90-947c-0e24cce52d81")


@pytest.mark.parametrize(("a", "b"), [
    (("idem", "k-1", 0), ("idem", "k-1", 1)),
    (("idem", "k-1"), ("idem", "k-2")),
    (("a", "b"), ("b", "a")),
    (("ab",), ("a", "b")),
    (("cause", "x"), ("idem", "x")),
    (("a\x1fb",), ("a", "b")),
    ((None,), ("None",)),
])
def test_derived_id_differs_when_parts_differ(a: tuple[object, ...], b: tuple[object, ...]) -> None:
    assert derived_id(*a) != derived_id(*b)


def test_new_id_is_random() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.version == 4 for i in ids)


# --- settings -------------------------------------------------------------------------------------


def test_defaults_when_nothing_is_set() -> None:
    s = load_settings({})
    assert s == Settings()
    assert (s.database_url, s.broker_url, s.host, s.port, s.cors_origins, s.allow_query_api_key) == (
        None, None, "127.0.0.1", 8000, (), False,
    )
    assert s.data_dir == Path(".data")


def test_empty_values_fall_back_to_defaults() -> None:
    assert load_settings({"MM_PORT": "", "MM_CORS_ORIGINS": "", "MM_ALLOW_QUERY_API_KEY": ""}) == Settings()


def test_numbers_are_parsed() -> None:
    s = load_settings({
        "MM_PORT": "9001", "MM_POOL_MIN_SIZE": "1", "MM_POOL_MAX_SIZE": "50", "MM_STATEMENT_TIMEOUT_MS": "2500",
        "MM_PROJECTION_POLL_INTERVAL_S": "0.25", "MM_CHALLENGE_TTL_SECONDS": "60",
    })
    assert (s.port, s.pool_min_size, s.pool_max_size, s.statement_timeout_ms) == (9001, 1, 50, 2500)
    assert isinstance(s.port, int)
    assert s.projection_poll_interval_s == 0.25
    assert s.challenge_ttl_seconds == 60


def test_strings_and_paths() -> None:
    s = load_settings({
        "MM_DATABASE_URL": "postgresql://u:p@db:5432/mm", "MM_BROKER_URL": "amqp://rabbit", "MM_HOST": "0.0.0.0",
        "MM_DATA_DIR": "/var/lib/mm", "MM_ADMIN_TOKEN": "secret", "MM_LOG_LEVEL": "DEBUG",
    })
    assert (s.database_url, s.broker_url, s.host, s.admin_token, s.log_level) == (
        "postgresql://u:p@db:5432/mm", "amqp://rabbit", "0.0.0.0", "secret", "DEBUG",
    )
    assert s.data_dir == Path("/var/lib/mm")


def test_cors_origins_is_a_comma_separated_list() -> None:
    s = load_settings({"MM_CORS_ORIGINS": " https://a.example ,https://b.example,, "})
    assert s.cors_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True),
    ("0", False), ("false", False), ("no", False), ("off", False),
])
def test_booleans(raw: str, expected: bool) -> None:
    assert load_settings({"MM_ALLOW_QUERY_API_KEY": raw}).allow_query_api_key is expected


@pytest.mark.parametrize("raw", ["ture", "2", "enabled", "y", "false-ish"])
def test_an_unknown_boolean_fails_at_load_naming_the_variable(raw: str) -> None:
    """Not read as false: a typo in a security switch must stop start-up, not silently pick a side."""
    with pytest.raises(ValueError, match=f"MM_ALLOW_QUERY_API_KEY must be true/false.*got '{raw}'"):
        load_settings({"MM_ALLOW_QUERY_API_KEY": raw})


@pytest.mark.parametrize("env", [{"MM_PORT": "eighty"}, {"MM_POOL_MAX_SIZE": "1.5"},
                                 {"MM_PROJECTION_POLL_INTERVAL_S": "fast"}])
def test_a_bad_number_fails_at_load(env: dict[str, str]) -> None:
    with pytest.raises(msgspec.ValidationError):
        load_settings(env)


def test_unrelated_variables_are_ignored() -> None:
    assert load_settings({"PATH": "/bin", "PORT": "1", "MM_UNKNOWN": "x"}) == Settings()


def test_without_an_explicit_env_it_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_PORT", "8123")
    assert load_settings().port == 8123


@pytest.mark.parametrize("amount", [1.5, True, "10"])
def test_money_refuses_non_integer_amounts(amount: object) -> None:
    with pytest.raises(ValueError, match="integer"):
        Money(amount, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("env", [
    {"MM_ALLOW_QUERY_API_KEY": "ture"},
    {"MM_PORT": "-5"},
    {"MM_PORT": "70000"},
    {"MM_POOL_MIN_SIZE": "30", "MM_POOL_MAX_SIZE": "10"},
])
def test_settings_refuse_bad_values_at_start_up(env: dict[str, str]) -> None:
    with pytest.raises((ValueError, msgspec.ValidationError)):
        load_settings(env)
