"""Which network addresses the poller may send requests to (discovery and invocations).

A deployment URI is chosen by whoever holds the admin token, and the poller then sends
requests there from inside its network: without a guard, ``http://169.254.169.254/`` would
turn discovery into a reader of the cloud's instance metadata (credentials included). So:

* **always refused**: link-local addresses (``169.254.0.0/16``, ``fe80::/10``) and the cloud
  metadata services (``169.254.169.254``, AWS's ``fd00:ec2::254``, Alibaba's
  ``100.100.100.200``), in every spelling: IPv4-mapped and other IPv6 embeddings
  (``::ffff:169.254.169.254``, NAT64, IPv4-translated, 6to4, Teredo), and the numeric forms
  the C library and browsers accept (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``);
  multicast, broadcast and reserved addresses too;
* **allowed unless** ``[security] deny-private-targets = true``: loopback, private networks
  (RFC 1918, ``fc00::/7``, ``100.64.0.0/10``) and the unspecified address — handlers usually
  live in a VPC or, in development, on the same machine.

The host name is resolved and *every* address it resolves to must be allowed. The check runs
when a deployment is registered (before discovery connects) and when the poller invokes a
deployment, again at most every :data:`RECHECK_S` seconds. Between two checks a DNS name may
start resolving to a refused address (DNS rebinding), so every aiohttp session that sends
requests to addresses chosen through the admin API (invocations, discovery, OIDC token
requests) resolves names through :class:`GuardedResolver`, which checks each answer before
aiohttp connects: a connection is never made to a refused address. The optional pyreqwest
client offers no such hook; with it the periodic check is all there is (docs/security.md).

:func:`refusal` is pure; :func:`check_target` and :class:`GuardedResolver` add name resolution.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from adapter.errors import ValidationError

__all__ = [
    "RECHECK_S",
    "GuardedResolver",
    "RefusedAddressError",
    "TargetRefused",
    "check_target",
    "literal_address",
    "refusal",
]

RECHECK_S = 30.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
_ALWAYS_REFUSED = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("224.0.0.0/4"),
    ipaddress.ip_network("240.0.0.0/4"),  # reserved, and 255.255.255.255
    ipaddress.ip_network("ff00::/8"),
)
# IPv6 prefixes whose last 32 bits are an IPv4 address a translator connects to.
_TRANSLATED = (
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64's well-known prefix (RFC 6052)
    ipaddress.ip_network("64:ff9b:1::/48"),  # NAT64's local-use prefix (RFC 8215)
    ipaddress.ip_network("::ffff:0:0:0/96"),  # IPv4-translated addresses (RFC 2765)
)
_NUMERIC_CHARS = frozenset("0123456789abcdefxABCDEFX.")


class TargetRefused(ValidationError):
    """The deployment's address is one the poller must not send requests to."""


class RefusedAddressError(OSError):
    """A name resolved, when about to connect, to an address the poller must not connect to.

    An ``OSError`` because that is what aiohttp expects of a resolver: it comes back as the
    ``os_error`` of aiohttp's ``ClientConnectorDNSError``, and nothing was sent."""


def literal_address(host: str) -> Address | None:
    """The address a host *literal* stands for, in any spelling the C library accepts
    (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``[::1]``); None for a name."""
    text = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        pass
    if not text or not all(c in _NUMERIC_CHARS for c in text):
        return None
    try:
        # inet_aton is pure parsing (no I/O) and accepts exactly the numeric spellings that
        # getaddrinfo, and so every HTTP client, would connect to.
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a packet to ``address`` may end up at (mapped, 6to4, Teredo's
    server and client, translated)."""
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    if any(address in prefix for prefix in _TRANSLATED):
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d
        return (ipaddress.IPv4Address(int(address)),)
    return ()


def refusal(address: Address, *, deny_private: bool) -> str | None:
    """Why requests to ``address`` are refused, or None when they are allowed."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).partition("%")[0])
        embedded = _embedded_ipv4(address)
        if embedded:
            for inner in embedded:
                reason = refusal(inner, deny_private=deny_private)
                if reason:
                    return f"{reason} (embedded in {address})"
            return None
    if address in _METADATA:
        return f"{address} is a cloud instance metadata service"
    if any(address in network for network in _ALWAYS_REFUSED):
        return f"{address} is a link-local, multicast or reserved address"
    if deny_private and (address.is_loopback or address.is_private or address.is_unspecified):
        return (
            f"{address} is a loopback or private address and [security] deny-private-targets is set"
        )
    return None


def _refuse(uri: str, host: str, reason: str) -> TargetRefused:
    return TargetRefused(
        f"deployment address {host!r} is not allowed: {reason}; requests to link-local and "
        "cloud metadata addresses are always refused (see docs/security.md#threat-model)"
    )


async def check_target(uri: str, *, deny_private: bool) -> None:
    """Raise :class:`TargetRefused` if ``uri``'s host is, or resolves to, a refused address."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    literal = literal_address(host)
    if literal is not None:
        reason = refusal(literal, deny_private=deny_private)
        if reason:
            raise _refuse(uri, host, reason)
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValidationError(f"the port of {host!r} is invalid") from exc
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValidationError(f"cannot resolve {host!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
        reason = refusal(address, deny_private=deny_private)
        if reason:
            raise _refuse(uri, host, f"it resolves to {reason}")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, with every answer checked by :func:`refusal` before aiohttp
    connects to it: whatever a name resolved to at the last :func:`check_target`, no
    connection is made to a refused address (DNS rebinding). Host literals never reach a
    resolver; :func:`check_target` refuses those. aiohttp caches the answers it connected
    with (``ttl_dns_cache``), only ever ones that passed.

    A session's connector does not close a resolver it was given: its owner does
    (:meth:`close`). Make it inside the running event loop (the default resolver binds to it).
    """

    def __init__(self, *, deny_private: bool, inner: AbstractResolver | None = None) -> None:
        self._deny_private = deny_private
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            address = ipaddress.ip_address(answer["host"].partition("%")[0])
            reason = refusal(address, deny_private=self._deny_private)
            if reason:
                # All or nothing, as check_target: a name with one refused address is refused.
                raise RefusedAddressError(
                    f"{host!r} resolves to {reason}; requests to link-local and cloud metadata "
                    "addresses are always refused (see docs/security.md#threat-model)"
                )
        return answers

    async def close(self) -> None:
        await self._inner.close()
