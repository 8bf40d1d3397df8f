"""Authentication of the WebSocket upgrade (ws.v1 binding): decided before the 101, never logged.

An authenticator is any async callable that takes an `AuthRequest` and returns an `AuthContext`
or raises `AuthError` (the upgrade is then answered with HTTP 401 and no session exists).
Error messages say what is wrong with a token but never contain the token itself.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import load_pem_x509_certificate
from jwt import exceptions as jwt_errors
from multidict import CIMultiDict, CIMultiDictProxy

from callbridge.rtvbp.errors import AuthError
from callbridge.rtvbp.profiles import CREDENTIAL_PREFIX

BABELFORCE_ISSUER = "auth.babelforce.com"
BABELFORCE_SUBJECT = "com.babelforce.svc.telephony.realtime"
BABELFORCE_KEY_ID = "jwt-rsa-2048-v1"
ALGORITHM = "RS256"

MAX_TOKEN_CHARS = 16 * 1024
"""Longer bearer tokens are refused before any parsing (a babelforce JWT is ~1 KiB)."""

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")

Carrier = Literal["authorization", "subprotocol"]
KeySource: TypeAlias = "rsa.RSAPublicKey | bytes | str | os.PathLike[str]"


@dataclass(frozen=True)
class AuthContext:
    """Who the peer is, as established by an authenticator; `claims` never hold the raw token."""

    subject: str | None
    account: str | None
    claims: Mapping[str, Any]
    method: str
    """How the peer was authenticated: "jwt", "static", or a custom authenticator's name."""
    carrier: Carrier = "authorization"
    """Where the credential came from: the Authorization header or a bearer.* subprotocol."""


@dataclass(frozen=True)
class AuthRequest:
    """What an authenticator sees of the upgrade request (headers are case-insensitive)."""

    headers: Mapping[str, str]
    offered_subprotocols: Sequence[str] = ()
    remote: str | None = None
    path: str = "/"
    query: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, CIMultiDictProxy):
            object.__setattr__(self, "headers", CIMultiDictProxy(CIMultiDict(self.headers)))
        object.__setattr__(self, "offered_subprotocols", tuple(self.offered_subprotocols))


Authenticator = Callable[[AuthRequest], Awaitable[AuthContext]]
"""Pluggable hook: any async callable; raise AuthError to refuse the upgrade with HTTP 401."""


def bearer_token(request: AuthRequest) -> tuple[str, Carrier]:
    """The bearer credential: `Authorization: Bearer <t>`, else a `bearer.<base64url>` offer."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("authorization scheme is not Bearer")
        value = value.strip()
        if not value:
            raise AuthError("missing bearer token")
        if len(value) > MAX_TOKEN_CHARS:
            raise AuthError("bearer token too long")
        return value, "authorization"
    carriers = [
        token for token in request.offered_subprotocols if token.startswith(CREDENTIAL_PREFIX)
    ]
    if not carriers:
        raise AuthError("missing bearer token")
    if len(carriers) > 1:
        raise AuthError("more than one bearer subprotocol offered")
    return decode_bearer_subprotocol(carriers[0]), "subprotocol"


def decode_bearer_subprotocol(token: str) -> str:
    """Decode `bearer.<base64url(UTF-8 token), no padding>` (the browser credential carrier)."""
    encoded = token.removeprefix(CREDENTIAL_PREFIX)
    if not encoded or len(encoded) > MAX_TOKEN_CHARS or not _BASE64URL.fullmatch(encoded):
        raise AuthError("malformed bearer subprotocol")
    try:
        decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        value = decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        raise AuthError("malformed bearer subprotocol") from None
    if not value or not value.isprintable():
        raise AuthError("malformed bearer subprotocol")
    return value


class StaticTokenAuthenticator:
    """Shared-secret bearer tokens (typical self-hosted RTVBP), compared in constant time."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(token.encode("utf-8") for token in tokens)
        if not self._tokens or any(not token for token in self._tokens):
            raise ValueError("StaticTokenAuthenticator needs at least one non-empty token")

    def __repr__(self) -> str:
        return f"StaticTokenAuthenticator(<{len(self._tokens)} tokens>)"

    async def __call__(self, request: AuthRequest) -> AuthContext:
        token, carrier = bearer_token(request)
        candidate = token.encode("utf-8")
        matched = False
        for expected in self._tokens:  # no early exit: timing does not reveal which one matched
            matched |= hmac.compare_digest(candidate, expected)
        if not matched:
            raise AuthError("bearer token not accepted")
        return AuthContext(subject=None, account=None, claims={}, method="static", carrier=carrier)


class OriginPolicy:
    """Browser Origin allowlist (CORS does not protect WebSockets); no Origin = not a browser."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(_normalize_origin(origin) for origin in allowed)
        self._allow_all = "*" in self._allowed

    def __repr__(self) -> str:
        return f"OriginPolicy({sorted(self._allowed)!r})"

    def check(self, origin: str | None) -> bool:
        """True when the request may proceed: no Origin header, or an exactly allowed origin."""
        if origin is None:
            return True
        return self._allow_all or _normalize_origin(origin) in self._allowed


def _normalize_origin(origin: str) -> str:
    """Origins compare case-insensitively (scheme and host are ASCII-lowercased by browsers)."""
    return origin.strip().rstrip("/").lower()


_JWT_ERRORS: tuple[tuple[type[jwt_errors.PyJWTError], str], ...] = (
    (jwt_errors.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt_errors.InvalidSignatureError, "signature invalid"),
    (jwt_errors.ExpiredSignatureError, "token expired"),
    (jwt_errors.ImmatureSignatureError, "token not yet valid"),
    (jwt_errors.InvalidIssuedAtError, "iat claim invalid"),
    (jwt_errors.InvalidIssuerError, "issuer not accepted"),
    (jwt_errors.InvalidSubjectError, "subject not accepted"),
    (jwt_errors.DecodeError, "malformed token"),
    (jwt_errors.InvalidKeyError, "signature invalid"),
)


def _describe(error: jwt_errors.PyJWTError) -> str:
    """A short reason for a PyJWT error; PyJWT's own texts are not forwarded."""
    if isinstance(error, jwt_errors.MissingRequiredClaimError):
        return f"missing {error.claim} claim"
    for error_type, reason in _JWT_ERRORS:
        if isinstance(error, error_type):
            return reason
    return "token invalid"


