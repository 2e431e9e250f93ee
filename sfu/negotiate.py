"""Offer/answer policy: which codecs, feedback and header extensions the node accepts.

Pure functions over parsed SDP. Publishers get exactly one codec per section, so the node knows
what it forwards; subscribers get every codec the node can forward that they offered, and each
down-track maps the publisher's payload type to the subscriber's.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfu.sdp import Codec, Extmap, MediaSection, SdpError, SessionDescription

EXT_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
EXT_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
EXT_RRID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
EXT_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
EXT_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
EXT_ABS_CAPTURE = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"
EXT_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
EXT_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
EXT_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

# Extensions a publisher may send us: routing ones, those we pass on, and transport-cc (the
# node returns transport-cc feedback to publishers; subscribers get it with a send-side estimator).
PUBLISH_EXTENSIONS = {
    "audio": (EXT_MID, EXT_AUDIO_LEVEL, EXT_ABS_CAPTURE, EXT_TRANSPORT_CC),
    "video": (EXT_MID, EXT_RID, EXT_RRID, EXT_VIDEO_ORIENTATION, EXT_ABS_CAPTURE, EXT_PLAYOUT_DELAY,
              EXT_TRANSPORT_CC),
}
# Extensions copied end to end (renumbered). mid/rid are hop-by-hop: the subscriber demuxes by
# the SSRCs its answer declares, so they are not forwarded.
FORWARD_EXTENSIONS = frozenset(
    {EXT_AUDIO_LEVEL, EXT_VIDEO_ORIENTATION, EXT_ABS_CAPTURE, EXT_PLAYOUT_DELAY}
)

SUPPORTED_CODECS = {"audio": ("OPUS",), "video": ("VP8", "H264")}
VIDEO_FEEDBACK = ("nack", "nack pli", "ccm fir")
PUBLISH_FEEDBACK = ("transport-cc",)  # publishers, and viewers offering the transport-cc ext
REMB_FEEDBACK = ("goog-remb",)  # video viewers without transport-cc (receive-side estimate)


@dataclass(slots=True)
class Negotiated:
    """What one offered media section became."""

    section: MediaSection
    codecs: list[Codec]
    extmaps: list[Extmap]
    accepted: bool
    reason: str = ""


def h264_profile(codec: Codec) -> str:
    """profile_idc + constraint flags of profile-level-id (level ignored: we forward as-is)."""
    return codec.fmtp.get("profile-level-id", "42e01f")[:4].lower()


def _usable(codec: Codec, kind: str) -> bool:
    if codec.name not in SUPPORTED_CODECS.get(kind, ()):
        return False
    if codec.name == "H264":
        # Mode 0 (single NAL unit) cannot carry Chromium's larger frames; we forward mode 1.
        return codec.fmtp.get("packetization-mode", "0") == "1"
    if codec.name == "OPUS":
        return codec.clock_rate == 48000
    return True


def _answer_codec(codec: Codec, kind: str, publish: bool = False, twcc: bool = False,
                  remb: bool = False) -> Codec:
    allowed = (VIDEO_FEEDBACK if kind == "video" else ()) + (
        PUBLISH_FEEDBACK if publish or twcc else ()
    ) + (REMB_FEEDBACK if remb else ())
    fb = [f for f in codec.rtcp_fb if f in allowed]
    return Codec(
        payload_type=codec.payload_type,
        name=codec.name,
        clock_rate=codec.clock_rate,
        channels=codec.channels,
        fmtp=dict(codec.fmtp),
        rtcp_fb=fb,
    )


def _extmaps(m: MediaSection, allowed: tuple[str, ...] | frozenset[str]) -> list[Extmap]:
    return [Extmap(e.id, e.uri) for e in m.extmaps if e.uri in allowed]


def check_transport(offer: SessionDescription) -> None:
    """Rules every offer must meet; raises SdpError."""
    active = [m for m in offer.media if m.port != 0]
    if not active:
        raise SdpError("every m= section is rejected (port 0)")
    for m in active:
        if m.kind in ("audio", "video"):
            if "SAVPF" not in m.proto:
                raise SdpError(f"m={m.kind} uses {m.proto}: only UDP/TLS/RTP/SAVPF (DTLS-SRTP)")
            if not m.rtcp_mux:
                raise SdpError(f"m={m.kind} mid {m.mid}: a=rtcp-mux is required")
        if not m.mid:
            raise SdpError(f"m={m.kind} has no a=mid")
        offer.ice_credentials(m)
        offer.dtls(m)
    if len(active) > 1 and not set(m.mid or "" for m in active) <= set(offer.bundle):
        raise SdpError("a=group:BUNDLE with every section is required (one transport per peer)")


REPAIR_NAMES = frozenset({"RTX", "RED", "ULPFEC"})


def primary_codec(codecs: list[Codec]) -> Codec:
    """The media codec of a negotiated list (RED may come first: see negotiate_publish)."""
    return next(c for c in codecs if c.name not in REPAIR_NAMES)


def negotiate_publish(m: MediaSection, *, audio_red: bool = False,
                      video_fec: bool = False) -> Negotiated:
    """A section the client sends on: accept exactly one media codec.

    With `audio_red`, Opus RED too when offered, listed BEFORE Opus: libwebrtc sends RED
    only when it is negotiated ahead of the codec it carries. With `video_fec`, red/90000 +
    ulpfec/90000 (and RED's RTX) when offered: Chromium then sends every video packet in
    RED, with ULPFEC as its loss-protection logic decides, which the Receiver unwraps and
    recovers from.
    """
    if m.port == 0 or m.kind not in SUPPORTED_CODECS:
        return Negotiated(m, [], [], False, "unsupported kind" if m.port else "rejected")
    for codec in m.codecs:
        if _usable(codec, m.kind):
            chosen = [_answer_codec(codec, m.kind, publish=True)]
            # Its RTX, so the node's NACKs upstream are answered on a separate stream.
            rtx = [_answer_codec(c, m.kind) for c in m.codecs if c.name == "RTX"
                   and c.apt == codec.payload_type][:1]
            chosen += rtx
            if m.kind == "audio" and audio_red:
                red = next((c for c in m.codecs if c.name == "RED"
                            and red_primary(c) == codec.payload_type), None)
                if red is not None:
                    chosen.insert(0, _answer_codec(red, m.kind))
            if m.kind == "video" and video_fec:
                chosen += video_fec_codecs(m.codecs, need_rtx=bool(rtx))
            return Negotiated(m, chosen, _extmaps(m, PUBLISH_EXTENSIONS[m.kind]), True)
    offered = ", ".join(sorted({c.name for c in m.codecs})) or "none"
    return Negotiated(
        m, [], [], False,
        f"no supported {m.kind} codec (offered {offered}; supported "
        f"{', '.join(SUPPORTED_CODECS[m.kind])})",
    )


def video_fec_codecs(offered: list[Codec], *, need_rtx: bool) -> list[Codec]:
    """red/90000, ulpfec/90000 and RED's RTX from a video section, answered together or
    not at all: without RTX for RED a viewer that negotiated RTX could not be sent the RED
    packets it NACKs (libwebrtc retransmits the RED packet, on the RTX of RED's apt)."""
    red = next((c for c in offered if c.name == "RED" and c.clock_rate == 90000), None)
    fec = next((c for c in offered if c.name == "ULPFEC" and c.clock_rate == 90000), None)
    if red is None or fec is None:
        return []
    rtx = next((c for c in offered if c.name == "RTX" and c.apt == red.payload_type), None)
    if need_rtx and rtx is None:
        return []
    out = [red, fec] + ([rtx] if rtx is not None else [])
    return [_answer_codec(c, "video") for c in out]


def negotiate_subscribe(
    m: MediaSection, *, video_fec: bool = True, remb: bool = False
) -> Negotiated:
    """A section the client receives on: accept every codec we can forward.

    With `video_fec`, red/90000 + ulpfec/90000 when the viewer offers both: the node then
    sends its video in RED and adds ULPFEC when the viewer's loss and RTT call for it.
    `remb`: offer the REMB fallback (abs-send-time + goog-remb) to a viewer without
    transport-cc."""
    if m.port == 0 or m.kind not in SUPPORTED_CODECS:
        return Negotiated(m, [], [], False, "unsupported kind" if m.port else "rejected")
    # Transport-cc towards the viewer (the node's send-side estimator), when it offers the
    # extension with an id the one-byte form can carry.
    twcc = subscribe_twcc_id(m) is not None
    # Otherwise REMB (the viewer estimates, e.g. aiortc): abs-send-time stamped on egress.
    remb = remb and not twcc and subscribe_remb_id(m) is not None
    codecs = [_answer_codec(c, m.kind, twcc=twcc, remb=remb) for c in m.codecs
              if _usable(c, m.kind)]
    if not codecs:
        return Negotiated(m, [], [], False, f"no supported {m.kind} codec")
    primary = {c.payload_type for c in codecs}
    # Retransmissions (RTX, RFC 4588) for video and redundancy (RED, RFC 2198) for Opus, when
    # the viewer offers them for a codec we forward.
    extra = [_answer_codec(c, m.kind) for c in m.codecs
             if (c.name == "RTX" and c.apt in primary)
             or (c.name == "RED" and m.kind == "audio" and red_primary(c) in primary)]
    if m.kind == "video" and video_fec:
        extra += video_fec_codecs(m.codecs, need_rtx=any(c.name == "RTX" for c in extra))
    allowed = FORWARD_EXTENSIONS | {EXT_TRANSPORT_CC} if twcc else FORWARD_EXTENSIONS
    if remb:
        allowed = allowed | {EXT_ABS_SEND_TIME}
    return Negotiated(m, codecs + extra, _extmaps(m, allowed), True)


def subscribe_twcc_id(m: MediaSection) -> int | None:
    """The transport-cc extension id a viewer's section offers (1..14), else None."""
    ext_id = m.extmap_id(EXT_TRANSPORT_CC)
    return ext_id if ext_id is not None and 1 <= ext_id <= 14 else None


def subscribe_remb_id(m: MediaSection) -> int | None:
    """The abs-send-time extension id (1..14) of a video section whose codecs offer
    goog-remb: the viewer runs a receive-side estimator and reports REMB. None otherwise."""
    if m.kind != "video":
        return None
    ext_id = m.extmap_id(EXT_ABS_SEND_TIME)
    if ext_id is None or not 1 <= ext_id <= 14:
        return None
    if not any("goog-remb" in c.rtcp_fb for c in m.codecs if _usable(c, m.kind)):
        return None
    return ext_id


def red_primary(codec: Codec) -> int | None:
    """The payload type RED carries (fmtp `111/111`), or None."""
    for key in codec.fmtp:
        first = key.split("/")[0]
        if first.isdigit():
            return int(first)
    return None


def repair_codecs(primary: Codec, candidates: list[Codec]) -> tuple[int | None, int | None]:
    """The RTX and RED payload types a viewer negotiated for its codec `primary`."""
    rtx = next((c.payload_type for c in candidates
                if c.name == "RTX" and c.apt == primary.payload_type), None)
    red = next((c.payload_type for c in candidates
                if c.name == "RED" and red_primary(c) == primary.payload_type), None)
    return rtx, red


def fec_codecs(candidates: list[Codec]) -> tuple[int, int, int | None] | None:
    """(RED, ULPFEC, RED's RTX) payload types a viewer negotiated for video FEC, or None."""
    red = next((c.payload_type for c in candidates
                if c.name == "RED" and c.clock_rate == 90000), None)
    fec = next((c.payload_type for c in candidates if c.name == "ULPFEC"), None)
    if red is None or fec is None:
        return None
    rtx = next((c.payload_type for c in candidates if c.name == "RTX" and c.apt == red), None)
    return red, fec, rtx


def match_codec(source: Codec, candidates: list[Codec]) -> Codec | None:
    """The subscriber codec that can carry the publisher's packets unchanged."""
    same = [c for c in candidates if c.name == source.name and c.clock_rate == source.clock_rate]
    if source.name == "H264":
        exact = [c for c in same if h264_profile(c) == h264_profile(source)]
        if exact:
            return exact[0]
        # Constrained baseline streams decode with any baseline-family profile.
        base = [c for c in same if h264_profile(c)[:2] == h264_profile(source)[:2]]
        return base[0] if base else None
    return same[0] if same else None


def extension_map(publisher: list[Extmap], subscriber: list[Extmap]) -> dict[int, int]:
    """Publisher extension id -> subscriber id, for extensions forwarded end to end."""
    sub = {e.uri: e.id for e in subscriber}
    return {e.id: sub[e.uri] for e in publisher if e.uri in FORWARD_EXTENSIONS and e.uri in sub}
