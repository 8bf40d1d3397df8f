"""Authentication before the upgrade with real RS256 tokens signed by test keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.rtvbp.auth import (
    BABELFORCE_ISSUER,
    BABELFORCE_SUBJECT,
    AuthContext,
    AuthRequest,
    BabelforceCloudValidator,
    OriginPolicy,
    StaticTokenAuthenticator,
    decode_bearer_subprotocol,
    generate_test_keypair,
    load_public_key,
    load_public_keys,
    sign_test_token,
)
from callbridge.rtvbp.errors import AuthError, RtvbpError
from callbridge.rtvbp.profiles import CREDENTIAL_PREFIX

KEYS = Path(__file__).parent / "keys"
ACCOUNT = "demo-account-123"


def pem(name: str) -> bytes:
    return (KEYS / f"{name}.pem").read_bytes()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": BABELFORCE_ISSUER,
        "sub": BABELFORCE_SUBJECT,
        "aud": ACCOUNT,
        "iat": now,
        "exp": now + 3600,
        "jti": "test-jti",
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def signed(key: str = "signing-1", algorithm: str = "RS256", **overrides: Any) -> str:
    private_key = pem(f"{key}.private")
    return jwt.encode(
        claims(**overrides), private_key, algorithm=algorithm, headers={"kid": "jwt-rsa-2048-v1"}
    )


def hand_made(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    """A token PyJWT would refuse to produce (HS256 keyed with a PEM, alg none)."""
    return ".".join(
        (
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(payload).encode()),
            b64url(signature),
        )
    )


def hs256_with_public_key() -> str:
    """The classic key-confusion attack: HMAC keyed with the RSA public key PEM."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    mac = hmac.new(pem("signing-1.public"), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


def encode_bearer_subprotocol(token: str) -> str:
    """The browser carrier for `token`, as a client offers it in Sec-WebSocket-Protocol."""
    encoded = base64.urlsafe_b64encode(token.encode("utf-8")).rstrip(b"=")
    return CREDENTIAL_PREFIX + encoded.decode("ascii")


def bearer(token: str) -> AuthRequest:
    return AuthRequest(headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def validator() -> BabelforceCloudValidator:
    return BabelforceCloudValidator(
        [pem("signing-1.public"), pem("signing-2.public")], accounts={ACCOUNT}
    )


async def test_valid_token_gives_the_account(validator: BabelforceCloudValidator) -> None:
    context = await validator(bearer(signed()))
    assert context == AuthContext(
        subject=BABELFORCE_SUBJECT,
        account=ACCOUNT,
        claims=context.claims,
        method="jwt",
        carrier="authorization",
    )
    assert context.claims["jti"] == "test-jti"


async def test_header_name_and_scheme_are_case_insensitive(
    validator: BabelforceCloudValidator,
) -> None:
    request = AuthRequest(headers={"authorization": f"bearer {signed()}"})
    assert (await validator(request)).account == ACCOUNT


INVALID_TOKENS: list[tuple[str, Any, str]] = [
    ("malformed", lambda: "not-a-jwt", "malformed token"),
    ("malformed segments", lambda: "aaaa.bbbb.cccc", "malformed token"),
    ("expired", lambda: signed(exp=int(time.time()) - 3600), "token expired"),
    ("missing exp", lambda: signed(exp=None), "missing exp claim"),
    ("hs256 keyed with the public key", hs256_with_public_key, "algorithm not allowed"),
    (
        "alg none",
        lambda: hand_made({"alg": "none", "typ": "JWT"}, claims(), b""),
        "algorithm not allowed",
    ),
    ("rs512", lambda: signed(algorithm="RS512"), "algorithm not allowed"),
    ("attacker key", lambda: signed(key="attacker"), "signature invalid"),
    ("wrong issuer", lambda: signed(iss="auth.example.com"), "issuer not accepted"),
    ("issuer prefix", lambda: signed(iss="auth.babelforce.com.evil"), "issuer not accepted"),
    ("missing issuer", lambda: signed(iss=None), "missing iss claim"),
    ("wrong subject", lambda: signed(sub="com.babelforce.svc.other"), "subject not accepted"),
    ("missing subject", lambda: signed(sub=None), "missing sub claim"),
    ("account not allowed", lambda: signed(aud="other-account"), "account 'other-account'"),
    ("missing account", lambda: signed(aud=None), "missing aud claim"),
    ("two accounts", lambda: signed(aud=[ACCOUNT, "other"]), "aud claim is not an account id"),
    ("issued in the future", lambda: signed(iat=int(time.time()) + 600), "token not yet valid"),
    ("iat not a number", lambda: signed(iat="yesterday"), "iat claim invalid"),
]


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [(make, reason) for _, make, reason in INVALID_TOKENS],
    ids=[name for name, _, _ in INVALID_TOKENS],
)
async def test_invalid_tokens_are_refused_without_echoing_them(
    validator: BabelforceCloudValidator,
    make_token: Any,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = make_token()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as refused:
        await validator(bearer(token))
    assert reason in str(refused.value)
    assert isinstance(refused.value, RtvbpError)
    for part in token.split("."):
        if len(part) > 8:
            assert part not in str(refused.value)
            assert part not in repr(refused.value.args)
            assert part not in caplog.text
    error = refused.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


async def test_tampered_payload_fails_the_signature(validator: BabelforceCloudValidator) -> None:
    header, _, signature = signed(aud="other-account").split(".")
    payload = b64url(json.dumps(claims()).encode())
    with pytest.raises(AuthError, match="signature invalid"):
        await validator(bearer(f"{header}.{payload}.{signature}"))


async def test_expiry_within_the_leeway_is_accepted(validator: BabelforceCloudValidator) -> None:
    token = signed(exp=int(time.time()) - 10)
    assert (await validator(bearer(token))).account == ACCOUNT
    strict = BabelforceCloudValidator([pem("signing-1.public")], accounts={ACCOUNT}, leeway_s=0)
    with pytest.raises(AuthError, match="token expired"):
        await strict(bearer(token))


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"],
)
async def test_missing_or_foreign_authorization(
    validator: BabelforceCloudValidator, authorization: str
) -> None:
    with pytest.raises(AuthError, match=r"missing bearer token|scheme is not Bearer"):
        await validator(AuthRequest(headers={"Authorization": authorization}))


