"""The SSRF guard's address classification and URL checks (no network: resolvers are plain functions here)."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address

import httpx
import pytest

from app.outbound import OutboundConnectError, OutboundRefused
from app.outbound.guard import check_url, checked_addresses, non_public_reason, refusal
from app.settings import load_settings

NON_PUBLIC = [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("169.254.10.10", "link-local"), ("100.64.0.1", "CGNAT"), ("100.127.255.255", "CGNAT"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"), ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("192.0.2.5", "documentation"), ("198.18.0.1", "benchmarking"), ("192.0.0.8", "reserved"),
    ("::1", "loopback"), ("::", "unspecified"), ("fc00::1", "unique local"), ("fd12:3456::1", "unique local"),
    ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"), ("ff02::1", "multicast"), ("fec0::1", "site-local"),
    ("2001:db8::1", "documentation"), ("2001::1", "Teredo"), ("100::1", "discard"), ("64:ff9b:1::1", "NAT64"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"), ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.1.1", "IPv4-mapped link-local"), ("::ffff:0.0.0.0", "IPv4-mapped unspecified"),
    ("::127.0.0.1", "IPv4-compatible loopback"), ("::8.8.8.8", "IPv4-compatible"),
    ("64:ff9b::7f00:1", "NAT64 loopback"), ("64:ff9b::a00:1", "NAT64 private"),
    ("2002:7f00:1::", "6to4 loopback"), ("2002:c0a8:101::1", "6to4 private"), ("4000::1", "reserved"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.0", "172.32.0.1", "11.0.0.1",
          "2606:4700:4700::1111", "2a00:1450:4001:81b::200e", "::ffff:8.8.8.8", "64:ff9b::808:808",
          "2002:808:808::1"]


@pytest.mark.parametrize(("address", "expected"), NON_PUBLIC)
def test_non_public_addresses_are_named(address: str, expected: str) -> None:
    why = non_public_reason(ip_address(address.partition("%")[0]))
    assert why is not None and expected in why, why


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert non_public_reason(ip_address(address)) is None
    assert refusal(ip_address(address), allow_private=False) is None


@pytest.mark.parametrize("address", ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254",
                                     "169.254.170.2", "100.100.100.200", "64:ff9b::a9fe:a9fe"])
@pytest.mark.parametrize("allow_private", [False, True])
def test_cloud_metadata_is_refused_even_with_the_flag_on(address: str, allow_private: bool) -> None:
    assert refusal(ip_address(address), allow_private=allow_private) == "cloud metadata address"


@pytest.mark.parametrize(("address", "_why"), NON_PUBLIC)
def test_the_flag_lets_non_public_addresses_through(address: str, _why: str) -> None:
    ip = ip_address(address.partition("%")[0])
    assert refusal(ip, allow_private=False) is not None
    assert refusal(ip, allow_private=True) is None


def resolving(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> Sequence[str]:
        return table[host]

    return resolve


async def test_a_name_is_checked_on_every_address_it_resolves_to() -> None:
    mixed = resolving({"mixed.example": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(OutboundRefused, match=r"mixed\.example resolves to 10\.0\.0\.7: private address"):
        await checked_addresses("mixed.example", 443, allow_private=False, resolver=mixed)
    both = await checked_addresses("mixed.example", 443, allow_private=True, resolver=mixed)
    assert [str(a) for a in both] == ["93.184.216.34", "10.0.0.7"]


async def test_a_name_resolving_to_loopback_is_refused_unless_the_flag_is_on() -> None:
    local = resolving({"seller.invalid": ["127.0.0.1", "127.0.0.1"]})
    with pytest.raises(OutboundRefused, match="loopback") as refused:
        await checked_addresses("seller.invalid", 80, allow_private=False, resolver=local)
    assert refused.value.error_class == "ssrf-refused" and not refused.value.retryable
    assert [str(a) for a in await checked_addresses("seller.invalid", 80, allow_private=True, resolver=local)] == [
        "127.0.0.1"]  # deduplicated


async def test_literals_are_checked_without_resolving() -> None:
    async def never(host: str, port: int) -> Sequence[str]:
        raise AssertionError("an IP literal must not be resolved")

    with pytest.raises(OutboundRefused, match=r"192\.168\.0\.1: private address"):
        await checked_addresses("192.168.0.1", 80, allow_private=False, resolver=never)
    with pytest.raises(OutboundRefused, match="cloud metadata"):
        await checked_addresses("169.254.169.254", 80, allow_private=True, resolver=never)
    with pytest.raises(OutboundRefused, match="IPv4-mapped loopback"):
        await checked_addresses("[::ffff:7f00:1]", 80, allow_private=False, resolver=never)
    assert await checked_addresses("8.8.8.8", 80, allow_private=False, resolver=never) == [ip_address("8.8.8.8")]


async def test_a_name_resolving_to_metadata_is_refused_with_the_flag_on() -> None:
    gcp = resolving({"metadata.google.internal": ["169.254.169.254"]})
    with pytest.raises(OutboundRefused, match="cloud metadata"):
        await checked_addresses("metadata.google.internal", 80, allow_private=True, resolver=gcp)


async def test_an_empty_resolution_is_a_connect_error() -> None:
    with pytest.raises(OutboundConnectError):
        await checked_addresses("nothing.example", 80, allow_private=False, resolver=resolving({"nothing.example": []}))


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://example.com/x", "scheme 'ftp'"), ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://example.com/", "scheme 'gopher'"), ("//example.com/x", "scheme"),
    ("https://user:pass@example.com/", "userinfo"), ("https://token@example.com/", "userinfo"),
])
def test_only_http_urls_without_credentials(url: str, why: str) -> None:
    with pytest.raises(OutboundRefused, match=why):
        check_url(httpx.URL(url))


def test_plain_http_and_https_urls_pass() -> None:
    check_url(httpx.URL("https://seller.example:8443/run?x=1"))
    check_url(httpx.URL("http://[2606:4700::1]/"))


@pytest.mark.parametrize(("raw", "expected"), [("", False), ("true", True), ("off", False), ("1", True)])
def test_the_setting_is_off_by_default(raw: str, expected: bool) -> None:
    assert load_settings({"MM_ALLOW_PRIVATE_ENDPOINTS": raw}).allow_private_endpoints is expected


def test_a_typo_in_the_setting_stops_start_up() -> None:
    with pytest.raises(ValueError, match="MM_ALLOW_PRIVATE_ENDPOINTS must be true/false"):
        load_settings({"MM_ALLOW_PRIVATE_ENDPOINTS": "yes please"})
