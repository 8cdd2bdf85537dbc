"""Request signing (poller) and verification (SDK): valid accepted; missing, expired,
tampered, misaddressed and foreign signatures rejected with 401."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from adapter.config import SigningSettings
from adapter.errors import ConfigError
from adapter.invokers.base import InvocationRequest
from adapter.invokers.signing import RequestSigner, audience, main, public_key_text
from adapter.model import Deployment, HandlerType, InputKind, ServiceType, Target
from adapter.sdk import Context, Endpoint, VirtualObject
from adapter.sdk.identity import (
    IdentityError,
    IdentityVerifier,
    b58decode,
    b58encode,
    parse_public_key,
)

NOW = float(int(time.time()))

obj = VirtualObject("Acct")


@obj.handler()
def apply(ctx: Context, body: dict[str, int]) -> dict[str, int]:
    return body


def _target(keyed: bool = True) -> Target:
    return Target(
        "Acct",
        "apply",
        ServiceType.VIRTUAL_OBJECT if keyed else ServiceType.SERVICE,
        HandlerType.EXCLUSIVE if keyed else HandlerType.SERVICE,
        InputKind.JSON,
        Deployment("dp_1", uri="http://h"),
    )


def _request(key: str | None = "a/1") -> InvocationRequest:
    return InvocationRequest("inv_1", _target(key is not None), key, b"{}")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_audience_is_the_invoke_route() -> None:
    assert audience(_request("a/1")) == "/invoke/Acct/a%2F1/apply"
    assert audience(_request(None)) == "/invoke/Acct/apply"
    # A service handler's request may hold the record key; it is not part of the route.
    service_request = InvocationRequest("inv_1", _target(False), "k", b"")
    assert audience(service_request) == "/invoke/Acct/apply"


def test_token_claims_and_header(key: Ed25519PrivateKey) -> None:
    clock = Clock()
    signer = RequestSigner(key, key_id="k1", ttl_s=60, clock=clock)
    headers = signer(_request(), "http://h/invoke/Acct/a%2F1/apply")
    assert headers["x-kafka-ingress-signature-scheme"] == "v1"
    token = headers["x-kafka-ingress-jwt-v1"]
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "typ": "JWT", "kid": "k1"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "aud": "/invoke/Acct/a%2F1/apply",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
    }


def test_tokens_are_reused_while_more_than_half_their_life_is_left(
    key: Ed25519PrivateKey,
) -> None:
    clock = Clock()
    signer = RequestSigner(key, ttl_s=60, clock=clock)
    first = signer.token("/invoke/A/h")
    clock.now += 29
    assert signer.token("/invoke/A/h") == first
    clock.now += 2
    assert signer.token("/invoke/A/h") != first
    assert signer.token("/invoke/B/h") != first


def test_verifier_accepts_valid_and_rejects_everything_else(key: Ed25519PrivateKey) -> None:
    signer = RequestSigner(key, ttl_s=60)
    path = "/invoke/Acct/a%2F1/apply"
    verifier = IdentityVerifier([signer.public_key])
    good = signer.headers_for(path)
    assert verifier.verify(good, path)["aud"] == path

    with pytest.raises(IdentityError, match="not signed"):
        verifier.verify({}, path)
    with pytest.raises(IdentityError, match="scheme"):
        verifier.verify({**good, "x-kafka-ingress-signature-scheme": "v2"}, path)
    with pytest.raises(IdentityError, match="another path"):
        verifier.verify(good, "/invoke/Acct/other/apply")

    expired = RequestSigner(key, ttl_s=60, clock=lambda: NOW - 3600).headers_for(path)
    with pytest.raises(IdentityError, match="expired"):
        verifier.verify(expired, path)
    future = RequestSigner(key, ttl_s=60, clock=lambda: 4_000_000_000.0).headers_for(path)
    with pytest.raises(IdentityError, match="not valid yet"):
        verifier.verify(future, path)

    # Tampered: a claim changed (audience swapped) but the signature kept.
    header, payload, signature = good["x-kafka-ingress-jwt-v1"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["aud"] = "/invoke/Acct/b/apply"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tampered = {**good, "x-kafka-ingress-jwt-v1": f"{header}.{forged}.{signature}"}
    with pytest.raises(IdentityError, match="match any"):
        verifier.verify(tampered, "/invoke/Acct/b/apply")
    with pytest.raises(IdentityError, match="invalid"):
        verifier.verify({**good, "x-kafka-ingress-jwt-v1": "not.a.jwt"}, path)

    other = RequestSigner(Ed25519PrivateKey.generate()).headers_for(path)
    with pytest.raises(IdentityError, match="match any"):
        verifier.verify(other, path)
    # Key rotation: either configured key is accepted.
    rotated = IdentityVerifier([public_key_text(Ed25519PrivateKey.generate()), signer.public_key])
    assert rotated.verify(good, path)

    # HS256 with the public key as the secret (algorithm confusion) is refused.
    confused = jwt.encode({"aud": path, "exp": 4_000_000_000}, "s" * 32, algorithm="HS256")
    with pytest.raises(IdentityError):
        verifier.verify({**good, "x-kafka-ingress-jwt-v1": confused}, path)


def test_public_key_formats(key: Ed25519PrivateKey) -> None:
    text = public_key_text(key)
    assert text.startswith("publickeyv1_")
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for form in (text, pem):
        parsed = parse_public_key(form)
        assert parsed.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ) == key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    with pytest.raises(ValueError, match="publickeyv1_"):
        parse_public_key("ssh-ed25519 AAAA")
    with pytest.raises(ValueError, match="32 bytes"):
        parse_public_key("publickeyv1_" + b58encode(b"\x01" * 31))
    for data in (b"", b"\x00\x00\x01", b"\xff" * 32, bytes(range(40))):
        assert b58decode(b58encode(data)) == data


def _pem(private_key: object) -> bytes:
    return private_key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_signer_from_settings(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    assert RequestSigner.from_settings(SigningSettings()) is None
    path = tmp_path / "key.pem"
    path.write_bytes(_pem(key))
    signer = RequestSigner.from_settings(
        SigningSettings.model_validate(
            {"private-key-file": str(path), "key-id": "k7", "ttl-seconds": 30}
        )
    )
    assert signer is not None
    assert (signer.key_id, signer.ttl_s, signer.public_key) == ("k7", 30, public_key_text(key))

    def settings(p: Path) -> SigningSettings:
        return SigningSettings.model_validate({"private-key-file": str(p)})

    with pytest.raises(ConfigError, match="cannot be read"):
        RequestSigner.from_settings(settings(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        RequestSigner.from_settings(settings(tmp_path / "junk.pem"))
    (tmp_path / "rsa.pem").write_bytes(_pem(generate_private_key(65537, 2048)))
    with pytest.raises(ConfigError, match="not an ed25519 key"):
        RequestSigner.from_settings(settings(tmp_path / "rsa.pem"))


def test_keygen_writes_a_private_key_and_prints_the_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "signing.pem"
    assert main(["keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    signer = RequestSigner.from_settings(
        SigningSettings.model_validate({"private-key-file": str(out)})
    )
    assert signer is not None
    assert signer.public_key in printed
    assert main(["keygen", "--out", str(out)]) == 1  # never overwrites a key


async def test_asgi_app_answers_401_for_unsigned_expired_and_tampered(
    key: Ed25519PrivateKey,
) -> None:
    signer = RequestSigner(key, ttl_s=60)
    endpoint = Endpoint([obj], identity_keys=[signer.public_key])
    transport = httpx.ASGITransport(app=endpoint.asgi_app())
    path = "/invoke/Acct/a%2F1/apply"
    async with httpx.AsyncClient(transport=transport, base_url="http://h") as client:
        ok = await client.post(path, content=b'{"n": 1}', headers=signer.headers_for(path))
        assert ok.status_code == 200
        assert ok.json() == {"n": 1}

        unsigned = await client.post(path, content=b"{}")
        assert unsigned.status_code == 401
        assert "not signed" in unsigned.json()["message"]

        old = RequestSigner(key, clock=lambda: NOW - 3600).headers_for(path)
        assert (await client.post(path, content=b"{}", headers=old)).status_code == 401

        token = signer.headers_for(path)["x-kafka-ingress-jwt-v1"]
        bad = {**signer.headers_for(path), "x-kafka-ingress-jwt-v1": token[:-4] + "AAAA"}
        assert (await client.post(path, content=b"{}", headers=bad)).status_code == 401

        # A valid token for another key (path) of the same handler is refused.
        elsewhere = signer.headers_for("/invoke/Acct/b/apply")
        assert (await client.post(path, content=b"{}", headers=elsewhere)).status_code == 401

        assert (await client.get("/discover")).status_code == 401
        signed = await client.get("/discover", headers=signer.headers_for("/discover"))
        assert signed.status_code == 200


def test_lambda_invoke_events_are_verified_too(key: Ed25519PrivateKey) -> None:
    from adapter.invokers.aws_lambda import build_invoke_event

    signer = RequestSigner(key)
    endpoint = Endpoint([obj], identity_keys=[signer.public_key])
    handler = endpoint.lambda_handler()
    request = _request("a/1")
    signed = handler(build_invoke_event(request, signer), None)
    assert signed["statusCode"] == 200
    unsigned = handler(build_invoke_event(request, None), None)
    assert unsigned["statusCode"] == 401
    # Discovery over Lambda is guarded by IAM (who may invoke), not by a signature.
    manifest = handler({"protocol": "kafka-ingress/v1", "type": "discover"}, None)
    assert manifest["services"][0]["name"] == "Acct"


def test_identity_keys_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key: Ed25519PrivateKey
) -> None:
    public = public_key_text(key)
    monkeypatch.setenv("KAFKA_INGRESS_IDENTITY_KEYS", f" {public}, ")
    assert Endpoint([obj]).verifier is not None
    monkeypatch.setenv("KAFKA_INGRESS_IDENTITY_KEYS", "")
    assert Endpoint([obj]).verifier is None