async def test_no_credential_at_all(validator: BabelforceCloudValidator) -> None:
    with pytest.raises(AuthError, match="missing bearer token"):
        await validator(AuthRequest(headers={}, offered_subprotocols=["rtvbp.v1"]))


async def test_oversized_token_is_refused_before_parsing(
    validator: BabelforceCloudValidator,
) -> None:
    with pytest.raises(AuthError, match="too long"):
        await validator(bearer("a" * 20_000))


async def test_key_rotation_accepts_either_key(validator: BabelforceCloudValidator) -> None:
    assert (await validator(bearer(signed(key="signing-2")))).account == ACCOUNT
    only_first = BabelforceCloudValidator([pem("signing-1.public")], accounts={ACCOUNT})
    with pytest.raises(AuthError, match="signature invalid"):
        await only_first(bearer(signed(key="signing-2")))


async def test_kid_is_only_a_hint() -> None:
    by_kid = BabelforceCloudValidator(
        {"old": pem("signing-1.public"), "new": pem("signing-2.public")}, accounts={ACCOUNT}
    )
    for key in ("signing-1", "signing-2"):
        for kid in ("old", "new", "unknown"):
            token = jwt.encode(claims(), pem(f"{key}.private"), "RS256", headers={"kid": kid})
            assert (await by_kid(bearer(token))).account == ACCOUNT
    attacker = jwt.encode(claims(), pem("attacker.private"), "RS256", headers={"kid": "new"})
    with pytest.raises(AuthError, match="signature invalid"):
        await by_kid(bearer(attacker))


async def test_bearer_subprotocol_carrier(validator: BabelforceCloudValidator) -> None:
    token = signed()
    request = AuthRequest(
        headers={}, offered_subprotocols=["rtvbp.v1", encode_bearer_subprotocol(token)]
    )
    context = await validator(request)
    assert (context.account, context.carrier) == (ACCOUNT, "subprotocol")


async def test_authorization_header_wins_over_the_carrier(
    validator: BabelforceCloudValidator,
) -> None:
    request = AuthRequest(
        headers={"Authorization": f"Bearer {signed()}"},
        offered_subprotocols=["rtvbp.v1", encode_bearer_subprotocol("garbage")],
    )
    assert (await validator(request)).carrier == "authorization"


@pytest.mark.parametrize(
    "carrier",
    [
        "bearer.",
        "bearer.!!!!",
        "bearer.abc=",
        "bearer.a",
        "bearer." + b64url(b"\xff\xfe\xfd"),
        "bearer." + b64url(b"tab\tinside"),
    ],
)
async def test_garbage_bearer_subprotocol(
    validator: BabelforceCloudValidator, carrier: str
) -> None:
    request = AuthRequest(headers={}, offered_subprotocols=["rtvbp.v1", carrier])
    with pytest.raises(AuthError, match="malformed bearer subprotocol"):
        await validator(request)


async def test_two_bearer_subprotocols_are_refused(validator: BabelforceCloudValidator) -> None:
    offered = [encode_bearer_subprotocol(signed()), encode_bearer_subprotocol(signed())]
    with pytest.raises(AuthError, match="more than one"):
        await validator(AuthRequest(headers={}, offered_subprotocols=offered))


async def test_carrier_with_a_bad_token_does_not_echo_it(
    validator: BabelforceCloudValidator,
) -> None:
    token = signed(key="attacker")
    carrier = encode_bearer_subprotocol(token)
    with pytest.raises(AuthError) as refused:
        await validator(AuthRequest(headers={}, offered_subprotocols=[carrier]))
    assert "signature invalid" in str(refused.value)
    assert carrier[10:40] not in str(refused.value)
    assert token.split(".")[2] not in str(refused.value)


