"""Secret references: parsing (pure) and the resolver's cache, with an in-process fetcher."""

from __future__ import annotations

import pytest

from adapter.errors import ConfigError
from adapter.secrets import SecretRef, SecretResolver, check_references, parse_reference

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kafka-AbCdEf"


def test_references_are_parsed() -> None:
    assert parse_reference("plain-password") is None
    assert parse_reference("secretsmanager:prod/kafka") == SecretRef("secretsmanager", "prod/kafka")
    assert parse_reference("secretsmanager:prod/kafka:password") == SecretRef(
        "secretsmanager", "prod/kafka", "password"
    )
    assert parse_reference(f"secretsmanager:{ARN}") == SecretRef("secretsmanager", ARN)
    assert parse_reference(f"secretsmanager:{ARN}:pw") == SecretRef("secretsmanager", ARN, "pw")
    # A JSON key may itself hold colons.
    assert parse_reference("secretsmanager:s:a:b") == SecretRef("secretsmanager", "s", "a:b")
    assert parse_reference("ssm:/prod/kafka/pw") == SecretRef("ssm", "/prod/kafka/pw")
    assert str(SecretRef("secretsmanager", "s", "k")) == "secretsmanager:s:k"
    for bad, why in [
        ("secretsmanager:", "name"),
        ("secretsmanager::key", "name"),
        ("secretsmanager:s:", "empty"),
        ("secretsmanager:arn:aws:kms:eu-west-1:1:key:x", "ARN"),
        ("ssm:", "parameter name"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_reference(bad)


@pytest.mark.promise("p-sec-reference-malformed")
def test_malformed_references_in_secret_options_name_the_option() -> None:
    check_references({"sasl.password": "ssm:/a", "client.id": "ssm:"})  # not a secret option
    with pytest.raises(ConfigError, match=r"'sasl\.password'"):
        check_references({"sasl.password": "ssm:"})


class Fetcher:
    def __init__(self) -> None:
        self.values = {SecretRef("ssm", "/pw"): "one"}
        self.calls = 0

    def fetch(self, ref: SecretRef) -> str:
        self.calls += 1
        if ref not in self.values:
            raise ConfigError(f"{ref}: no such parameter")
        return self.values[ref]


@pytest.mark.promise("p-sec-reference-rotation")
async def test_resolver_caches_until_invalidated_or_expired() -> None:
    now = [0.0]
    fetcher = Fetcher()
    resolver = SecretResolver(fetcher, ttl_s=60, clock=lambda: now[0])
    options = {"sasl.password": "ssm:/pw", "client.id": "ssm:/pw", "sasl.username": "u"}
    resolved = await resolver.resolve_options(options)
    # Only secret options are references; other values are kept byte for byte.
    assert resolved == {"sasl.password": "one", "client.id": "ssm:/pw", "sasl.username": "u"}
    fetcher.values[SecretRef("ssm", "/pw")] = "two"  # rotated
    assert (await resolver.resolve_options(options))["sasl.password"] == "one"
    resolver.invalidate()  # what an authentication failure does
    assert (await resolver.resolve_options(options))["sasl.password"] == "two"
    fetcher.values[SecretRef("ssm", "/pw")] = "three"
    now[0] += 61
    assert (await resolver.resolve_options(options))["sasl.password"] == "three"
    assert fetcher.calls == 3
    with pytest.raises(ConfigError, match=r"option 'sasl.password': ssm:/gone: no such"):
        await resolver.resolve_options({"sasl.password": "ssm:/gone"})


def test_references_are_stored_as_written_and_values_are_sealed() -> None:
    from adapter.store.sealing import has_userinfo, is_secret_option_value

    assert not is_secret_option_value("sasl.password", "secretsmanager:kafka/ingress:password")
    assert not is_secret_option_value("sasl.password", "ssm:/kafka/password")
    assert is_secret_option_value("sasl.password", "hunter2")
    assert is_secret_option_value("sasl.password", "ssm:")  # malformed: treated as a value
    assert is_secret_option_value("sasl.oauthbearer.token.endpoint.url", "https://u:p@idp/t")
    assert not is_secret_option_value("sasl.oauthbearer.token.endpoint.url", "https://idp/t")
    assert not is_secret_option_value("client.id", "ssm:/x")
    assert has_userinfo("http://user@host/")
    assert not has_userinfo("mailto:a@b")
    assert not has_userinfo("https://host/path?who=a@b")
