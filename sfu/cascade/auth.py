"""Mutual authentication of two cascade nodes by their shared node secret (sans-I/O).

Both nodes of a cluster hold the same `api_secret`. Before anything else crosses the control
stream, each side proves it knows the secret without revealing it, over nonces both sides
chose (so a recorded proof is worthless on another connection), bound to the origin's TLS
certificate (so a man in the middle that terminates QUIC with a certificate of its own
cannot relay the proofs):

    edge   -> origin  hello     {room, node, nonce_e}
    origin -> edge    challenge {nonce_o}
    edge   -> origin  auth      {proof_e = HMAC(secret, "edge"   | room | nonce_e | nonce_o | cert)}
    origin -> edge    welcome   {proof_o = HMAC(secret, "origin" | room | nonce_e | nonce_o | cert)}

The origin checks the edge's proof first, so a node with a wrong secret is refused (and
counted) by the origin; the edge then checks the origin's, so an impostor origin learns
nothing it could reuse. `cert` is the SHA-256 of the origin certificate's DER encoding.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sfu.wire.cascade import NONCE_SIZE, VERSION

AUTH_TIMEOUT = 5.0  # seconds an origin waits for a connection to authenticate
_LABEL = b"sfu-cascade/1"


class AuthError(Exception):
    """The peer failed to prove it holds the node secret (or broke the handshake order)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def proof(secret: str, role: str, room: str, edge_nonce: bytes, origin_nonce: bytes,
          binding: bytes) -> bytes:
    """The HMAC-SHA256 one side sends to show it knows `secret`."""
    msg = b"|".join((_LABEL, role.encode(), room.encode(), edge_nonce, origin_nonce, binding))
    return hmac.new(secret.encode(), msg, hashlib.sha256).digest()


def cert_binding(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


class EdgeHandshake:
    """The edge's side: hello, then answer the challenge, then check the origin's proof."""

    def __init__(self, secret: str, room: str, node_id: str, *,
                 nonce: bytes | None = None) -> None:
        self.secret = secret
        self.room = room
        self.node_id = node_id
        self.nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_SIZE)
        self.origin_nonce: bytes | None = None
        self.binding = b""
        self.done = False

    def hello(self) -> dict[str, Any]:
        return {"t": "hello", "v": VERSION, "room": self.room, "node": self.node_id,
                "nonce": self.nonce.hex()}

    def on_challenge(self, message: dict[str, Any], binding: bytes) -> dict[str, Any]:
        """The `auth` reply; `binding` is the origin certificate as this edge saw it."""
        if self.origin_nonce is not None or self.done:
            raise AuthError("protocol", "challenge received twice")
        self.origin_nonce = bytes.fromhex(message["nonce"])
        self.binding = binding
        mine = proof(self.secret, "edge", self.room, self.nonce, self.origin_nonce, binding)
        return {"t": "auth", "proof": mine.hex()}

    def on_welcome(self, message: dict[str, Any]) -> None:
        """Raises AuthError unless the origin proved it holds the same secret."""
        if self.origin_nonce is None or self.done:
            raise AuthError("protocol", "welcome before challenge")
        expected = proof(self.secret, "origin", self.room, self.nonce, self.origin_nonce,
                         self.binding)
        if not hmac.compare_digest(expected, bytes.fromhex(message["proof"])):
            raise AuthError("auth_failed", "the origin does not hold this cluster's node "
                            "secret (api_secret differs)")
        self.done = True


class OriginHandshake:
    """The origin's side: challenge a hello, check the edge's proof, then prove itself."""

    def __init__(self, secret: str, binding: bytes, now: float, *,
                 nonce: bytes | None = None, timeout: float = AUTH_TIMEOUT) -> None:
        self.secret = secret
        self.binding = binding
        self.nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_SIZE)
        self.deadline = now + timeout
        self.room: str | None = None
        self.edge_node = ""
        self.edge_nonce: bytes | None = None
        self.done = False

    def expired(self, now: float) -> bool:
        return not self.done and now >= self.deadline

    def on_hello(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.room is not None:
            raise AuthError("protocol", "hello received twice")
        self.room = message["room"]
        self.edge_node = message["node"]
        self.edge_nonce = bytes.fromhex(message["nonce"])
        return {"t": "challenge", "nonce": self.nonce.hex()}

    def on_auth(self, message: dict[str, Any]) -> dict[str, Any]:
        """The `welcome` reply; raises AuthError when the edge's proof is wrong."""
        if self.room is None or self.edge_nonce is None or self.done:
            raise AuthError("protocol", "auth before hello")
        expected = proof(self.secret, "edge", self.room, self.edge_nonce, self.nonce,
                         self.binding)
        if not hmac.compare_digest(expected, bytes.fromhex(message["proof"])):
            raise AuthError("auth_failed", "the edge does not hold this cluster's node "
                            "secret (api_secret differs)")
        self.done = True
        mine = proof(self.secret, "origin", self.room, self.edge_nonce, self.nonce,
                     self.binding)
        return {"t": "welcome", "proof": mine.hex()}
