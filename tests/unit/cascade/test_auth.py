"""The node-secret handshake between an edge and an origin (sans-I/O)."""

from __future__ import annotations

import pytest

from sfu.cascade.auth import AuthError, EdgeHandshake, OriginHandshake
from sfu.wire.cascade import EDGE_MESSAGES, ORIGIN_MESSAGES, decode, encode

SECRET = "s" * 40
CERT = b"\x01" * 32


def wire(message: dict[str, object], accept: frozenset[str]) -> dict[str, object]:
    return decode(encode(message)[:-1], accept)  # every message crosses the real codec


def run(edge_secret: str, origin_secret: str, *, edge_sees: bytes = CERT,
        origin_has: bytes = CERT) -> tuple[EdgeHandshake, OriginHandshake]:
    edge = EdgeHandshake(edge_secret, "shop", "edge-1")
    origin = OriginHandshake(origin_secret, origin_has, now=0.0)
    challenge = origin.on_hello(wire(edge.hello(), EDGE_MESSAGES))
    auth = edge.on_challenge(wire(challenge, ORIGIN_MESSAGES), edge_sees)
    welcome = origin.on_auth(wire(auth, EDGE_MESSAGES))
    edge.on_welcome(wire(welcome, ORIGIN_MESSAGES))
    return edge, origin


def test_same_secret_authenticates_both_sides() -> None:
    edge, origin = run(SECRET, SECRET)
    assert edge.done and origin.done
    assert origin.room == "shop" and origin.edge_node == "edge-1"


def test_wrong_edge_secret_is_refused_by_the_origin() -> None:
    with pytest.raises(AuthError) as info:
        run("w" * 40, SECRET)
    assert info.value.code == "auth_failed"
    assert "secret" in str(info.value)


def test_an_origin_without_the_secret_is_refused_by_the_edge() -> None:
    edge = EdgeHandshake(SECRET, "shop", "edge-1")
    impostor = OriginHandshake("w" * 40, CERT, now=0.0)
    edge.on_challenge(impostor.on_hello(edge.hello()), CERT)
    forged = {"t": "welcome", "proof": "00" * 32}
    with pytest.raises(AuthError):
        edge.on_welcome(forged)
    assert not edge.done


def test_a_relaying_man_in_the_middle_fails() -> None:
    # The edge saw the middlebox's certificate, the origin signs its own.
    with pytest.raises(AuthError):
        run(SECRET, SECRET, edge_sees=b"\x02" * 32)


def test_a_recorded_proof_does_not_open_another_connection() -> None:
    edge = EdgeHandshake(SECRET, "shop", "edge-1")
    first = OriginHandshake(SECRET, CERT, now=0.0)
    auth = edge.on_challenge(first.on_hello(edge.hello()), CERT)
    second = OriginHandshake(SECRET, CERT, now=0.0)  # a fresh origin nonce
    second.on_hello(edge.hello())
    with pytest.raises(AuthError):
        second.on_auth(auth)


def test_order_is_enforced() -> None:
    origin = OriginHandshake(SECRET, CERT, now=0.0)
    with pytest.raises(AuthError) as info:
        origin.on_auth({"t": "auth", "proof": "00" * 32})
    assert info.value.code == "protocol"
    edge = EdgeHandshake(SECRET, "shop", "e")
    with pytest.raises(AuthError):
        edge.on_welcome({"t": "welcome", "proof": "00" * 32})


def test_the_origin_gives_up_on_a_silent_connection() -> None:
    origin = OriginHandshake(SECRET, CERT, now=10.0, timeout=5.0)
    assert not origin.expired(14.9)
    assert origin.expired(15.0)
    _, done = run(SECRET, SECRET)
    assert not done.expired(1e9)  # an authenticated link never expires
