"""Turn a client's SDP offer into a Peer with receivers and slots, and the SDP answer.

Used by WHIP (publish), WHEP (play) and the room protocol (both, with renegotiation).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver, TrackInfo
from sfu.core.room import Room, Slot
from sfu.negotiate import (
    EXT_MID,
    Negotiated,
    check_transport,
    negotiate_publish,
    negotiate_subscribe,
)
from sfu.net.peer import Peer
from sfu.sdp import AnswerMedia, AnswerTransport, SdpError, SessionDescription, parse, write_answer

if TYPE_CHECKING:
    from sfu.node import Node

SCTP_PORT = 5000
MAX_MESSAGE_SIZE = 262144
MAX_SECTIONS = 64


@dataclass(slots=True)
class Answered:
    peer: Peer
    sdp: str
    published: list[Receiver]
    subscribed: list[Slot]


def _sending(direction: str) -> bool:
    return direction in ("sendrecv", "sendonly")


def _receiving(direction: str) -> bool:
    return direction in ("sendrecv", "recvonly")


def parse_offer(text: str) -> SessionDescription:
    offer = parse(text)
    if len(offer.media) > MAX_SECTIONS:
        raise SdpError(f"too many m= sections ({len(offer.media)} > {MAX_SECTIONS})")
    check_transport(offer)
    return offer


def answer_offer(
    node: Node,
    *,
    kind: str,
    room: Room,
    participant: str,
    offer: SessionDescription,
    allow_publish: bool,
    allow_subscribe: bool,
    now: float,
) -> Answered:
    """Create the peer for a new offer. Raises SdpError when nothing usable is offered."""
    first = next(m for m in offer.media if m.port != 0)
    remote_ufrag, _ = offer.ice_credentials(first)
    fingerprints, setup = offer.dtls(first)
    if setup not in ("actpass", "active", "passive"):
        raise SdpError(f"a=setup:{setup} is not valid in an offer")
    dtls_server = setup != "passive"
    app = next((m for m in offer.media if m.kind == "application" and m.port != 0), None)
    peer = Peer(
        node,
        kind=kind,
        room=room,
        participant=participant,
        remote_ufrag=remote_ufrag,
        remote_fingerprints=fingerprints,
        dtls_server=dtls_server,
        sctp_port=(app.sctp_port or SCTP_PORT) if app is not None else None,
        sctp_max_message=app.max_message_size if app is not None else None,
        now=now,
    )
    stream_id = f"{room.name}-{participant}"
    sections: list[AnswerMedia] = []
    published: list[Receiver] = []
    subscribed: list[Slot] = []
    for m in offer.media:
        mid = m.mid or str(len(sections))
        if m.kind == "application":
            if m.port == 0 or m.sctp_port is None and "SCTP" not in m.proto:
                sections.append(AnswerMedia(m.kind, mid, m.proto, rejected=True, formats=m.formats))
            else:
                sections.append(
                    AnswerMedia(
                        m.kind, mid, m.proto, formats=m.formats,
                        sctp_port=SCTP_PORT, max_message_size=MAX_MESSAGE_SIZE,
                    )
                )
            continue
        if m.port != 0 and _sending(m.direction) and allow_publish:
            neg = negotiate_publish(m)
            if neg.accepted:
                receiver = _publish(peer, room, participant, stream_id, mid, neg)
                published.append(receiver)
                sections.append(
                    AnswerMedia(m.kind, mid, m.proto, direction="recvonly",
                                codecs=neg.codecs, extmaps=neg.extmaps)
                )
                continue
        elif m.port != 0 and _receiving(m.direction) and allow_subscribe:
            neg = negotiate_subscribe(m)
            if neg.accepted:
                slot = _subscribe_slot(node, participant, mid, neg)
                peer.add_slot(slot)
                subscribed.append(slot)
                sections.append(
                    AnswerMedia(
                        m.kind, mid, m.proto, direction="sendonly", codecs=neg.codecs,
                        extmaps=neg.extmaps, ssrcs=[(slot.downtrack.ssrc, f"sfu-{room.name}")],
                        msid=f"{room.name} {slot.downtrack.ssrc}",
                    )
                )
                continue
        sections.append(AnswerMedia(m.kind, mid, m.proto, rejected=True, formats=m.formats))
    if not published and not subscribed and app is None:
        reasons = []
        for m in offer.media:
            if m.kind in ("audio", "video") and m.port != 0:
                neg = (negotiate_publish if _sending(m.direction) else negotiate_subscribe)(m)
                reasons.append(f"mid {m.mid}: {neg.reason or 'direction ' + m.direction}")
        raise SdpError("nothing to negotiate: " + ("; ".join(reasons) or "no usable m= section"))
    transport = AnswerTransport(
        ice_ufrag=peer.local_ufrag,
        ice_pwd=peer.local_pwd,
        fingerprint=node.fingerprint,
        setup="passive" if dtls_server else "active",
        candidates=[(ip, node.udp_port) for ip in node.advertised_ips],
    )
    sdp = write_answer(secrets.randbits(62), transport, sections)
    return Answered(peer, sdp, published, subscribed)


def _publish(
    peer: Peer, room: Room, participant: str, stream_id: str, mid: str, neg: Negotiated
) -> Receiver:
    m = neg.section
    info = TrackInfo(
        track_id=f"{participant}-{mid}-{secrets.token_hex(3)}",
        kind=m.kind,
        participant=participant,
        stream_id=stream_id,
        codec=neg.codecs[0],
        extmaps=neg.extmaps,
    )
    receiver = Receiver(info)
    # Declared SSRCs: the primary of each FID group, else every a=ssrc line (no RTX negotiated).
    fid_secondaries = {g[1][1] for g in m.ssrc_groups if g[0] == "FID" and len(g[1]) > 1}
    ssrcs = [s for s in m.ssrcs if s not in fid_secondaries]
    peer.add_receiver(receiver, mid, ssrcs[:1])
    mid_id = m.extmap_id(EXT_MID)
    if mid_id is not None:
        peer.set_mid_extension(mid_id)
    return receiver


def _subscribe_slot(node: Node, participant: str, mid: str, neg: Negotiated) -> Slot:
    m = neg.section
    clock = neg.codecs[0].clock_rate
    dt = DownTrack(
        ssrc=node.new_ssrc(),
        kind=m.kind,
        mid=mid,
        clock_rate=clock,
        seq_start=secrets.randbits(16),
        ts_start=secrets.randbits(32),
    )
    return Slot(downtrack=dt, subscriber=participant, codecs=neg.codecs, extmaps=neg.extmaps)
