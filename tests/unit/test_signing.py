"""Request signing (poller) and verification (SDK): valid accepted; missing, expired,
tampered, misaddressed, foreign and replayed signatures rejected with 401."""

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
    body_digest,
    parse_public_key,
)
from adapter.sdk.replay import MemoryReplayStore, ReplayCacheFullError

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
    # PyJWT (what handlers in other stacks use too) reads the hand-assembled token.
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["EdDSA"],
        audience="/invoke/Acct/a%2F1/apply",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    jti = claims.pop("jti")
    assert isinstance(jti, str)
    assert len(base64.urlsafe_b64decode(jti + "==")) == 16
    assert claims == {
        "aud": "/invoke/Acct/a%2F1/apply",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
        "invocation_id": "inv_1",
        "body_sha256": body_digest(b"{}"),
    }
    assert body_digest(b"{}") == "RBNvo1WzZ4oRRq0W9-hknpT7T8If536DEMBg9hyq_4o"


def _claims(headers: dict[str, str]) -> dict[str, object]:
    token = headers["x-kafka-ingress-jwt-v1"]
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def test_every_request_gets_its_own_token_bound_to_its_body(key: Ed25519PrivateKey) -> None:
    # The signer of old reused one token per route for half its lifetime and signed no body,
    # so a captured token could carry any body to that route for ~65 s.
    signer = RequestSigner(key, ttl_s=60, clock=Clock())
    request = _request()
    first, again = signer(request, "u"), signer(request, "u")
    assert first != again
    assert _claims(first)["jti"] != _claims(again)["jti"]
    other = InvocationRequest("inv_2", request.target, request.key, b'{"n": 2}')
    other_claims = _claims(signer(other, "u"))
    assert other_claims["body_sha256"] == body_digest(b'{"n": 2}')
    assert other_claims["invocation_id"] == "inv_2"
    jtis = {_claims(signer(request, "u"))["jti"] for _ in range(1000)}
    assert len(jtis) == 1000


