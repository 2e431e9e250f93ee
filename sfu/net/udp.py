"""The node's one UDP media port: ICE-lite STUN answers and demultiplexing (RFC 7983).

The first byte says what a datagram is: 0-3 STUN, 20-63 DTLS, 128-191 RTP/RTCP. STUN binding
requests find their session by the USERNAME (our ufrag first) and must carry a valid
MESSAGE-INTEGRITY keyed with that session's ICE password; everything else finds its session by
the sender's address, learnt from a valid check. Anything else is a counted drop.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING

from aioice import stun

if TYPE_CHECKING:
    from sfu.node import Node

log = logging.getLogger("sfu.udp")


def _norm(addr: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    return (addr[0], addr[1])


class UdpMux(asyncio.DatagramProtocol):
    """Datagram callback of the media port."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.transport: asyncio.DatagramTransport | None = None
        self.loop = asyncio.get_event_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a vanished peer, for instance: never fatal.
        self.node.metrics.drop("send_error")

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        node = self.node
        if len(data) < 2:
            node.metrics.drop("garbage")
            return
        now = self.loop.time()
        first = data[0]
        if first > 127:
            if first < 192:
                peer = node.peers_by_addr.get(_norm(addr))
                if peer is None:
                    node.metrics.drop("unknown_peer")
                    return
                peer.on_srtp(data, now)
                return
        elif first < 4:
            self._stun(data, _norm(addr), now)
            return
        elif 19 < first < 64:
            peer = node.peers_by_addr.get(_norm(addr))
            if peer is None:
                node.metrics.drop("unknown_peer")
                return
            node.metrics.packets_in["dtls"] += 1
            node.metrics.bytes_in["dtls"] += len(data)
            peer.on_dtls(data, now)
            return
        node.metrics.drop("garbage")

    def _stun(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        m = self.node.metrics
        m.packets_in["stun"] += 1
        m.bytes_in["stun"] += len(data)
        try:
            msg = stun.parse_message(data)
        except (ValueError, struct.error):  # aioice unpacks fixed-size attributes unchecked
            m.drop("stun_malformed")
            return
        if msg.message_method != stun.Method.BINDING:
            m.drop("stun_malformed")
            return
        if msg.message_class == stun.Class.INDICATION:
            return  # keepalive; carries no credentials
        if msg.message_class != stun.Class.REQUEST:
            m.drop("stun_malformed")
            return
        username = msg.attributes.get("USERNAME")
        if not isinstance(username, str) or ":" not in username:
            m.drop("stun_malformed")
            return
        local, _, remote = username.partition(":")
        peer = self.node.peers_by_ufrag.get(local)
        if peer is None or remote != peer.remote_ufrag:
            m.drop("stun_unknown_user")
            return
        if "MESSAGE-INTEGRITY" not in msg.attributes or not msg.check_message_integrity(
            peer.local_pwd.encode()
        ):
            m.drop("stun_integrity")
            return
        if not self.node.peer_address_allowed(addr[0]):
            m.drop("peer_network")
            return
        peer.on_binding(addr, "USE-CANDIDATE" in msg.attributes, now)
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=msg.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(peer.local_pwd.encode())
        response.add_fingerprint()
        self.node.send_datagram(bytes(response), addr, "stun")
