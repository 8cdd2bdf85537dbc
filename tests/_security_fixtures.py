"""Test machinery for Kafka security: a CA, a broker with secured listeners, an OIDC provider.

- :class:`CertificateAuthority` issues PEM certificates with ``cryptography`` (server
  certificates for 127.0.0.1, client certificates for mutual TLS, expired ones on request).
- :class:`OidcProvider` is a small identity provider on loopback: a JWKS document and a token
  endpoint for the client-credentials grant that issues RS256 JWTs. It runs uvicorn in a thread
  of its own, so a module-scoped broker can validate against it across tests (each test has its
  own event loop). Switches simulate an outage or tokens the broker must refuse.
- :func:`secure_broker` starts one Kafka broker with a listener per scheme under test.

Every server binds to 127.0.0.1 only and is stopped by whoever started it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.local.kafka import KafkaBroker, ListenerSpec, default_jars_dir

__all__ = [
    "AUDIENCE",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "PLAIN_USERS",
    "SCRAM_USERS",
    "CertificateAuthority",
    "IssuedCertificate",
    "OidcProvider",
    "SecureBroker",
    "create_topic",
    "secure_broker",
    "upsert_scram_user",
]

AUDIENCE = "kafka-broker"
CLIENT_ID = "ingress-poller"
# Distinctive values, so a test can search logs and messages for them.
CLIENT_SECRET = "oidc-secret-Zq8w1"
PLAIN_USERS = {"plainuser": "plain-pass-Hx71k"}
SCRAM_USERS = {"scramuser": "scram-pass-Tr55m"}

_HOST = "127.0.0.1"
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
_OAUTH_LOGIN = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
_OAUTH_VALIDATOR = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
)


# --------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class IssuedCertificate:
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, name: str, *, key_password: str | None = None) -> Path:
        """Write ``<name>.crt`` and ``<name>.key``; returns the certificate's path."""
        directory.mkdir(parents=True, exist_ok=True)
        cert = directory / f"{name}.crt"
        cert.write_bytes(self.cert_pem)
        key_pem = self.key_pem
        if key_password is not None:
            key = serialization.load_pem_private_key(self.key_pem, None)
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(key_password.encode()),
            )
        (directory / f"{name}.key").write_bytes(key_pem)
        return cert


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    # PKCS#8: the only unencrypted PEM key format the broker's PEM key store accepts.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, name: str = "kafka-ingress test CA") -> None:
        self._key = _rsa_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        server: bool = False,
        valid_days: tuple[float, float] = (-1, 30),
    ) -> IssuedCertificate:
        """A certificate valid from ``now + valid_days[0]`` to ``now + valid_days[1]`` days.

        Server certificates name 127.0.0.1 and localhost; the others are client certificates.
        """
        key = _rsa_key()
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=valid_days[0]))
            .not_valid_after(now + dt.timedelta(days=valid_days[1]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(_HOST)), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


# --------------------------------------------------------------------------------------------
# OIDC provider


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint_b64url(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass
class IssuedToken:
    token: str
    claims: dict[str, Any]


@dataclass
class OidcProvider:
    """JWKS + client-credentials token endpoint issuing RS256 JWTs, served from a thread.

    Switches (plain attributes, safe to flip from the test's thread): ``lifetime_s`` of new
    tokens, ``audience`` put into them (set a wrong one for tokens the broker must refuse),
    ``outage`` (the token endpoint answers 503) and ``client_secret`` (what it accepts).
    """

    lifetime_s: int = 300
    audience: str = AUDIENCE
    outage: bool = False
    client_secret: str = CLIENT_SECRET
    issued: list[IssuedToken] = field(default_factory=list)
    requests: int = 0
    _key: rsa.RSAPrivateKey = field(default_factory=_rsa_key)
    _kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{_HOST}:{self._port}"

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/jwks"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    def tokens(self) -> list[str]:
        return [t.token for t in self.issued]

    # -- the app ----------------------------------------------------------------------------

    def _jwk(self) -> dict[str, str]:
        numbers = self._key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self._kid,
            "n": _uint_b64url(numbers.n),
            "e": _uint_b64url(numbers.e),
        }

    def sign(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self._kid}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self._jwk()]})

    async def _token(self, request: Request) -> Response:
        self.requests += 1
        if self.outage:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        expected = base64.b64encode(f"{CLIENT_ID}:{self.client_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse(
                {"error": "invalid_client", "error_description": "client authentication failed"},
                status_code=401,
            )
        # Parsed by hand: Starlette's form parser needs python-multipart, for two fields.
        form = {k: v[-1] for k, v in urllib.parse.parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": CLIENT_ID,
            "aud": self.audience,
            "iat": now,
            "exp": now + self.lifetime_s,
            "scope": str(form.get("scope") or "kafka"),
            "jti": uuid.uuid4().hex,
        }
        token = self.sign(claims)
        self.issued.append(IssuedToken(token, claims))
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime_s}
        )

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/jwks", self._jwks, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind((_HOST, 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", log_config=None, access_log=False, lifespan="off"
        )
        server = uvicorn.Server(config)
        # uvicorn installs signal handlers only on the main thread, so none are installed here.
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            startup = server.startup

            async def announce(sockets: list[socket.socket] | None = None) -> None:
                await startup(sockets=sockets)
                ready.set()

            server.startup = announce  # type: ignore[method-assign]
            await server.serve(sockets=[sock])

        def run() -> None:
            try:
                asyncio.run(serve())
            except BaseException as exc:
                failure.append(exc)
            finally:
                sock.close()
                ready.set()

        self._server = server
        self._thread = threading.Thread(target=run, name=f"oidc:{self._port}", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure or not server.started:
            self.stop()
            raise RuntimeError(f"the OIDC provider did not start: {failure}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server, self._thread = None, None

    def __enter__(self) -> OidcProvider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# The broker


@dataclass(frozen=True)
class SecureBroker:
    """A running broker, its listeners by scheme, and the files a client needs."""

    broker: KafkaBroker
    ca: CertificateAuthority
    ca_file: Path
    client_cert: Path
    client_key: Path
    directory: Path

    @property
    def plaintext(self) -> str:
        return self.broker.bootstrap_servers

    def address(self, listener: str) -> str:
        return self.broker.listeners[listener]


def _jaas(module: str, **options: str) -> str:
    pairs = "".join(f' {key}="{value}"' for key, value in options.items())
    return f"{module} required{pairs};"


@contextlib.contextmanager
def secure_broker(directory: Path, oidc: OidcProvider) -> Iterator[SecureBroker]:
    """One broker with a listener per scheme; ``oidc`` must already be serving its JWKS.

    Listeners: ``SASL`` (SASL_PLAINTEXT: PLAIN and SCRAM-SHA-512), ``SSL`` (TLS),
    ``MTLS`` (TLS with a required client certificate), ``SASLSSL`` (SASL_SSL: PLAIN and
    SCRAM-SHA-512) and ``OAUTH`` (SASL_PLAINTEXT: OAUTHBEARER validated against ``oidc``).
    SCRAM users are created by the broker's storage tool.
    """
    ca = CertificateAuthority()
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    server = ca.issue("broker", server=True)
    keystore = directory / "broker-keystore.pem"
    keystore.write_bytes(server.key_pem + server.cert_pem + ca.cert_pem)
    client = ca.issue("ingress-client")
    client_cert = client.write(directory, "client")

    plain_jaas = _jaas(_PLAIN_LOGIN, **{f"user_{u}": p for u, p in PLAIN_USERS.items()})
    scram_jaas = _jaas(_SCRAM_LOGIN)
    sasl = {
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "plain.sasl.jaas.config": plain_jaas,
        "scram-sha-512.sasl.jaas.config": scram_jaas,
    }
    listeners = [
        ListenerSpec("SASL", "SASL_PLAINTEXT", sasl),
        ListenerSpec("SSL", "SSL"),
        ListenerSpec("MTLS", "SSL", {"ssl.client.auth": "required"}),
        ListenerSpec("SASLSSL", "SASL_SSL", sasl),
        ListenerSpec(
            "OAUTH",
            "SASL_PLAINTEXT",
            {
                "sasl.enabled.mechanisms": "OAUTHBEARER",
                "oauthbearer.sasl.jaas.config": _jaas(_OAUTH_LOGIN),
                "oauthbearer.sasl.server.callback.handler.class": _OAUTH_VALIDATOR,
                # Sessions end when their token expires, so every reconnect needs a fresh one.
                "oauthbearer.connections.max.reauth.ms": "600000",
            },
        ),
    ]
    properties = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca_file),
        "sasl.oauthbearer.jwks.endpoint.url": oidc.jwks_url,
        "sasl.oauthbearer.expected.audience": AUDIENCE,
        "sasl.oauthbearer.expected.issuer": oidc.issuer,
        # Kafka allows 30 s by default; tests with short-lived tokens need expiry to bite.
        "sasl.oauthbearer.clock.skew.seconds": "1",
    }
    broker = KafkaBroker(
        extra_listeners=listeners,
        extra_properties=properties,
        jvm_options=[f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={oidc.jwks_url}"],
        scram_users=[("SCRAM-SHA-512", u, p) for u, p in SCRAM_USERS.items()],
    )
    broker.start()
    try:
        yield SecureBroker(
            broker=broker,
            ca=ca,
            ca_file=ca_file,
            client_cert=client_cert,
            client_key=directory / "client.key",
            directory=directory,
        )
    finally:
        broker.stop()


async def create_topic(bootstrap: str, partitions: int = 1) -> str:
    """A new topic with a leader for every partition, created over ``bootstrap``."""
    name = f"sec-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (found,) = await admin.describe_topics([name])
            led = [p for p in found.get("partitions", []) if p.get("leader", -1) >= 0]
            if found.get("error_code") == 0 and len(led) == partitions:
                return name
            await asyncio.sleep(0.05)
        raise AssertionError(f"topic {name} has no leader for every partition")
    finally:
        await admin.close()


# The broker's Java admin client, run from source (JDK 11+ single-file launch): aiokafka has
# no AlterUserScramCredentials, and the kafka-configs tool is not among the broker's jars.
_SCRAM_ADMIN = """
import java.io.*;
import java.util.*;
import org.apache.kafka.clients.admin.*;

public class ScramAdmin {
    public static void main(String[] args) throws Exception {
        String password = new BufferedReader(new InputStreamReader(System.in)).readLine();
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        ScramMechanism mechanism = ScramMechanism.fromMechanismName(args[2]);
        try (Admin admin = Admin.create(props)) {
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(
                args[1], new ScramCredentialInfo(mechanism, 4096), password))).all().get();
        }
    }
}
"""


async def upsert_scram_user(
    bootstrap: str, user: str, password: str, mechanism: str = "SCRAM-SHA-512"
) -> None:
    """Create or update a SCRAM user through the broker's admin API (AlterUserScramCredentials).

    The password goes through stdin, not the command line.
    """
    with tempfile.TemporaryDirectory(prefix="scram-admin-") as directory:
        source = Path(directory) / "ScramAdmin.java"
        source.write_text(_SCRAM_ADMIN, encoding="utf-8")
        java = shutil.which("java", path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin"))
        process = await asyncio.create_subprocess_exec(
            java or "java",
            "-cp",
            f"{default_jars_dir()}{os.sep}*",
            str(source),
            bootstrap,
            user,
            mechanism,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(password.encode() + b"\n"), 60)
    if process.returncode != 0:
        raise AssertionError(f"AlterUserScramCredentials failed: {output.decode(errors='replace')}")
