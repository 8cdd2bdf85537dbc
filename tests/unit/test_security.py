"""The security shell: TLS contexts from PEM files, aiokafka's security arguments."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapter.errors import ConfigError
from adapter.kafka.options import SecuritySettings, resolve_options
from adapter.kafka.security import build_ssl_context, consumer_security_kwargs

KEY_PASSWORD = "correct-horse-battery"


@dataclass(frozen=True)
class Pki:
    ca: Path
    ca_pem: str
    cert: Path
    key: Path
    encrypted_key: Path
    other_key: Path
    ca_dir: Path
    garbage: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: str | None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a client certificate signed by it, with plain and encrypted keys."""
    root = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Test CA"))
        .issuer_name(_name("Test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kafka-ingress"))
        .issuer_name(ca_cert.subject)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    ca = root / "ca.pem"
    ca.write_text(ca_pem)
    cert = root / "client.pem"
    cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    ca_dir = root / "cas"
    ca_dir.mkdir()
    (ca_dir / "ca.pem").write_text(ca_pem)
    garbage = root / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    return Pki(
        ca=ca,
        ca_pem=ca_pem,
        cert=cert,
        key=_write_key(root / "client.key", client_key, None),
        encrypted_key=_write_key(root / "client-enc.key", client_key, KEY_PASSWORD),
        other_key=_write_key(root / "other.key", ec.generate_private_key(ec.SECP256R1()), None),
        ca_dir=ca_dir,
        garbage=garbage,
    )


def tls(**fields: object) -> SecuritySettings:
    return SecuritySettings(protocol="SSL", **fields)  # type: ignore[arg-type]


def ca_subjects(context: ssl.SSLContext) -> list[object]:
    return [cert["subject"] for cert in context.get_ca_certs()]


# --------------------------------------------------------------------------------------------
# build_ssl_context


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_no_context_without_tls(protocol: str, pki: Pki) -> None:
    security = SecuritySettings(protocol=protocol, ssl_ca_location=str(pki.ca))  # type: ignore[arg-type]
    assert build_ssl_context(security) is None


def test_context_from_ca_file_verifies_chain_and_host(pki: Pki) -> None:
    context = build_ssl_context(tls(ssl_ca_location=str(pki.ca)))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert ((("commonName", "Test CA"),),) in ca_subjects(context)


def test_context_for_sasl_ssl(pki: Pki) -> None:
    context = build_ssl_context(SecuritySettings(protocol="SASL_SSL", ssl_ca_location=str(pki.ca)))
    assert context is not None
    assert ((("commonName", "Test CA"),),) in ca_subjects(context)


def test_context_from_ca_directory(pki: Pki) -> None:
    context = build_ssl_context(tls(ssl_ca_location=str(pki.ca_dir)))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("location", [None, "probe"])
def test_system_store_without_ca_or_with_probe(location: str | None) -> None:
    context = build_ssl_context(tls(ssl_ca_location=location))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_context_from_ca_pem(pki: Pki) -> None:
    context = build_ssl_context(tls(ssl_ca_pem=pki.ca_pem))
    assert context is not None
    assert ((("commonName", "Test CA"),),) in ca_subjects(context)


def test_client_certificate_and_plain_key(pki: Pki) -> None:
    context = build_ssl_context(
        tls(
            ssl_ca_location=str(pki.ca),
            ssl_certificate_location=str(pki.cert),
            ssl_key_location=str(pki.key),
        )
    )
    assert context is not None


def test_client_certificate_and_encrypted_key(pki: Pki) -> None:
    context = build_ssl_context(
        tls(
            ssl_ca_location=str(pki.ca),
            ssl_certificate_location=str(pki.cert),
            ssl_key_location=str(pki.encrypted_key),
            ssl_key_password=KEY_PASSWORD,
        )
    )
    assert context is not None


def test_certificate_file_holding_the_key_too(pki: Pki, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.cert.read_bytes() + pki.key.read_bytes())
    assert build_ssl_context(tls(ssl_certificate_location=str(bundle))) is not None


