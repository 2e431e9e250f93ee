"""Turn a client's SDP offer into a Peer with receivers and slots, and the SDP answer.

Used by WHIP (publish), WHEP (play) and the room protocol (both, with renegotiation).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver, TrackInfo
from sfu.core.room import Room, Slot
from sfu.negotiate import (
    EXT_MID,
    EXT_RID,
    EXT_RRID,
    EXT_TRANSPORT_CC,
    Negotiated,
    check_transport,
    negotiate_publish,
    negotiate_subscribe,
    primary_codec,
    subscribe_remb_id,
    subscribe_twcc_id,
)
from sfu.net.downlink import ViewerDownlink
from sfu.net.peer import Peer
from sfu.sdp import (
    AnswerMedia,
    AnswerTransport,
    MediaSection,
    Rid,
    SdpError,
    SessionDescription,
    parse,
    write_answer,
)

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
    unpublished: list[Receiver] = field(default_factory=list)
    unsubscribed: list[Slot] = field(default_factory=list)


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


def create_peer(
    node: Node, *, kind: str, room: Room, participant: str, offer: SessionDescription, now: float
) -> Peer:
    """A new peer for the transport parameters of an initial offer."""
    first = next(m for m in offer.media if m.port != 0)
    remote_ufrag, _ = offer.ice_credentials(first)
    fingerprints, setup = offer.dtls(first)
    if setup not in ("actpass", "active", "passive"):
        raise SdpError(f"a=setup:{setup} is not valid in an offer")
    app = next((m for m in offer.media if m.kind == "application" and m.port != 0), None)
    return Peer(
        node,
        kind=kind,
        room=room,
        participant=participant,
        remote_ufrag=remote_ufrag,
        remote_fingerprints=fingerprints,
        dtls_server=setup != "passive",
        sctp_port=(app.sctp_port or SCTP_PORT) if app is not None else None,
        sctp_max_message=app.max_message_size if app is not None else None,
        now=now,
    )


def answer_offer(
    node: Node,
    peer: Peer,
    offer: SessionDescription,
    *,
    allow_publish: bool,
    allow_subscribe: bool,
    subscriptions: dict[str, str] | None = None,
    now: float,
) -> Answered:
    """Negotiate every section of an offer, initial or renegotiated, on `peer`.

    A mid seen before keeps what it was negotiated as (a renegotiation may only stop it);
    a new mid publishes when the client sends on it and subscribes when it receives.
    `subscriptions` maps a receiving mid to the track id it wants (the room protocol);
    without one, a receiving section takes any track of its kind (WHEP).
    Raises SdpError when nothing usable is offered.
    """
    if peer.sections:
        first = next((m for m in offer.media if m.port != 0), None)
        if first is not None and offer.ice_credentials(first)[0] != peer.remote_ufrag:
            raise SdpError("ICE restart (new ice-ufrag) is not supported; open a new session")
    room = peer.room
    subscriptions = subscriptions or {}
    stream_id = f"{room.name}-{peer.participant}"
    sections: list[AnswerMedia] = []
    result = Answered(peer, "", [], [])
    for index, m in enumerate(offer.media):
        mid = m.mid or str(index)
        previous = peer.sections.get(mid)
        if previous is not None:
            sections.append(_keep_or_stop(peer, m, mid, previous, result))
            continue
        answer = AnswerMedia(m.kind, mid, m.proto, rejected=True, formats=m.formats)
        if m.kind == "application":
            if m.port != 0 and (m.sctp_port is not None or "SCTP" in m.proto):
                answer = AnswerMedia(
                    m.kind, mid, m.proto, formats=m.formats,
                    sctp_port=SCTP_PORT, max_message_size=MAX_MESSAGE_SIZE,
                )
        elif m.port != 0 and _sending(m.direction) and allow_publish:
            neg = negotiate_publish(m, audio_red=node.settings.publish_red,
                                    video_fec=node.settings.publish_fec)
            if neg.accepted:
                receiver = _publish(peer, room, peer.participant, stream_id, mid, neg)
                result.published.append(receiver)
                rids = [la.rid for la in receiver.layers if la.rid is not None]
                answer = AnswerMedia(
                    m.kind, mid, m.proto, direction="recvonly", codecs=neg.codecs,
                    extmaps=neg.extmaps,
                    rids=[Rid(r, "recv") for r in rids],
                    simulcast=("recv " + ";".join(rids)) if rids else None,
                )
        elif m.port != 0 and _receiving(m.direction) and allow_subscribe:
            neg = negotiate_subscribe(m, video_fec=node.settings.viewer_fec,
                                      remb=node.settings.bwe_remb)
            if neg.accepted:
                slot = _subscribe_slot(node, peer.participant, mid, neg, session=peer.id)
                slot.wants = subscriptions.get(mid)
                wanted = room.receivers.get(slot.wants) if slot.wants else None
                stream = wanted.info.stream_id if wanted is not None else room.name
                peer.add_slot(slot)
                _enable_downlink(node, peer, m, slot)
                result.subscribed.append(slot)
                dt = slot.downtrack
                ssrcs = [(dt.ssrc, f"sfu-{room.name}")]
                groups: list[tuple[str, list[int]]] = []
                if dt.rtx_ssrc is not None:
                    ssrcs.append((dt.rtx_ssrc, f"sfu-{room.name}"))
                    groups.append(("FID", [dt.ssrc, dt.rtx_ssrc]))
                answer = AnswerMedia(
                    m.kind, mid, m.proto, direction="sendonly", codecs=neg.codecs,
                    extmaps=neg.extmaps, ssrcs=ssrcs, ssrc_groups=groups,
                    msid=f"{stream} {dt.ssrc}",
                )
        peer.sections[mid] = answer
        sections.append(answer)
    if not peer.sections or all(a.rejected for a in sections):
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
        setup="passive" if peer.dtls_server else "active",
        candidates=[(ip, node.udp_port) for ip in node.advertised_ips],
    )
    peer.sdp_version += 1
    result.sdp = write_answer(peer.sdp_session_id, transport, sections, peer.sdp_version)
    return result


def _keep_or_stop(
    peer: Peer, m: MediaSection, mid: str, previous: AnswerMedia, result: Answered
) -> AnswerMedia:
    """A renegotiated section: unchanged, or stopped when the client stopped it."""
    if previous.rejected:
        return previous
    stopped = m.port == 0 or (
        previous.direction == "recvonly" and not _sending(m.direction)
    ) or (previous.direction == "sendonly" and not _receiving(m.direction))
    if not stopped:
        return previous
    receiver = peer.receivers_by_mid.get(mid)
    if receiver is not None and previous.direction == "recvonly":
        peer.remove_receiver(receiver)
        result.unpublished.append(receiver)
    slot = next((s for s in peer.slots if s.downtrack.mid == mid), None)
    if slot is not None and previous.direction == "sendonly":
        peer.remove_slot(slot)
        result.unsubscribed.append(slot)
    stopped_answer = AnswerMedia(m.kind, mid, m.proto, rejected=True, formats=m.formats)
    peer.sections[mid] = stopped_answer
    return stopped_answer


def _publish(
    peer: Peer, room: Room, participant: str, stream_id: str, mid: str, neg: Negotiated
) -> Receiver:
    m = neg.section
    info = TrackInfo(
        track_id=f"{participant}-{mid}-{secrets.token_hex(3)}",
        kind=m.kind,
        participant=participant,
        stream_id=stream_id,
        codec=primary_codec(neg.codecs),
        extmaps=neg.extmaps,
    )
    rids = simulcast_rids(m)
    sim = next((g[1] for g in m.ssrc_groups if g[0] == "SIM" and len(g[1]) > 1), None)
    if len(rids) > 1:
        # RID simulcast: layer SSRCs are learnt from the rtp-stream-id extension.
        receiver = Receiver(info, layer=0, rid=rids[0])
        for i, rid in enumerate(rids[1:], 1):
            receiver.add_layer(Receiver(info, layer=i, rid=rid))
        peer.add_receiver(receiver, mid, [])
    elif sim is not None:
        # SSRC-group simulcast (older clients): the group lists layers from low to high.
        receiver = Receiver(info, layer=0)
        for i in range(1, len(sim)):
            receiver.add_layer(Receiver(info, layer=i))
        peer.add_receiver(receiver, mid, sim)
    else:
        receiver = Receiver(info)
        # Declared SSRCs: the primary of each FID group, else every a=ssrc line (no RTX).
        fid_secondaries = {g[1][1] for g in m.ssrc_groups if g[0] == "FID" and len(g[1]) > 1}
        ssrcs = [s for s in m.ssrcs if s not in fid_secondaries]
        peer.add_receiver(receiver, mid, ssrcs[:1])
    peer.set_extension_ids(m.extmap_id(EXT_MID), m.extmap_id(EXT_RID), m.extmap_id(EXT_RRID))
    peer.enable_twcc(next((e.id for e in neg.extmaps if e.uri == EXT_TRANSPORT_CC), None))
    primary = info.codec
    red_pt = next((c.payload_type for c in neg.codecs if c.name == "RED"), None)
    if red_pt is not None:
        ulpfec_pt = next((c.payload_type for c in neg.codecs if c.name == "ULPFEC"), None)
        red_rtx = next((c.payload_type for c in neg.codecs
                        if c.name == "RTX" and c.apt == red_pt), None)
        for layer in receiver.layers:
            layer.enable_red(red_pt, ulpfec_pt, red_rtx)
    if m.kind == "video" and "nack" in primary.rtcp_fb:
        rtx_pt = next((c.payload_type for c in neg.codecs
                       if c.name == "RTX" and c.apt == primary.payload_type), None)
        for layer in receiver.layers:
            layer.enable_nack(rtx_pt)
        if rtx_pt is not None:
            # Declared RTX SSRCs (FID groups); RID layers' RTX is learnt from repaired-rid.
            by_primary = {r.ssrc: r for r in receiver.layers if r.ssrc is not None}
            for semantic, group in m.ssrc_groups:
                if semantic == "FID" and len(group) == 2 and group[0] in by_primary:
                    peer.add_rtx_ssrc(group[1], by_primary[group[0]])
    return receiver


def simulcast_rids(m: MediaSection) -> list[str]:
    """The send RIDs of a simulcast offer, in a=simulcast order; paused (~) ones skipped."""
    send = [r.rid for r in m.rids if r.direction == "send"]
    if m.simulcast:
        parts = m.simulcast.split()
        if len(parts) >= 2 and parts[0] == "send":
            order = [alt.split(",")[0] for alt in parts[1].split(";")]
            return [r for r in order if not r.startswith("~") and r in send]
    return send


def _enable_downlink(node: Node, peer: Peer, m: MediaSection, slot: Slot) -> None:
    """Number this viewer's egress and estimate its downlink when it offered transport-cc
    (one estimator per transport: every section of the BUNDLE shares it)."""
    settings = node.settings
    if peer.bwe is None:
        ext_id = subscribe_twcc_id(m)
        estimator = settings.bwe_estimator
        if ext_id is None:
            # No transport-cc: a viewer reporting REMB over abs-send-time gets the REMB
            # fallback (ext_id 0: nothing numbered); anything else gets no estimate.
            if (not settings.bwe_remb or subscribe_remb_id(m) is None
                    or estimator == "null"):
                return
            ext_id, estimator = 0, "remb"
        peer.bwe = ViewerDownlink(peer, ext_id, estimator,
                                  probing=settings.bwe_probing, pacing=settings.bwe_pacing,
                                  scheduler=node.pacing,
                                  temporal_steps=settings.bwe_temporal_steps)
        for earlier in peer.slots:  # sections answered before this one (audio first)
            if earlier is not slot and earlier.downtrack.downlink is None:
                peer.bwe.add_track(earlier.downtrack)
    peer.bwe.add_track(slot.downtrack,
                       subscribe_remb_id(m) if peer.bwe.remb else None)


def _subscribe_slot(
    node: Node, participant: str, mid: str, neg: Negotiated, *, session: str
) -> Slot:
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
    if any(c.name == "RTX" for c in neg.codecs):
        dt.rtx_ssrc = node.new_ssrc()
    return Slot(downtrack=dt, subscriber=participant, codecs=neg.codecs, extmaps=neg.extmaps,
                session=session)