@given(st.text(max_size=200))
def test_bearer_subprotocol_parser_only_raises_auth_error(text: str) -> None:
    try:
        decoded = decode_bearer_subprotocol("bearer." + text)
    except AuthError:
        return
    assert decoded and decoded.isprintable()


@given(st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=200))
def test_bearer_subprotocol_round_trip(token: str) -> None:
    assert decode_bearer_subprotocol(encode_bearer_subprotocol(token)) == token


async def test_static_tokens() -> None:
    authenticator = StaticTokenAuthenticator(["first-secret", "second-secret"])
    context = await authenticator(bearer("second-secret"))
    assert (context.method, context.account, context.carrier) == ("static", None, "authorization")
    carrier = AuthRequest(
        headers={}, offered_subprotocols=[encode_bearer_subprotocol("first-secret")]
    )
    assert (await authenticator(carrier)).carrier == "subprotocol"
    for wrong in ("second-secret-not", "first", "FIRST-SECRET"):
        with pytest.raises(AuthError, match="bearer token not accepted") as refused:
            await authenticator(bearer(wrong))
        assert wrong not in str(refused.value)
    with pytest.raises(AuthError, match="missing bearer token"):
        await authenticator(AuthRequest(headers={}))
    assert "secret" not in repr(authenticator)


def test_static_authenticator_needs_tokens() -> None:
    with pytest.raises(ValueError):
        StaticTokenAuthenticator([])
    with pytest.raises(ValueError):
        StaticTokenAuthenticator([""])


async def test_any_account_is_an_explicit_opt_in() -> None:
    with pytest.raises(ValueError, match="allow_any_account"):
        BabelforceCloudValidator([pem("signing-1.public")])
    with pytest.raises(ValueError):
        BabelforceCloudValidator(
            [pem("signing-1.public")], accounts={ACCOUNT}, allow_any_account=True
        )
    permissive = BabelforceCloudValidator([pem("signing-1.public")], allow_any_account=True)
    assert (await permissive(bearer(signed(aud="anyone")))).account == "anyone"


def test_validator_needs_rsa_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        BabelforceCloudValidator([], accounts={ACCOUNT})
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="RSA"):
        BabelforceCloudValidator([ec_public], accounts={ACCOUNT})


def test_load_public_keys_from_paths_and_pems() -> None:
    path = KEYS / "signing-1.public.pem"
    text = path.read_text()
    one = load_public_key(path)
    assert load_public_key(str(path)).public_numbers() == one.public_numbers()
    assert load_public_key(text).public_numbers() == one.public_numbers()
    assert load_public_key(path.read_bytes()).public_numbers() == one.public_numbers()
    assert len(load_public_keys(path)) == 1
    assert len(load_public_keys([path, KEYS / "signing-2.public.pem"])) == 2
    assert load_public_key(one) is one


def test_repr_does_not_leak_configuration_secrets() -> None:
    validator = BabelforceCloudValidator([pem("signing-1.public")], accounts={ACCOUNT})
    assert "BEGIN" not in repr(validator)
    assert ACCOUNT in repr(validator)


async def test_sign_test_token_and_a_fresh_keypair() -> None:
    private_pem, public_pem = generate_test_keypair()
    token = sign_test_token(private_pem, account="acme", lifetime_s=60)
    assert jwt.get_unverified_header(token) == {
        "alg": "RS256",
        "kid": "jwt-rsa-2048-v1",
        "typ": "JWT",
    }
    fresh = BabelforceCloudValidator([public_pem], accounts={"acme"})
    context = await fresh(bearer(token))
    assert context.claims["exp"] - context.claims["iat"] == 60
    expired = sign_test_token(private_pem, account="acme", lifetime_s=-3600)
    with pytest.raises(AuthError, match="token expired"):
        await fresh(bearer(expired))


@pytest.mark.parametrize(
    ("allowed", "origin", "expected"),
    [
        (["https://app.example.com"], None, True),
        (["https://app.example.com"], "https://app.example.com", True),
        (["https://app.example.com"], "HTTPS://App.Example.com", True),
        (["https://app.example.com"], "https://app.example.com:8443", False),
        (["https://app.example.com"], "http://app.example.com", False),
        (["https://app.example.com"], "https://evil.example.com", False),
        (["https://app.example.com"], "https://app.example.com.evil.net", False),
        (["https://app.example.com"], "null", False),
        (["https://app.example.com:8443"], "https://app.example.com:8443", True),
        (["*"], "https://anything.example", True),
        ([], "https://app.example.com", False),
        ([], None, True),
    ],
)
def test_origin_policy(allowed: list[str], origin: str | None, expected: bool) -> None:
    assert OriginPolicy(allowed).check(origin) is expected