def test_endpoint_identification_none_keeps_chain_verification(pki: Pki) -> None:
    context = build_ssl_context(tls(ssl_ca_location=str(pki.ca), ssl_check_hostname=False))
    assert context is not None
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_verification_off_also_turns_off_the_host_check(pki: Pki) -> None:
    context = build_ssl_context(tls(ssl_ca_location=str(pki.ca), ssl_verify=False))
    assert context is not None
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_NONE


def test_context_from_resolved_librdkafka_options(pki: Pki) -> None:
    options = resolve_options(
        subscription_id="sub_1",
        bootstrap_servers=["b:9093"],
        cluster_options={
            "security.protocol": "ssl",
            "ssl.ca.location": str(pki.ca),
            "ssl.certificate.location": str(pki.cert),
            "ssl.key.location": str(pki.encrypted_key),
            "ssl.key.password": KEY_PASSWORD,
            "ssl.endpoint.identification.algorithm": "none",
        },
        subscription_options={},
    )
    context = build_ssl_context(options.security)
    assert context is not None
    assert context.check_hostname is False
    assert ((("commonName", "Test CA"),),) in ca_subjects(context)


# --------------------------------------------------------------------------------------------
# File problems name the option


@pytest.mark.parametrize(
    ("field", "option"),
    [
        ("ssl_ca_location", "ssl.ca.location"),
        ("ssl_certificate_location", "ssl.certificate.location"),
        ("ssl_key_location", "ssl.key.location"),
    ],
)
def test_missing_file_names_the_option(field: str, option: str, pki: Pki, tmp_path: Path) -> None:
    fields = {
        "ssl_ca_location": str(pki.ca),
        "ssl_certificate_location": str(pki.cert),
        "ssl_key_location": str(pki.key),
    }
    fields[field] = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError) as info:
        build_ssl_context(tls(**fields))
    assert str(info.value).startswith(f"option {option!r}: no such file or directory")
    assert "missing.pem" in str(info.value)


def test_ca_file_that_is_not_pem(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"^option 'ssl.ca.location': cannot load CA"):
        build_ssl_context(tls(ssl_ca_location=str(pki.garbage)))


def test_ca_pem_that_is_not_pem() -> None:
    with pytest.raises(ConfigError, match=r"^option 'ssl.ca.pem': not a PEM CA certificate"):
        build_ssl_context(tls(ssl_ca_pem="nonsense"))


def test_certificate_that_is_not_pem(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"^option 'ssl.certificate.location': no PEM cert"):
        build_ssl_context(
            tls(ssl_certificate_location=str(pki.garbage), ssl_key_location=str(pki.key))
        )


def test_key_that_is_not_pem(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"^option 'ssl.key.location': cannot load the private"):
        build_ssl_context(
            tls(ssl_certificate_location=str(pki.cert), ssl_key_location=str(pki.garbage))
        )


def test_encrypted_key_without_password_never_prompts(pki: Pki) -> None:
    with pytest.raises(ConfigError) as info:
        build_ssl_context(
            tls(ssl_certificate_location=str(pki.cert), ssl_key_location=str(pki.encrypted_key))
        )
    assert str(info.value) == (
        "option 'ssl.key.location': the private key is encrypted; set 'ssl.key.password'"
    )


def test_wrong_key_password_is_named_but_not_shown(pki: Pki) -> None:
    wrong = "not-the-password-123"
    with pytest.raises(ConfigError) as info:
        build_ssl_context(
            tls(
                ssl_certificate_location=str(pki.cert),
                ssl_key_location=str(pki.encrypted_key),
                ssl_key_password=wrong,
            )
        )
    message = str(info.value)
    assert message.startswith("option 'ssl.key.location': cannot load the private key")
    assert "'ssl.key.password' is wrong" in message
    assert wrong not in message
    assert info.value.__cause__ is None


def test_key_not_matching_the_certificate(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="does not match the certificate"):
        build_ssl_context(
            tls(ssl_certificate_location=str(pki.cert), ssl_key_location=str(pki.other_key))
        )


# --------------------------------------------------------------------------------------------
# consumer_security_kwargs


class StaticToken(AbstractTokenProvider):  # type: ignore[misc]
    async def token(self) -> str:
        return "token"


def test_plaintext_kwargs() -> None:
    assert consumer_security_kwargs(SecuritySettings()) == {"security_protocol": "PLAINTEXT"}


