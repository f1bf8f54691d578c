"""The SSRF guard: which URLs and addresses an outbound call may reach, and the resolution it checks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import httpx

from app.outbound.errors import OutboundConnectError, OutboundRefused

IPAddress = IPv4Address | IPv6Address
# host, port -> the addresses it resolves to (strings, as getaddrinfo gives them). Injectable for tests.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Refused ALWAYS, even with MM_ALLOW_PRIVATE_ENDPOINTS on. The flag exists so a developer can reach a stub
# seller on loopback or a LAN; no seller ever lives on a cloud metadata service, and those hand out the
# host's cloud credentials to any local caller. A URL a seller registered must never turn our worker into
# their credential fetcher (the run records the response body, which the buyer then reads), whatever
# a deployment's flag says.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean instance metadata
    "169.254.170.2",  # AWS ECS task credentials
    "169.254.170.23",  # AWS EKS Pod Identity agent
    "fd00:ec2::254",  # AWS instance metadata over IPv6
    "fd00:ec2::23",  # AWS EKS Pod Identity agent over IPv6
    "100.100.100.200",  # Alibaba Cloud instance metadata
))

_V4_NON_PUBLIC: tuple[tuple[IPv4Network, str], ...] = tuple((IPv4Network(n), why) for n, why in (
    ("0.0.0.0/8", "unspecified"),  # "this network"; connecting to 0.0.0.0 reaches the local host on Linux
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "reserved (documentation)"),
    ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("198.51.100.0/24", "reserved (documentation)"),
    ("203.0.113.0/24", "reserved (documentation)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes the 255.255.255.255 broadcast address
))

_V6_NON_PUBLIC: tuple[tuple[IPv6Network, str], ...] = tuple((IPv6Network(n), why) for n, why in (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "private (local-use NAT64)"),
    ("100::/64", "reserved (discard-only)"),
    ("2001::/23", "reserved (IETF protocol assignments, Teredo)"),
    ("2001:db8::/32", "reserved (documentation)"),
    ("3fff::/20", "reserved (documentation)"),
    ("5f00::/16", "reserved (SRv6)"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "reserved (site-local)"),
    ("ff00::/8", "multicast"),
))
_V6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_V4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")


def embedded_ipv4(ip: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 form carries and routes to (mapped, compatible, NAT64, 6to4), named."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _V4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves, not compatible forms
        return "IPv4-compatible", IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        return "NAT64", IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def non_public_reason(ip: IPAddress) -> str | None:
    """Why an address is not on the public internet (loopback, private, ...), or None when it is."""
    if isinstance(ip, IPv4Address):
        return next((why for net, why in _V4_NON_PUBLIC if ip in net), None)
    inner = embedded_ipv4(ip)
    if inner is not None:
        form, v4 = inner
        why = non_public_reason(v4)
        if why is not None:
            return f"{form} {why}"
        # A public IPv4 behind a deprecated compatible address is still not a form anyone routes.
        return "reserved (IPv4-compatible)" if form == "IPv4-compatible" else None
    found = next((why for net, why in _V6_NON_PUBLIC if ip in net), None)
    if found is None and ip not in _V6_GLOBAL_UNICAST:
        return "reserved"  # outside 2000::/3 nothing is assigned for global unicast
    return found


def is_metadata(ip: IPAddress) -> bool:
    inner = embedded_ipv4(ip) if isinstance(ip, IPv6Address) else None
    return ip in METADATA_ADDRESSES or (inner is not None and inner[1] in METADATA_ADDRESSES)


def refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why the guard refuses an address (None: allowed). Metadata addresses are refused whatever the flag."""
    if is_metadata(ip):
        return "cloud metadata address"
    if allow_private:
        return None
    why = non_public_reason(ip)
    return f"{why} address" if why else None


def check_url(url: httpx.URL) -> None:
    """Refuse what is not an absolute http(s) URL with a host, or that carries credentials."""
    if url.scheme not in ("http", "https"):
        raise OutboundRefused(f"scheme {url.scheme or '(none)'!r} is not http or https")
    if url.userinfo:
        # Credentials in a URL end up in logs and traces; a token goes in the bearer parameter instead.
        raise OutboundRefused("credentials (userinfo) in the URL")
    if not url.host:
        raise OutboundRefused("the URL has no host")


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Every address the system resolver gives for a TCP connection to host:port."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundConnectError(f"cannot resolve {host}: {exc}") from None
    return [str(info[4][0]) for info in infos]


async def checked_addresses(host: str, port: int, *, allow_private: bool, resolver: Resolver) -> list[IPAddress]:
    """Resolve host once and check EVERY address: one refused address refuses the name.

    The caller connects only to what this returns, so a second lookup (DNS rebinding) never enters.
    """
    literal = _literal(host)
    raw = [host] if literal is not None else list(await resolver(host, port))
    addresses: list[IPAddress] = []
    for text in raw:
        ip = _literal(text)
        if ip is None:
            raise OutboundRefused(f"{host} resolved to something that is not an IP address")
        why = refusal(ip, allow_private=allow_private)
        if why is not None:
            shown = host if literal is not None else f"{host} resolves to {ip}"
            raise OutboundRefused(f"{shown}: {why}")
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise OutboundConnectError(f"{host} resolved to no address")
    return addresses


def _literal(text: str) -> IPAddress | None:
    try:
        # A scope id (fe80::1%eth0) says which interface, not which address: classify the address.
        return ip_address(text.strip("[]").partition("%")[0])
    except ValueError:
        return None