class BabelforceCloudValidator:
    """Validates the RS256 JWT babelforce Cloud telephony presents, and its account (`aud`).

    `public_keys` is a list of keys, or a mapping `kid -> key` so the token's `kid` header picks
    the first key to try; every key is tried before the signature is declared invalid (rotation).
    `accounts` is the allowlist of served babelforce account ids; accepting every account needs
    the explicit `allow_any_account=True`.
    """

    def __init__(
        self,
        public_keys: Iterable[KeySource] | Mapping[str, KeySource],
        *,
        accounts: Iterable[str] = (),
        allow_any_account: bool = False,
        leeway_s: float = 30.0,
        issuer: str = BABELFORCE_ISSUER,
        subject: str = BABELFORCE_SUBJECT,
    ) -> None:
        if isinstance(public_keys, Mapping):
            self._keys = [(kid, load_public_key(key)) for kid, key in public_keys.items()]
        else:
            self._keys = [(None, key) for key in load_public_keys(public_keys)]
        if not self._keys:
            raise ValueError("BabelforceCloudValidator needs at least one public key")
        self._accounts = frozenset(accounts)
        if allow_any_account and self._accounts:
            raise ValueError("pass either an accounts allowlist or allow_any_account=True")
        if not allow_any_account and not self._accounts:
            raise ValueError("empty accounts allowlist; pass allow_any_account=True to accept all")
        self._allow_any_account = allow_any_account
        self._leeway_s = leeway_s
        self._issuer = issuer
        self._subject = subject

    def __repr__(self) -> str:
        accounts = "any" if self._allow_any_account else sorted(self._accounts)
        return f"BabelforceCloudValidator(<{len(self._keys)} keys>, accounts={accounts!r})"

    async def __call__(self, request: AuthRequest) -> AuthContext:
        token, carrier = bearer_token(request)
        claims = self.validate(token)
        return AuthContext(
            subject=claims["sub"],
            account=_single_audience(claims["aud"]),
            claims=claims,
            method="jwt",
            carrier=carrier,
        )

    def validate(self, token: str) -> dict[str, Any]:
        """Verified claims of `token`; AuthError with a short reason (never the token) if not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.PyJWTError as error:
            raise AuthError(_describe(error)) from None
        if header.get("alg") != ALGORITHM:
            raise AuthError("algorithm not allowed")
        claims = self._verify(token, header.get("kid"))
        account = _single_audience(claims["aud"])
        if not self._allow_any_account and account not in self._accounts:
            raise AuthError(f"account {account[:64]!r} is not allowed")
        return claims

    def _verify(self, token: str, kid: object) -> dict[str, Any]:
        """Try the key named by `kid` first, then every other key; claims are checked once."""
        keys = sorted(self._keys, key=lambda entry: entry[0] != kid)
        for _, key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    issuer=self._issuer,
                    subject=self._subject,
                    leeway=self._leeway_s,
                    options={"require": ["exp", "iss", "sub", "aud"], "verify_aud": False},
                )
            except jwt_errors.InvalidSignatureError:
                continue
            except jwt_errors.PyJWTError as error:
                raise AuthError(_describe(error)) from None
            return claims
        raise AuthError("signature invalid")


def _single_audience(audience: object) -> str:
    """The babelforce account id: `aud` is one non-empty string (or a one-element list of it)."""
    if isinstance(audience, list) and len(audience) == 1:
        audience = audience[0]
    if not isinstance(audience, str) or not audience:
        raise AuthError("aud claim is not an account id")
    return audience


def load_public_key(source: KeySource) -> rsa.RSAPublicKey:
    """An RSA public key from a key object, PEM text/bytes (key or certificate), or a file path."""
    if isinstance(source, rsa.RSAPublicKey):
        return source
    if isinstance(source, bytes):
        pem = source
    elif isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        pem = source.encode("ascii")
    else:
        with open(source, "rb") as file:
            pem = file.read()
    key: object
    if b"-----BEGIN CERTIFICATE-----" in pem:
        key = load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("only RSA public keys are supported (RS256)")
    return key


def load_public_keys(paths_or_pems: KeySource | Iterable[KeySource]) -> list[rsa.RSAPublicKey]:
    """RSA public keys for configuration: one source or several (paths or PEM texts/bytes)."""
    if isinstance(paths_or_pems, (rsa.RSAPublicKey, bytes, str, os.PathLike)):
        return [load_public_key(paths_or_pems)]
    return [load_public_key(source) for source in paths_or_pems]


def sign_test_token(
    private_key_pem: bytes,
    *,
    account: str,
    lifetime_s: int = 3600,
    kid: str = BABELFORCE_KEY_ID,
    issuer: str = BABELFORCE_ISSUER,
    subject: str = BABELFORCE_SUBJECT,
) -> str:
    """A babelforce-style RS256 token, for test agents and the call simulator (not production)."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": account,
        "iat": now,
        "exp": now + lifetime_s,
        "jti": uuid.uuid4().hex,
    }
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("sign_test_token needs an RSA private key")
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


def generate_test_keypair(key_size: int = 2048) -> tuple[bytes, bytes]:
    """A fresh RSA key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem
