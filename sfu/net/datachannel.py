"""Datachannel messages on a peer connection: a versioned JSON envelope.

The node greets every channel with `hello` and answers `clock.ping` with `clock.pong` (server
time, for countdowns that end together) at once, ahead of any queued message. Other types go
to the commerce service (``node.commerce``, which also gets every channel when it opens) or
the ``node.on_datachannel_message`` hook; anything malformed gets an `error` message and the
channel stays open.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from aiortc import RTCDataChannel

if TYPE_CHECKING:
    from sfu.net.peer import Peer
    from sfu.node import Node

log = logging.getLogger("sfu.datachannel")

MAX_MESSAGE = 16 * 1024
VERSION = 1


def envelope(type_: str, **fields: Any) -> str:
    return json.dumps({"v": VERSION, "type": type_, **fields}, separators=(",", ":"))


def attach(node: Node, peer: Peer, channel: RTCDataChannel) -> None:
    def hello() -> None:
        channel.send(
            envelope("hello", room=peer.room.name, participant=peer.participant, session=peer.id)
        )
        if node.commerce is not None:
            node.commerce.channel_opened(peer, channel)

    if channel.readyState == "open":
        hello()
    else:
        channel.on("open", hello)

    @channel.on("message")
    def on_message(message: str | bytes) -> None:
        handle_message(node, peer, channel, message)


def handle_message(node: Node, peer: Peer, channel: RTCDataChannel, message: str | bytes) -> None:
    m = node.metrics
    m.packets_in["datachannel"] += 1
    size = len(message.encode()) if isinstance(message, str) else len(message)
    if size > MAX_MESSAGE:
        m.drop("datachannel_oversized")
        channel.send(envelope("error", code="too_large", reason=f"message over {MAX_MESSAGE} bytes"))
        return
    try:
        msg = json.loads(message)
    except (ValueError, RecursionError):  # deep nesting must not escape into aiortc's DTLS loop
        m.drop("datachannel_malformed")
        channel.send(envelope("error", code="malformed", reason="message is not JSON"))
        return
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        m.drop("datachannel_malformed")
        channel.send(envelope("error", code="malformed", reason="expected an object with a type"))
        return
    kind = msg["type"]
    if kind == "clock.ping":
        # Answered here, bypassing every queue: a pong that waited would spoil the estimate.
        m.packets_out["datachannel_pong"] += 1
        channel.send(pong(msg, time.time()))
        return
    commerce = node.commerce
    if commerce is not None:
        try:
            commerce.on_message(peer, channel, message)
        except Exception:  # never let it escape into aiortc's receive loop
            log.exception("commerce message handler failed")
            channel.send(envelope("error", code="internal", reason="message not processed"))
        return
    hook = node.on_datachannel_message
    if hook is not None and hook(peer, channel, msg):
        return
    m.drop("datachannel_unknown_type")
    channel.send(envelope("error", code="unknown_type", reason=f"unknown message type {kind!r}"))


def pong(ping: dict[str, Any], server_time: float) -> str:
    """``clock.pong`` for a ``clock.ping``: ``{id, client_time, server_time}`` when the ping
    carries a numeric ``client_time`` (signalling.messages.ClockPong), else the original
    ``{id, server_time}`` form."""
    ping_id = ping.get("id")
    client_time = ping.get("client_time")
    if (
        isinstance(client_time, int | float)
        and not isinstance(client_time, bool)
        and math.isfinite(client_time)
        and isinstance(ping_id, int)
        and not isinstance(ping_id, bool)
    ):
        return envelope("clock.pong", id=ping_id, client_time=client_time, server_time=server_time)
    return envelope("clock.pong", id=ping_id, server_time=server_time)
