"""Access tokens: mint/verify round trip and every way a token must be refused."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from sfu.auth import GRANTS, Claims, TokenError, bearer_token, mint_token, verify_token

KEY = "test-key"
SECRET = "s" * 40
NOW = 1_700_000_000.0


def _mint(**overrides: object) -> str:
    kwargs: dict[str, object] = {
        "api_key": KEY,
        "api_secret": SECRET,
        "room": "shop-1",
        "identity": "alice",
        "grants": ["publish"],
        "ttl": 600,
        "now": NOW,
    }
    kwargs.update(overrides)
    return mint_token(**kwargs)  # type: ignore[arg-type]


def _verify(token: str, **overrides: object) -> Claims:
    kwargs: dict[str, object] = {"api_key": KEY, "api_secret": SECRET, "now": NOW + 1}
    kwargs.update(overrides)
    return verify_token(token, **kwargs)  # type: ignore[arg-type]


def _reason(token: str, **overrides: object) -> str:
    with pytest.raises(TokenError) as info:
        _verify(token, **overrides)
    return info.value.reason


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_round_trip_returns_claims() -> None:
    claims = _verify(_mint(grants=["subscribe", "publish"]))
    assert claims == Claims(
        room="shop-1",
        identity="alice",
        grants=frozenset({"publish", "subscribe"}),
        expires_at=NOW + 600,
    )
    assert claims.allows("publish")
    assert claims.allows("subscribe")
    assert not claims.allows("admin")


def test_payload_has_documented_claims() -> None:
    payload = jwt.decode(_mint(grants=["subscribe", "admin"]), options={"verify_signature": False})
    assert payload == {
        "iss": KEY,
        "sub": "alice",
        "room": "shop-1",
        "grants": ["admin", "subscribe"],
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW + 600),
    }


def test_allows_rejects_unknown_grant_name() -> None:
    claims = _verify(_mint())
    with pytest.raises(ValueError):
        claims.allows("publsh")


def test_expired_after_leeway() -> None:
    token = _mint(ttl=60)
    assert _verify(token, now=NOW + 64).room == "shop-1"  # inside the 5 s leeway
    assert _reason(token, now=NOW + 66) == "expired"
    assert _reason(token, now=NOW + 61, leeway=0) == "expired"


def test_not_yet_valid() -> None:
    token = _mint()
    assert _reason(token, now=NOW - 60) == "not yet valid"
    assert _verify(token, now=NOW - 3).identity == "alice"


def test_bad_signature() -> None:
    assert _reason(_mint(), api_secret="x" * 40) == "bad signature"


def test_tampered_payload_fails_signature() -> None:
    header, _, sig = _mint().split(".")
    forged = _b64(
        {"iss": KEY, "sub": "alice", "room": "shop-1", "grants": ["admin"], "exp": NOW + 600}
    )
    assert _reason(f"{header}.{forged}.{sig}") == "bad signature"


def test_alg_none_rejected() -> None:
    payload = {"iss": KEY, "sub": "eve", "room": "shop-1", "grants": ["admin"], "exp": NOW + 600}
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."
    assert _reason(token) == "unsupported algorithm: none"


def test_other_algorithm_rejected() -> None:
    payload = {"iss": KEY, "sub": "eve", "room": "shop-1", "grants": ["admin"], "exp": NOW + 600}
    token = jwt.encode(payload, "k" * 64, algorithm="HS512")
    assert _reason(token) == "unsupported algorithm: HS512"


def test_wrong_issuer() -> None:
    assert _reason(_mint(api_key="other-key")) == "wrong issuer"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 5000])
def test_malformed_tokens(token: str) -> None:
    assert _reason(token) in {"missing token", "malformed token"}


def _signed(payload: dict[str, object]) -> str:
    return jwt.encode(payload, SECRET, algorithm="HS256")


def test_missing_room_claim() -> None:
    token = _signed({"iss": KEY, "sub": "a", "grants": ["publish"], "exp": NOW + 60})
    assert _reason(token) == "missing claim: room"


def test_missing_exp_claim() -> None:
    token = _signed({"iss": KEY, "sub": "a", "room": "r", "grants": ["publish"]})
    assert _reason(token) == "missing claim: exp"


def test_unknown_grant_in_token() -> None:
    token = _signed({"iss": KEY, "sub": "a", "room": "r", "grants": ["root"], "exp": NOW + 60})
    assert _reason(token) == "unknown grant: root"


def test_grants_must_be_list_of_strings() -> None:
    token = _signed({"iss": KEY, "sub": "a", "room": "r", "grants": "admin", "exp": NOW + 60})
    assert _reason(token) == "invalid claim: grants"


def test_boolean_exp_is_invalid() -> None:
    token = _signed({"iss": KEY, "sub": "a", "room": "r", "grants": [], "exp": True})
    assert _reason(token) == "invalid claim: exp"


def test_star_room_is_just_a_room_name() -> None:
    claims = _verify(_mint(room="*"))
    assert claims.room == "*"


def test_mint_unknown_grant_raises() -> None:
    with pytest.raises(ValueError, match="unknown grant: root"):
        _mint(grants=["publish", "root"])


def test_mint_rejects_grants_given_as_string() -> None:
    with pytest.raises(TypeError):
        _mint(grants="publish")


@pytest.mark.parametrize(
    ("field", "value"),
    [("room", ""), ("room", "r" * 129), ("identity", ""), ("identity", "bob\n")],
)
def test_mint_validates_names(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        _mint(**{field: value})


def test_mint_accepts_128_char_names() -> None:
    assert _verify(_mint(room="r" * 128, identity="i" * 128)).room == "r" * 128


def test_mint_rejects_short_secret_and_bad_ttl() -> None:
    with pytest.raises(ValueError):
        _mint(api_secret="short")
    with pytest.raises(ValueError):
        _mint(ttl=0)


def test_all_grants_round_trip() -> None:
    assert _verify(_mint(grants=GRANTS)).grants == GRANTS


@pytest.mark.parametrize(
    "header", ["Bearer abc.def.ghi", "bearer abc.def.ghi", "BEARER  abc.def.ghi "]
)
def test_bearer_token_extracts(header: str) -> None:
    assert bearer_token(header) == "abc.def.ghi"


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer  "])
def test_bearer_token_missing(header: str | None) -> None:
    with pytest.raises(TokenError) as info:
        bearer_token(header)
    assert info.value.reason == "missing token"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "abc.def.ghi", "Bearer a b"])
def test_bearer_token_malformed(header: str) -> None:
    with pytest.raises(TokenError) as info:
        bearer_token(header)
    assert info.value.reason == "malformed authorization header"
