"""Access tokens: minting and verifying the HS256 JWTs that gate publish, subscribe and admin.

A token is scoped to exactly one room and one identity and carries a set of grants. The
issuer (``iss``) is the API key and the HMAC key is the API secret, so rotating the secret
invalidates every outstanding token. Verification never trusts the token's own header: only
HS256 is accepted, and every time-based check takes an injectable ``now``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

GRANTS = frozenset({"publish", "subscribe", "admin"})

ALGORITHM = "HS256"
# Shorter HMAC keys are brute-forceable offline from any captured token (RFC 7518 §3.2).
MIN_SECRET_LENGTH = 32
MAX_NAME_LENGTH = 128
# Real tokens are a few hundred bytes; the cap stops a hostile header costing a big decode.
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class Claims:
    """What a verified token lets its bearer do."""

    room: str
    identity: str
    grants: frozenset[str]
    expires_at: float

    def allows(self, grant: str) -> bool:
        """True if the token carries ``grant``; grants do not imply one another."""
        if grant not in GRANTS:
            # A typo in a call site would otherwise silently deny everyone.
            raise ValueError(f"unknown grant: {grant!r}")
        return grant in self.grants


class TokenError(Exception):
    """A token was missing or not acceptable; ``reason`` is short and safe to show a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _name_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return "empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    if not value.isprintable():
        return "not printable"
    return None


def _check_secret(api_secret: str) -> None:
    if len(api_secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"api_secret must be at least {MIN_SECRET_LENGTH} characters")


def mint_token(
    *,
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    grants: Iterable[str],
    ttl: float = 6 * 3600,
    now: float | None = None,
) -> str:
    """Sign a token for ``identity`` in ``room``; raises ValueError on bad arguments."""
    if not api_key:
        raise ValueError("api_key must not be empty")
    _check_secret(api_secret)
    for field, value in (("room", room), ("identity", identity)):
        problem = _name_problem(value)
        if problem:
            raise ValueError(f"{field} is {problem}")
    if isinstance(grants, str):
        # Iterating "publish" would yield single letters and a confusing "unknown grant: p".
        raise TypeError("grants must be an iterable of grant names, not a string")
    grant_set = set(grants)
    unknown = sorted(grant_set - GRANTS)
    if unknown:
        raise ValueError(f"unknown grant: {unknown[0]} (valid grants: {', '.join(sorted(GRANTS))})")
    if not grant_set:
        raise ValueError("at least one grant is required")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError("ttl must be a positive number of seconds")
    issued = time.time() if now is None else now
    payload = {
        "iss": api_key,
        "sub": identity,
        "room": room,
        "grants": sorted(grant_set),
        "iat": int(issued),
        "nbf": int(issued),
        # Rounded up so a token never expires before the requested ttl has elapsed.
        "exp": math.ceil(issued + ttl),
    }
    return jwt.encode(payload, api_secret, algorithm=ALGORITHM)


def _numeric_claim(payload: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    if name not in payload:
        if required:
            raise TokenError(f"missing claim: {name}")
        return None
    value = payload[name]
    # bool is an int subclass; "exp": true must not pass as 1970-01-01T00:00:01.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError(f"invalid claim: {name}")
    return float(value)


def _name_claim(payload: Mapping[str, Any], name: str) -> str:
    if name not in payload:
        raise TokenError(f"missing claim: {name}")
    value = payload[name]
    if _name_problem(value):
        raise TokenError(f"invalid claim: {name}")
    assert isinstance(value, str)
    return value


def verify_token(
    token: str,
    *,
    api_key: str,
    api_secret: str,
    now: float | None = None,
    leeway: float = 5.0,
) -> Claims:
    """Check signature, issuer, validity window and claims; raises TokenError."""
    _check_secret(api_secret)
    if not token:
        raise TokenError("missing token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("malformed token") from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        # Checked before decoding so "none" and RS/HS confusion never reach a verifier.
        raise TokenError(f"unsupported algorithm: {alg}")
    try:
        payload = jwt.decode(
            token,
            api_secret,
            algorithms=[ALGORITHM],
            # Only the signature is PyJWT's job: claims are checked below against our `now`.
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
                "require": [],
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenError("bad signature") from None
    except jwt.PyJWTError:
        raise TokenError("malformed token") from None

    if payload.get("iss") != api_key:
        raise TokenError("wrong issuer")
    current = time.time() if now is None else now
    expires_at = _numeric_claim(payload, "exp", required=True)
    assert expires_at is not None
    if current > expires_at + leeway:
        raise TokenError("expired")
    not_before = _numeric_claim(payload, "nbf", required=False)
    if not_before is not None and current + leeway < not_before:
        raise TokenError("not yet valid")

    room = _name_claim(payload, "room")
    identity = _name_claim(payload, "sub")
    if "grants" not in payload:
        raise TokenError("missing claim: grants")
    raw_grants = payload["grants"]
    if not isinstance(raw_grants, list) or not all(isinstance(g, str) for g in raw_grants):
        raise TokenError("invalid claim: grants")
    for grant in raw_grants:
        if grant not in GRANTS:
            raise TokenError(f"unknown grant: {grant[:32]}")
    return Claims(room=room, identity=identity, grants=frozenset(raw_grants), expires_at=expires_at)


def bearer_token(authorization_header: str | None) -> str:
    """Extract the token from an ``Authorization: Bearer <token>`` header value."""
    if authorization_header is None or not authorization_header.strip():
        raise TokenError("missing token")
    parts = authorization_header.split()
    if parts[0].lower() != "bearer":
        raise TokenError("malformed authorization header")
    if len(parts) == 1:
        raise TokenError("missing token")
    if len(parts) != 2:
        raise TokenError("malformed authorization header")
    return parts[1]