async def test_verifier_accepts_valid_and_rejects_everything_else(key: Ed25519PrivateKey) -> None:
    signer = RequestSigner(key, ttl_s=60)
    path = "/invoke/Acct/a%2F1/apply"
    verifier = IdentityVerifier([signer.public_key])
    assert (await verifier.verify(signer.headers_for(path), path, b""))["aud"] == path

    def check(headers: dict[str, str], where: str = path) -> object:
        return verifier.verify(headers, where, b"")

    good = signer.headers_for(path)
    with pytest.raises(IdentityError, match="not signed"):
        await check({})
    with pytest.raises(IdentityError, match="scheme"):
        await check({**good, "x-kafka-ingress-signature-scheme": "v2"})
    with pytest.raises(IdentityError, match="another path"):
        await check(good, "/invoke/Acct/other/apply")

    expired = RequestSigner(key, ttl_s=60, clock=lambda: NOW - 3600).headers_for(path)
    with pytest.raises(IdentityError, match="expired"):
        await check(expired)
    future = RequestSigner(key, ttl_s=60, clock=lambda: 4_000_000_000.0).headers_for(path)
    with pytest.raises(IdentityError, match="not valid yet"):
        await check(future)

    # Tampered: a claim changed (audience swapped) but the signature kept.
    header, payload, signature = good["x-kafka-ingress-jwt-v1"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["aud"] = "/invoke/Acct/b/apply"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tampered = {**good, "x-kafka-ingress-jwt-v1": f"{header}.{forged}.{signature}"}
    with pytest.raises(IdentityError, match="match any"):
        await check(tampered, "/invoke/Acct/b/apply")
    with pytest.raises(IdentityError, match="invalid"):
        await check({**good, "x-kafka-ingress-jwt-v1": "not.a.jwt"})

    other = RequestSigner(Ed25519PrivateKey.generate()).headers_for(path)
    with pytest.raises(IdentityError, match="match any"):
        await check(other)
    # Key rotation: either configured key is accepted.
    rotated = IdentityVerifier([public_key_text(Ed25519PrivateKey.generate()), signer.public_key])
    assert await rotated.verify(good, path, b"")

    # HS256 with the public key as the secret (algorithm confusion) is refused.
    confused = jwt.encode({"aud": path, "exp": 4_000_000_000}, "s" * 32, algorithm="HS256")
    with pytest.raises(IdentityError):
        await check({**good, "x-kafka-ingress-jwt-v1": confused})

    # A token as the signer of old made it (no jti, no body digest) is refused.
    legacy = jwt.encode(
        {"aud": path, "iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + 60},
        key,
        algorithm="EdDSA",
    )
    with pytest.raises(IdentityError, match="jti"):
        await check({**good, "x-kafka-ingress-jwt-v1": legacy})


async def test_replays_are_refused_and_fresh_requests_accepted(key: Ed25519PrivateKey) -> None:
    signer = RequestSigner(key, ttl_s=60)
    verifier = IdentityVerifier([signer.public_key])
    request = _request()
    path = audience(request)
    headers = {**request.headers, **signer(request, "u"), "x-kafka-ingress-invocation-id": "inv_1"}

    # Captured on the wire and replayed with another body: refused before its first use.
    with pytest.raises(IdentityError, match="another body"):
        await verifier.verify(headers, path, b'{"amount": 1000000}')
    # The genuine request is accepted once ...
    assert (await verifier.verify(headers, path, request.body))["invocation_id"] == "inv_1"
    # ... and the same request replayed byte for byte is refused.
    with pytest.raises(IdentityError, match="already used"):
        await verifier.verify(headers, path, request.body)
    # A fresh token for the same request (a retry) is accepted.
    retry = {**headers, **signer(request, "u")}
    assert await verifier.verify(retry, path, request.body)
    # A token moved to another invocation's headers is refused.
    moved = {**signer(request, "u"), "x-kafka-ingress-invocation-id": "inv_9"}
    with pytest.raises(IdentityError, match="another invocation"):
        await verifier.verify(moved, path, request.body)


async def test_memory_replay_store_forgets_expired_ids_and_stays_bounded() -> None:
    clock = Clock()
    store = MemoryReplayStore(max_entries=3, clock=clock)
    assert await store.first_use("a", NOW + 10)
    assert not await store.first_use("a", NOW + 10)
    clock.now += 11
    # Expired: forgotten (a token that old fails its exp check before it gets here).
    assert await store.first_use("a", NOW + 30)
    assert await store.first_use("b", NOW + 20)
    assert await store.first_use("c", NOW + 40)
    assert await store.first_use("d", NOW + 40)
    assert len(store) == 3  # "b" (expiring soonest) was dropped early
    # Anything expiring no later than the dropped entry can no longer be checked: refused.
    with pytest.raises(ReplayCacheFullError, match="raise its size"):
        await store.first_use("b", NOW + 20)
    with pytest.raises(ReplayCacheFullError):
        await store.first_use("e", NOW + 19)
    assert await store.first_use("f", NOW + 41)
    with pytest.raises(ValueError, match="max_entries"):
        MemoryReplayStore(max_entries=0)


async def test_a_full_replay_store_answers_503_so_the_poller_retries(
    key: Ed25519PrivateKey,
) -> None:
    clock = Clock()
    # The verifier checks expiry against the real clock: sign now, not at the module's import.
    clock.now = float(int(time.time()))
    signer = RequestSigner(key, ttl_s=60, clock=clock)
    verifier = IdentityVerifier([signer.public_key], replay_store=MemoryReplayStore(max_entries=1))
    path = "/invoke/Acct/apply"
    early = signer.headers_for(path)
    clock.now += 1
    await verifier.verify(signer.headers_for(path), path, b"")
    await verifier.verify(signer.headers_for(path), path, b"")  # evicts the first
    with pytest.raises(IdentityError, match="too old") as caught:
        await verifier.verify(early, path, b"")
    assert caught.value.status == 503


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
        signed = signer.headers_for(path, b'{"n": 1}')
        ok = await client.post(path, content=b'{"n": 1}', headers=signed)
        assert ok.status_code == 200
        assert ok.json() == {"n": 1}
        replayed = await client.post(path, content=b'{"n": 1}', headers=signed)
        assert replayed.status_code == 401
        assert "already used" in replayed.json()["message"]
        fresh = signer.headers_for(path, b'{"n": 2}')
        swapped = await client.post(path, content=b'{"n": 3}', headers=fresh)
        assert swapped.status_code == 401
        assert "another body" in swapped.json()["message"]

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
    event = build_invoke_event(request, signer)
    signed = handler(event, None)
    assert signed["statusCode"] == 200
    # The same event invoked again (a replay through anyone allowed to invoke) is refused,
    # and so is its token with another body.
    assert handler(event, None)["statusCode"] == 401
    tampered = {**build_invoke_event(request, signer), "body": '{"n": 9}'}
    assert handler(tampered, None)["statusCode"] == 401
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


async def test_instances_sharing_a_replay_store_refuse_a_replay_to_another_instance(
    key: Ed25519PrivateKey,
) -> None:
    signer = RequestSigner(key, ttl_s=60)
    path = "/invoke/Acct/a%2F1/apply"
    body = b'{"n": 1}'

    async def post_to_both(first: Endpoint, second: Endpoint) -> list[int]:
        headers = signer.headers_for(path, body)
        codes = []
        for endpoint in (first, second):
            transport = httpx.ASGITransport(app=endpoint.asgi_app())
            async with httpx.AsyncClient(transport=transport, base_url="http://h") as client:
                codes.append((await client.post(path, content=body, headers=headers)).status_code)
        return codes

    keys = [signer.public_key]
    # Each instance remembering only its own tokens: the documented multi-instance caveat.
    assert await post_to_both(
        Endpoint([obj], identity_keys=keys), Endpoint([obj], identity_keys=keys)
    ) == [200, 200]
    shared = MemoryReplayStore()
    one = Endpoint([obj], identity_keys=keys, replay_store=shared)
    two = Endpoint([obj], identity_keys=keys, replay_store=shared)
    assert await post_to_both(one, two) == [200, 401]