def test_tls_kwargs_carry_a_context(pki: Pki) -> None:
    kwargs = consumer_security_kwargs(tls(ssl_ca_location=str(pki.ca)))
    assert set(kwargs) == {"security_protocol", "ssl_context"}
    assert kwargs["security_protocol"] == "SSL"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


def test_a_given_context_is_reused() -> None:
    context = ssl.create_default_context()
    kwargs = consumer_security_kwargs(tls(), ssl_context=context)
    assert kwargs["ssl_context"] is context


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_password_kwargs(mechanism: str) -> None:
    security = SecuritySettings(
        protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username="alice",
        sasl_password="pw",
    )
    assert consumer_security_kwargs(security) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": "pw",
    }


def test_sasl_ssl_kwargs(pki: Pki) -> None:
    security = SecuritySettings(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password="pw",
        ssl_ca_location=str(pki.ca),
    )
    kwargs = consumer_security_kwargs(security)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"


def test_oauthbearer_uses_the_given_token_provider() -> None:
    provider = StaticToken()
    security = SecuritySettings(protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER")
    assert consumer_security_kwargs(security, provider) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "OAUTHBEARER",
        "sasl_oauth_token_provider": provider,
    }


def test_oauthbearer_without_token_provider() -> None:
    security = SecuritySettings(protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER")
    with pytest.raises(ConfigError, match="OAUTHBEARER needs a token provider"):
        consumer_security_kwargs(security)


def test_sasl_without_mechanism_or_credentials() -> None:
    with pytest.raises(ConfigError, match=r"needs sasl\.mechanism"):
        consumer_security_kwargs(SecuritySettings(protocol="SASL_SSL"))
    with pytest.raises(ConfigError, match=r"needs sasl\.username and sasl\.password"):
        consumer_security_kwargs(
            SecuritySettings(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")
        )


def test_sasl_settings_ignored_on_a_plain_protocol() -> None:
    security = SecuritySettings(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    assert consumer_security_kwargs(security) == {"security_protocol": "PLAINTEXT"}


# --------------------------------------------------------------------------------------------
# The kwargs are accepted by aiokafka as they are (construction only: no connection is made)


async def test_aiokafka_accepts_the_resolved_kwargs(pki: Pki) -> None:
    options = resolve_options(
        subscription_id="sub_1",
        bootstrap_servers=["127.0.0.1:1"],
        cluster_options={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "alice",
            "sasl.password": "pw",
            "ssl.ca.location": str(pki.ca),
        },
        subscription_options={
            "auto.offset.reset": "earliest",
            "client.rack": "az1",
            "fetch.wait.max.ms": "100",
            "fetch.min.bytes": "1",
            "fetch.max.bytes": "1048576",
            "max.partition.fetch.bytes": "1048576",
            "session.timeout.ms": "45000",
            "heartbeat.interval.ms": "3000",
            "max.poll.interval.ms": "60000",
            "partition.assignment.strategy": "roundrobin,range",
            "isolation.level": "read_uncommitted",
            "metadata.max.age.ms": "60000",
            "connections.max.idle.ms": "0",
            "retry.backoff.ms": "50",
            "check.crcs": "false",
            "compression.type": "gzip",
            "message.max.bytes": "2000000",
        },
    )
    security = consumer_security_kwargs(options.security)
    consumer = AIOKafkaConsumer("topic", **options.consumer_kwargs, **security)
    producer = AIOKafkaProducer(**options.producer_kwargs, **security)
    await consumer.stop()
    await producer.stop()


# --------------------------------------------------------------------------------------------
# The OIDC token endpoint's address


async def test_token_endpoint_name_resolving_to_the_metadata_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import socket

    from adapter.kafka.oidc import OidcTokenProvider, TokenEndpointError

    async def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    provider = OidcTokenProvider(
        token_endpoint_url="http://idp.example/token",
        client_id="ingress",
        client_secret="client-secret-Pz41",
    )
    try:
        with pytest.raises(TokenEndpointError) as info:
            await provider._request()
    finally:
        await provider._release()
    assert "169.254.169.254 is a cloud instance metadata service" in str(info.value)
    assert not info.value.retryable
    assert "client-secret-Pz41" not in str(info.value)
