"""AWS MSK IAM: the option (Restate's spelling) and the token provider, with botocore's own
credential stubs (static session credentials, a Stubber on STS) and no network."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
import urllib.parse
from typing import Any

import botocore.session
import pytest
from botocore.credentials import CredentialResolver
from botocore.stub import Stubber

from adapter.errors import ConfigError, KafkaAuthError
from adapter.kafka.errors import TokenUnavailableError
from adapter.kafka.msk_iam import MskIamTokenProvider
from adapter.kafka.oidc import TokenState, provider_for
from adapter.kafka.options import MskIamSettings, SecuritySettings, resolve_options
from tests.harness import eventually

ACCESS_KEY, SECRET_KEY, SESSION_TOKEN = "AKIDBASE0000EXAMPLE", "base-secret-Xq81", "base-session"
ROLE_KEY, ROLE_SECRET, ROLE_TOKEN = "ASIAROLE000EXAMPLE", "role-secret-Pz27", "role-session-tok"
ROLE_ARN = "arn:aws:iam::123456789012:role/kafka-ingress-reader"
SECRETS = (SECRET_KEY, SESSION_TOKEN, ROLE_SECRET, ROLE_TOKEN)


def msk_options(config: str, **more: str) -> dict[str, str]:
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.config": config,
        **more,
    }


def _resolve(options: dict[str, str]) -> SecuritySettings:
    return resolve_options(
        subscription_id="s",
        bootstrap_servers=["b-1.example.kafka.us-east-1.amazonaws.com:9098"],
        cluster_options={},
        subscription_options=options,
    ).security


def security_of(options: dict[str, str]) -> SecuritySettings:
    return _resolve(options)


def error_of(options: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        _resolve(options)
    return str(caught.value)


def static_session(region: str | None = None) -> botocore.session.Session:
    session = botocore.session.Session()
    session.set_credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    if region:
        session.set_config_variable("region", region)
    return session


def decode(token: str) -> tuple[urllib.parse.SplitResult, dict[str, str]]:
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parts = urllib.parse.urlsplit(url)
    return parts, dict(urllib.parse.parse_qsl(parts.query))


@pytest.fixture
async def providers() -> Any:
    made: list[MskIamTokenProvider] = []

    def make(settings: MskIamSettings, **kwargs: Any) -> MskIamTokenProvider:
        provider = MskIamTokenProvider(settings, **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="adapter")
    return caplog


# --------------------------------------------------------------------------------------------
# The option


def test_restates_spelling_selects_msk_iam() -> None:
    security = security_of(msk_options("provider=msk-iam,region=eu-west-1"))
    assert security.oauthbearer_msk_iam == MskIamSettings(region="eu-west-1")
    assert security.oauthbearer_method == "default"
    full = security_of(
        msk_options(
            f"provider=msk-iam, region=us-east-2, profile=prod, role_arn={ROLE_ARN}, "
            "role_session_name=poller-1"
        )
    )
    assert full.oauthbearer_msk_iam == MskIamSettings(
        region="us-east-2", profile="prod", role_arn=ROLE_ARN, role_session_name="poller-1"
    )
    with pytest.raises(KafkaAuthError, match="profile \\(prod\\) could not be found"):
        provider_for(full)
    plain = security_of(msk_options(f"provider=msk-iam,role_arn={ROLE_ARN}"))
    assert isinstance(provider_for(plain), MskIamTokenProvider)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ("principal=admin", "with the keys provider, region, profile, role_arn"),
        ("provider=oidc", "only provider=msk-iam (AWS MSK IAM) is supported"),
        ("region=us-east-1", "only provider=msk-iam"),
        ("provider=msk-iam,region=Frankfurt", "region=<an AWS region such as us-east-1>"),
        ("provider=msk-iam,role_arn=reader", "role_arn=arn:aws:iam::<account>:role/<name>"),
        ("provider=msk-iam,role_session_name=x1", "only together with role_arn"),
        ("", "expected a non-empty string"),
    ],
)
def test_bad_configs_name_the_option(config: str, fragment: str) -> None:
    message = error_of(msk_options(config))
    assert "'sasl.oauthbearer.config'" in message
    assert fragment in message


def test_one_token_source_only() -> None:
    both = msk_options("provider=msk-iam", **{"sasl.oauthbearer.method": "oidc"})
    assert "two token sources; set only one" in error_of(both)
    neither = msk_options("provider=msk-iam")
    del neither["sasl.oauthbearer.config"]
    assert "provider=msk-iam,region=<region>" in error_of(neither)


# --------------------------------------------------------------------------------------------
# The token provider


async def test_a_token_is_a_presigned_kafka_connect_url(providers: Any) -> None:
    provider = providers(MskIamSettings(region="eu-central-1"), session=static_session())
    token = await provider.token()
    parts, query = decode(token)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "kafka.eu-central-1.amazonaws.com",
        "/",
    )
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    key, _date, region, service, scope = query["X-Amz-Credential"].split("/")
    assert (key, region, service, scope) == (
        ACCESS_KEY,
        "eu-central-1",
        "kafka-cluster",
        "aws4_request",
    )
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-Security-Token"] == SESSION_TOKEN
    assert len(query["X-Amz-Signature"]) == 64
    assert query["User-Agent"].startswith("aws-msk-iam-sasl-signer-python/")
    assert SECRET_KEY not in base64.urlsafe_b64decode(token + "==").decode()
    # Cached: the next connection gets the same token without signing again.
    assert await provider.token() == token
    assert provider.fetched == 1
    status = provider.status()
    assert status["state"] == TokenState.VALID
    assert status["token_endpoint"] == "AWS MSK IAM (eu-central-1)"
    assert 880 < status["expires_in_s"] <= 900


async def test_the_region_comes_from_the_aws_configuration_when_not_given(
    providers: Any,
) -> None:
    provider = providers(MskIamSettings(), session=static_session(region="ap-southeast-2"))
    parts, _ = decode(await provider.token())
    assert parts.netloc == "kafka.ap-southeast-2.amazonaws.com"
    bare = botocore.session.Session()
    bare.set_credentials(ACCESS_KEY, SECRET_KEY)
    bare.set_config_variable("region", None)
    assert providers(MskIamSettings(), session=bare).region == "us-east-1"


async def test_the_token_is_refreshed_before_it_expires(providers: Any) -> None:
    # The wall clock runs 898 s ahead: the 900 s token has 2 s left when signed, so the
    # refresher must replace it at 80% of that, before it expires.
    provider = providers(
        MskIamSettings(region="us-east-1"),
        session=static_session(),
        wall_clock=lambda: time.time() + 898,
    )
    first = await provider.token()
    first_expiry = provider._token.expires_at if provider._token else 0.0
    await eventually(lambda: provider.fetched >= 2, timeout=10)
    assert time.monotonic() < first_expiry, "refreshed while the first token was valid"
    second = await provider.token()
    assert second != first
    assert decode(second)[1]["X-Amz-Date"] > decode(first)[1]["X-Amz-Date"]


def _sts(
    session: botocore.session.Session, expiries: list[dt.datetime]
) -> tuple[Stubber, list[Any]]:
    sts = session.create_client("sts", region_name="us-east-1")
    stubber = Stubber(sts)
    for n, expiry in enumerate(expiries):
        stubber.add_response(
            "assume_role",
            {
                "Credentials": {
                    "AccessKeyId": f"{ROLE_KEY}{n}",
                    "SecretAccessKey": ROLE_SECRET,
                    "SessionToken": f"{ROLE_TOKEN}{n}",
                    "Expiration": expiry,
                },
                "AssumedRoleUser": {"AssumedRoleId": "AROAEXAMPLE:s", "Arn": f"{ROLE_ARN}/s"},
            },
            {"RoleArn": ROLE_ARN, "RoleSessionName": "poller-1"},
        )
    stubber.activate()
    created: list[Any] = []

    def client_creator(service: str, **kwargs: Any) -> Any:
        created.append((service, kwargs.get("region_name")))
        return sts

    return stubber, [client_creator, created]


async def test_a_role_is_assumed_and_assumed_again_before_its_session_ends(
    providers: Any,
) -> None:
    session = static_session()
    now = dt.datetime.now(dt.UTC)
    # A role session with 33 s left, then one of an hour: the first token must not outlive
    # its session (30 s margin), so it is replaced 2.4 s later, and that signing assumes the
    # role again (botocore renews a session with less than ten minutes left).
    stubber, (creator, created) = _sts(
        session, [now + dt.timedelta(seconds=33), now + dt.timedelta(hours=1)]
    )
    settings = MskIamSettings(region="us-west-2", role_arn=ROLE_ARN, role_session_name="poller-1")
    provider = providers(settings, session=session, client_creator=creator)
    first = decode(await provider.token())[1]
    assert first["X-Amz-Credential"].startswith(f"{ROLE_KEY}0/")
    assert first["X-Amz-Security-Token"] == f"{ROLE_TOKEN}0"
    assert provider.status()["expires_in_s"] <= 3.5
    assert provider.status()["client_id"] == ROLE_ARN
    assert created == [("sts", "us-west-2")]
    await eventually(lambda: provider.fetched >= 2, timeout=15)
    second = decode(await provider.token())[1]
    assert second["X-Amz-Credential"].startswith(f"{ROLE_KEY}1/")
    assert second["X-Amz-Security-Token"] == f"{ROLE_TOKEN}1"
    stubber.assert_no_pending_responses()


async def test_a_refused_role_is_reported_without_credentials(
    providers: Any, logs: pytest.LogCaptureFixture
) -> None:
    session = static_session()
    sts = session.create_client("sts", region_name="us-east-1")
    stubber = Stubber(sts)
    stubber.add_client_error(
        "assume_role", service_error_code="AccessDenied", service_message="not authorized"
    )
    stubber.activate()
    provider = providers(
        MskIamSettings(role_arn=ROLE_ARN),
        session=session,
        client_creator=lambda *_a, **_k: sts,
        backoff_initial_s=30,
    )
    with pytest.raises(TokenUnavailableError) as caught:
        await provider.token()
    message = str(caught.value)
    assert f"STS refused to assume {ROLE_ARN}: AccessDenied: not authorized" in message
    assert provider.status()["state"] == TokenState.UNAVAILABLE
    for text in (message, repr(provider), str(provider.status()), logs.text):
        assert not any(secret in text for secret in SECRETS)


async def test_no_credentials_at_all_is_a_clear_error(providers: Any) -> None:
    session = botocore.session.Session()
    session.register_component("credential_provider", CredentialResolver(providers=[]))
    provider = providers(MskIamSettings(region="us-east-1"), session=session, backoff_initial_s=30)
    with pytest.raises(TokenUnavailableError, match="no AWS credentials found by the default"):
        await provider.token()
