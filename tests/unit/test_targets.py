"""Which addresses discovery and invocations may reach (:mod:`adapter.invokers.targets`)."""

from __future__ import annotations

import pytest

from adapter.invokers.targets import (
    GuardedResolver,
    RefusedAddressError,
    TargetRefused,
    check_target,
    literal_address,
    refusal,
)
from tests._http_fixtures import AnsweringResolver

METADATA_SPELLINGS = [
    "169.254.169.254",
    "169.254.169.254.",
    "2852039166",
    "0xa9fea9fe",
    "0xA9FEA9FE",
    "0251.0376.0251.0376",
    "0xa9.0xfe.0xa9.0xfe",
    "169.16689662",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[::169.254.169.254]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::a9fe:a9fe]",
    "[::ffff:0:a9fe:a9fe]",
    "[2001:0:4136:e378:8000:63bf:5601:5601]",  # Teredo, client 169.254.169.254 (inverted)
    "[2002:a9fe:a9fe::]",
    "[fd00:ec2::254]",
    "[fe80::1]",
    "[fe80::1%25eth0]",
    "169.254.1.1",
    "100.100.100.200",
]


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
@pytest.mark.parametrize("deny_private", [False, True])
def test_link_local_and_metadata_addresses_are_refused_in_every_spelling(
    host: str, deny_private: bool
) -> None:
    address = literal_address(host)
    assert address is not None, host
    assert refusal(address, deny_private=deny_private) is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "[::1]", "10.1.2.3", "192.168.0.1", "0"])
def test_loopback_and_private_addresses_are_allowed_unless_switched_off(host: str) -> None:
    address = literal_address(host)
    assert address is not None
    assert refusal(address, deny_private=False) is None
    assert "deny-private-targets" in (refusal(address, deny_private=True) or "")


@pytest.mark.parametrize("host", ["8.8.8.8", "[2001:4860:4860::8888]"])
def test_public_addresses_are_allowed(host: str) -> None:
    address = literal_address(host)
    assert address is not None
    assert refusal(address, deny_private=True) is None


def test_names_are_not_literals() -> None:
    assert literal_address("localhost") is None
    assert literal_address("cafe.example") is None


async def test_names_are_resolved_and_every_address_checked() -> None:
    await check_target("http://localhost:9/", deny_private=False)
    with pytest.raises(TargetRefused, match=r"resolves to 127\.0\.0\.1"):
        await check_target("http://localhost:9/", deny_private=True)
    with pytest.raises(TargetRefused, match="metadata"):
        await check_target("http://2852039166/latest/meta-data/", deny_private=False)


@pytest.mark.parametrize(
    "answer", [("169.254.169.254",), ("10.0.0.7", "169.254.169.254"), ("fe80::1%eth0",)]
)
async def test_the_resolver_refuses_any_answer_holding_a_refused_address(
    answer: tuple[str, ...],
) -> None:
    resolver = GuardedResolver(deny_private=False, inner=AnsweringResolver(*answer))
    with pytest.raises(RefusedAddressError, match=r"'rebound\.example' resolves to"):
        await resolver.resolve("rebound.example", 443)


async def test_the_resolver_passes_allowed_answers_through_and_closes_its_inner_one() -> None:
    inner = AnsweringResolver("10.0.0.7", "::1")
    resolver = GuardedResolver(deny_private=False, inner=inner)
    answers = await resolver.resolve("handler.example", 8080)
    assert [a["host"] for a in answers] == ["10.0.0.7", "::1"]
    with pytest.raises(RefusedAddressError, match="deny-private-targets"):
        await GuardedResolver(deny_private=True, inner=inner).resolve("handler.example", 8080)
    await resolver.close()
    assert inner.closed
