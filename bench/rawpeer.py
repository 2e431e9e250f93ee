"""A lightweight WebRTC peer for load generation, without aiortc's RTCPeerConnection.

It speaks just enough WebRTC to publish to or play from the node over WHIP/WHEP:

* its own SDP offer (BUNDLE, rtcp-mux, ICE ufrag/pwd, a=fingerprint, setup:active, a VP8
  m-line and optionally an Opus one);
* ICE as a controlling full agent towards the node's ICE-lite port: one STUN Binding
  request with USE-CANDIDATE, retried until answered, then consent checks every ~2 s;
* a DTLS client handshake with aiortc's RTCDtlsTransport (through ``sfu.net.dtls``), whose
  two SRTP sessions then protect what it sends and unprotect what it receives.

A publisher replays pre-encoded media (:func:`encode_stream`, done once, before the run) with
continuous seq/ts, paced at the frame rate; on a PLI it restarts the loop at its first frame,
a keyframe. A subscriber never decodes: it counts packets and bytes per kind and, while
``recording``, keeps the arrival time of every video packet with the VP8 picture id it carries,
which the publisher maps back to the time it sent that frame (``send_times``); both use
``time.monotonic``, a system-wide clock, so the two may live in different processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import re
import secrets
import struct
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pylibsrtp
from aioice import stun
from aiortc.rtcdtlstransport import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
)

from sfu import sdp as sdplib
from sfu.core.nack import NackGenerator
from sfu.core.twcc import FeedbackGenerator
from sfu.net.dtls import DatagramPipe, make_dtls
from sfu.wire import rtcp
from sfu.wire import rtx as rtx_wire
from sfu.wire.rtp import RtpError, parse_header
from sfu.wire.twcc import read_transport_seq

VIDEO_PT = 96
RTX_PT = 97  # offered (apt=96) by subscribers that NACK (RawPeer(nack=True))
AUDIO_PT = 111
VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
AUDIO_PTIME = 0.020
MAX_PAYLOAD = 1200  # bytes of RTP payload, VP8 descriptor included
VP8_DESCRIPTOR = 4  # X=1, I=1 with a 15-bit picture id (M=1)
CONSENT_INTERVAL = 2.0
RR_INTERVAL = 0.5  # s, receiver reports of a NACKing subscriber
ICE_TIMEOUT = 5.0
DTLS_TIMEOUT = 10.0
HTTP_TIMEOUT = 15.0
MAX_ARRIVALS = 500_000  # per peer: bounds memory when recording for long
EXT_ID_MID = 1  # header extension ids of a simulcast publisher's offer (mid, rtp-stream-id)
EXT_ID_RID = 2
EXT_ID_TWCC = 5
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
RID_PACKETS = 30  # packets of each layer that carry mid and rid (the node learns SSRCs by them)
VP8_TL_DESCRIPTOR = 6  # X=1; I (15-bit picture id), L (TL0PICIDX), T (TID, Y) present
TEMPORAL_PATTERN = (0, 2, 1, 2)  # TID per frame: the usual three-layer L1T3 pattern

_rtp_header = struct.Struct("!BBHII")
_pid = struct.Struct("!H")
_candidate_re = re.compile(r"^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", re.M)


# --- media: encode once, packetize ----------------------------------------------------------


def packetize_vp8(frame: bytes, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """Split one VP8 frame into RTP payloads (RFC 7741).

    Each payload starts with a 4-byte descriptor: X=1, S=1 on the first packet of the frame
    only, PID (partition index) 0, then I=1 and a 15-bit picture id (M=1) left at zero for
    :func:`set_picture_id` to fill in at send time. Every payload is at most ``max_payload``.
    """
    if max_payload <= VP8_DESCRIPTOR:
        raise ValueError("max_payload too small for the VP8 payload descriptor")
    if not frame:
        raise ValueError("empty VP8 frame")
    chunk = max_payload - VP8_DESCRIPTOR
    out = []
    for i, start in enumerate(range(0, len(frame), chunk)):
        b0 = 0x80 | (0x10 if i == 0 else 0x00)
        out.append(bytes((b0, 0x80, 0x80, 0x00)) + frame[start : start + chunk])
    return out


def set_picture_id(packet: bytearray, payload_offset: int, picture_id: int) -> None:
    """Write a 15-bit picture id into a descriptor made by :func:`packetize_vp8`."""
    _pid.pack_into(packet, payload_offset + 2, 0x8000 | (picture_id & 0x7FFF))


def vp8_picture_id(packet: bytes) -> int | None:
    """The picture id of a plain RTP packet carrying VP8, or None when it has none."""
    n = len(packet)
    if n < 13:
        return None
    b0 = packet[0]
    pos = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if pos + 4 > n:
            return None
        pos += 4 + 4 * int.from_bytes(packet[pos + 2 : pos + 4], "big")
    if pos + 3 > n or not packet[pos] & 0x80 or not packet[pos + 1] & 0x80:
        return None
    if packet[pos + 2] & 0x80:
        if pos + 4 > n:
            return None
        return ((packet[pos + 2] & 0x7F) << 8) | packet[pos + 3]
    return packet[pos + 2] & 0x7F


@dataclass
class EncodedStream:
    """Pre-encoded media, ready to replay: VP8 payloads per frame and Opus packets."""

    video: list[list[bytes]]  # per frame: its RTP payloads (descriptor included)
    keyframes: list[bool]
    fps: int
    width: int
    height: int
    audio: list[bytes] = field(default_factory=list)  # 20 ms Opus packets

    @property
    def video_bitrate(self) -> float:
        """Mean video payload bit rate over one loop, bits per second."""
        total = sum(len(p) for frame in self.video for p in frame)
        return total * 8 * self.fps / max(len(self.video), 1)

    @property
    def video_packets_per_second(self) -> float:
        return sum(len(f) for f in self.video) * self.fps / max(len(self.video), 1)


def _render(n: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A yuv420p frame with motion: a scrolling gradient and a moving block of noise."""
    xs = np.arange(width, dtype=np.int32)
    ys = np.arange(height, dtype=np.int32)
    y = ((xs[None, :] + ys[:, None] + 4 * n) % 256).astype(np.uint8)
    bw, bh = width // 4, height // 4
    bx = (n * 7) % (width - bw)
    by = int((height - bh) / 2 * (1 + np.sin(n / 15)))
    y[by : by + bh, bx : bx + bw] = rng.integers(0, 256, (bh, bw), dtype=np.uint8)
    u = np.full((height // 2, width // 2), (n * 2) % 256, dtype=np.uint8)
    v = np.full((height // 2, width // 2), 128, dtype=np.uint8)
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(
        height * 3 // 2, width
    )


def encode_stream(
    *,
    frames: int = 300,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    bitrate: int = 1_000_000,
    audio: bool = True,
    max_payload: int = MAX_PAYLOAD,
) -> EncodedStream:
    """Encode ``frames`` frames of a moving pattern to VP8 (first frame a keyframe, no other)
    and one second of a tone to Opus, with PyAV. Costs a few seconds, once."""
    import av

    rng = np.random.default_rng(1)
    ctx: Any = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.bit_rate = bitrate
    ctx.gop_size = frames + 1
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets: list[tuple[bytes, bool]] = []
    for n in range(frames):
        img = av.VideoFrame.from_ndarray(_render(n, width, height, rng), format="yuv420p")
        img.pts = n
        for p in ctx.encode(img):
            packets.append((bytes(p), bool(p.is_keyframe)))
    for p in ctx.encode(None):
        packets.append((bytes(p), bool(p.is_keyframe)))
    if not packets or not packets[0][1]:
        raise RuntimeError("the VP8 encoder did not start with a keyframe")
    video = [packetize_vp8(data, max_payload) for data, _ in packets]
    keys = [key for _, key in packets]
    opus: list[bytes] = []
    if audio:
        actx: Any = av.CodecContext.create("libopus", "w")
        actx.sample_rate = AUDIO_CLOCK
        actx.layout = "mono"
        actx.format = "s16"
        actx.bit_rate = 32_000
        samples = int(AUDIO_CLOCK * AUDIO_PTIME)
        t = np.arange(AUDIO_CLOCK, dtype=np.float64) / AUDIO_CLOCK
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        for i in range(AUDIO_CLOCK // samples):
            af = av.AudioFrame.from_ndarray(
                tone[None, i * samples : (i + 1) * samples], format="s16", layout="mono"
            )
            af.sample_rate = AUDIO_CLOCK
            af.pts = i * samples
            opus.extend(bytes(p) for p in actx.encode(af))
        opus.extend(bytes(p) for p in actx.encode(None))
    return EncodedStream(video, keys, fps, width, height, opus)


# --- SDP ------------------------------------------------------------------------------------


def certificate_fingerprint(certificate: RTCCertificate) -> tuple[str, str]:
    fp = next(f for f in certificate.getFingerprints() if f.algorithm == "sha-256")
    return fp.algorithm, fp.value


def build_offer(
    *,
    ufrag: str,
    pwd: str,
    fingerprint: tuple[str, str],
    publish: bool,
    video_ssrc: int | None = None,
    audio_ssrc: int | None = None,
    audio: bool = True,
    candidate: tuple[str, int] | None = None,
    cname: str = "rawpeer",
    rids: list[str] | None = None,
    twcc: bool = False,
    rtx: bool = False,
) -> str:
    """A BUNDLEd, rtcp-muxed offer: video (mid 0) and optionally Opus audio (mid 1).

    ``publish`` makes sendonly sections with a=ssrc (``video_ssrc``/``audio_ssrc``);
    otherwise recvonly ones. With ``rids`` (publish only) the video section announces RID
    simulcast instead of a video a=ssrc: a=rid:<rid> send per layer, a=simulcast:send in that
    order, and the mid and rtp-stream-id header extensions (ids :data:`EXT_ID_MID` and
    :data:`EXT_ID_RID`) by which the node learns each layer's SSRC. ``rtx`` (receiving
    only) also offers RTX (:data:`RTX_PT`, apt=:data:`VIDEO_PT`) for the node's
    retransmissions.
    """
    if rids is not None and (not publish or len(rids) < 2):
        raise ValueError("RID simulcast needs a publishing offer and at least two rids")
    if publish and ((video_ssrc is None and rids is None) or (audio and audio_ssrc is None)):
        raise ValueError("a publishing offer needs its SSRCs")
    mids = ["0", "1"] if audio else ["0"]
    ip, port = candidate if candidate is not None else ("127.0.0.1", 9)
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE " + " ".join(mids),
        "a=msid-semantic: WMS *",
    ]
    direction = "sendonly" if publish else "recvonly"

    def transport(mid: str) -> list[str]:
        out = [
            f"c=IN IP4 {ip}",
            f"a=mid:{mid}",
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            "a=ice-options:trickle",
            f"a=fingerprint:{fingerprint[0]} {fingerprint[1]}",
            "a=setup:active",
            f"a={direction}",
            "a=rtcp-mux",
        ]
        if candidate is not None and mid == "0":
            out.append(f"a=candidate:1 1 udp 2130706431 {ip} {port} typ host")
            out.append("a=end-of-candidates")
        return out

    lines.append(f"m=video {port} UDP/TLS/RTP/SAVPF {VIDEO_PT}")
    lines += transport("0")
    lines += [
        "a=rtcp-rsize",
        f"a=rtpmap:{VIDEO_PT} VP8/{VIDEO_CLOCK}",
        f"a=rtcp-fb:{VIDEO_PT} nack",
        f"a=rtcp-fb:{VIDEO_PT} nack pli",
        f"a=rtcp-fb:{VIDEO_PT} ccm fir",
    ]
    if rtx and not publish:
        lines += [f"a=rtpmap:{RTX_PT} rtx/{VIDEO_CLOCK}", f"a=fmtp:{RTX_PT} apt={VIDEO_PT}"]
    if twcc:
        # Offer transport-cc: the node numbers its egress to this peer (RawPeer(twcc=True)
        # returns the feedback).
        lines += [f"a=rtcp-fb:{VIDEO_PT} transport-cc", f"a=extmap:{EXT_ID_TWCC} {TWCC_URI}"]
    if rids is not None:
        lines += [
            f"a=extmap:{EXT_ID_MID} urn:ietf:params:rtp-hdrext:sdes:mid",
            f"a=extmap:{EXT_ID_RID} urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            f"a=msid:{cname} video",
        ]
        lines += [f"a=rid:{rid} send" for rid in rids]
        lines.append("a=simulcast:send " + ";".join(rids))
    elif publish:
        lines += [f"a=msid:{cname} video", f"a=ssrc:{video_ssrc} cname:{cname}"]
    if audio:
        lines.append(f"m=audio {port} UDP/TLS/RTP/SAVPF {AUDIO_PT}")
        lines += transport("1")
        lines += [
            f"a=rtpmap:{AUDIO_PT} opus/{AUDIO_CLOCK}/2",
            f"a=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1",
        ]
        if publish:
            lines += [f"a=msid:{cname} audio", f"a=ssrc:{audio_ssrc} cname:{cname}"]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Answer:
    """What the peer needs from the node's answer."""

    ufrag: str
    pwd: str
    fingerprints: list[tuple[str, str]]
    address: tuple[str, int]
    ssrc_kinds: dict[int, str]
    rtx: dict[int, tuple[int, int]] = field(default_factory=dict)  # RTX ssrc -> (media, apt)


def build_answer(
    offer_sdp: str,
    *,
    ufrag: str,
    pwd: str,
    fingerprint: tuple[str, str],
    candidate: tuple[str, int] | None = None,
) -> str:
    """A recvonly answer to an offer that sends VP8 and/or Opus (answer mode of the peer).

    Each audio/video section whose codecs include Opus (audio) or VP8 (video) is accepted
    with the offer's payload type, nack/pli feedback, rtcp-mux, setup:active; every other
    section is rejected (port 0). All accepted sections are BUNDLEd.
    """
    desc = sdplib.parse(offer_sdp)
    ip, port = candidate if candidate is not None else ("127.0.0.1", 9)
    head = ["v=0", f"o=- {secrets.randbits(62)} 2 IN IP4 {ip}", "s=-", "t=0 0"]
    body: list[str] = []
    accepted: list[str] = []
    for i, m in enumerate(desc.media):
        mid = m.mid if m.mid is not None else str(i)
        want = {"audio": "OPUS", "video": "VP8"}.get(m.kind)
        codec = next((c for c in m.codecs if c.name == want), None) if want else None
        if codec is None or m.port == 0:
            body += [f"m={m.kind} 0 {m.proto} {' '.join(m.formats) or '0'}", f"a=mid:{mid}"]
            continue
        first = not accepted
        accepted.append(mid)
        body += [
            f"m={m.kind} {port} {m.proto} {codec.payload_type}",
            f"c=IN IP4 {ip}",
            f"a=mid:{mid}",
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            f"a=fingerprint:{fingerprint[0]} {fingerprint[1]}",
            "a=setup:active",
            "a=recvonly",
            "a=rtcp-mux",
        ]
        if candidate is not None and first:
            body += [f"a=candidate:1 1 udp 2130706431 {ip} {port} typ host",
                     "a=end-of-candidates"]
        body.append(f"a=rtpmap:{codec.payload_type} {codec.name_for_sdp()}/{codec.clock_rate}"
                    + (f"/{codec.channels}" if codec.channels > 1 else ""))
        if m.kind == "video":
            body += [f"a=rtcp-fb:{codec.payload_type} nack",
                     f"a=rtcp-fb:{codec.payload_type} nack pli"]
        elif codec.fmtp:
            body.append(f"a=fmtp:{codec.payload_type} {codec.fmtp_line()}")
    if not accepted:
        raise ValueError("the offer has no VP8 or Opus section to receive")
    head.append("a=group:BUNDLE " + " ".join(accepted))
    return "\r\n".join(head + body) + "\r\n"


def read_answer(text: str, fallback_host: str = "127.0.0.1") -> Answer:
    desc = sdplib.parse(text)
    active = [m for m in desc.media if m.port != 0]
    if not active:
        raise ValueError("the answer rejected every section")
    first = active[0]
    ufrag, pwd = desc.ice_credentials(first)
    fingerprints, _setup = desc.dtls(first)
    m = _candidate_re.search(text)
    address = (m.group(1), int(m.group(2))) if m else (fallback_host, first.port)
    kinds = {ssrc: sec.kind for sec in active for ssrc in sec.ssrcs}
    rtx: dict[int, tuple[int, int]] = {}
    for sec in active:
        apt = next((c.apt for c in sec.codecs if c.name == "RTX" and c.apt is not None), None)
        for semantic, group in sec.ssrc_groups:
            if semantic == "FID" and len(group) == 2 and apt is not None:
                rtx[group[1]] = (group[0], apt)
    return Answer(ufrag, pwd, fingerprints, address, kinds, rtx)


# --- the peer -------------------------------------------------------------------------------


class RawPeer(asyncio.DatagramProtocol):
    """One WHIP/WHEP session over its own UDP socket on 127.0.0.1."""

    def __init__(
        self,
        certificate: RTCCertificate,
        *,
        publish: bool,
        audio: bool = True,
        name: str = "rawpeer",
        twcc: bool = False,
        twcc_feedback: bool = True,
        nack: bool = False,
        nack_rtt: float = 0.1,
    ) -> None:
        self.certificate = certificate
        self.publish = publish
        self.audio = audio
        # With twcc the peer also returns transport-cc feedback, as a browser would, so the
        # node's estimator and allocator run for it (FeedbackGenerator, every 50 ms).
        self.twcc = twcc
        self.twcc_feedback = twcc_feedback  # False: negotiate only (numbering cost alone)
        self._twcc_gen: FeedbackGenerator | None = None
        self._twcc_task: asyncio.Task[None] | None = None
        self.name = name
        self.ufrag = secrets.token_hex(4)
        self.pwd = secrets.token_hex(16)
        self.tie_breaker = secrets.randbits(64)
        self.video_ssrc = secrets.randbits(32) | 1
        self.audio_ssrc = secrets.randbits(32) | 1
        self.rtcp_ssrc = secrets.randbits(32) | 1
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] | None = None
        self.answer: Answer | None = None
        self.location: str | None = None
        self.srtp_profile = ""
        self._dtls: RTCDtlsTransport | None = None
        self._pipe: DatagramPipe | None = None
        self._tx: pylibsrtp.Session | None = None
        self._rx: pylibsrtp.Session | None = None
        self._ice_done = asyncio.Event()
        self._pending_tx: set[bytes] = set()
        self._consent: asyncio.Task[None] | None = None
        self.closed = False
        # receive counters (by kind: video / audio / rtcp / other)
        self.packets: dict[str, int] = {"video": 0, "audio": 0, "rtcp": 0, "other": 0}
        self.bytes: dict[str, int] = {"video": 0, "audio": 0, "rtcp": 0, "other": 0}
        self.unprotect_errors = 0
        self.stun_responses = 0
        self.recording = False
        self.arrivals: list[tuple[int, float]] = []  # (picture id, time.monotonic())
        self.first_video_at: float | None = None
        self.on_rtcp: Callable[[list[rtcp.RtcpPacket]], None] | None = None
        # Loss recovery (subscribers, ``nack=True``): RTX offered, video gaps NACKed by
        # sfu.core.nack.NackGenerator with a fixed ``nack_rtt`` (no RTT measurement here),
        # RTX unwrapped, duplicates dropped, a PLI when it gives up, RRs every RR_INTERVAL.
        self.nack = nack and not publish
        self._nack_gen = NackGenerator(rtt=nack_rtt) if self.nack else None
        self._nack_handle: asyncio.TimerHandle | None = None
        self._nack_at: float | None = None
        self._seen: dict[int, None] = {}  # recent video seqs (duplicate filter)
        self._video_ssrc_in: int | None = None
        self._rr_task: asyncio.Task[None] | None = None
        self._rr_ext: int | None = None  # extended highest original seq (RR bookkeeping)
        self._rr_base: int | None = None
        self._rr_prev_ext: int | None = None
        self._rr_prev_received = 0
        self._rr_received = 0  # original (not retransmitted) video packets
        self.nacks_sent = 0  # NACK packets
        self.nacked_seqs = 0  # seq entries in them (retries included)
        self.rtx_received = 0  # retransmissions that arrived (on RTX), duplicates included
        self.rtx_bytes = 0
        self.duplicates = 0
        self.plis_sent = 0
        self._last_pli = 0.0

    # --- asyncio protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable after the node went away, for instance

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        first = data[0]
        if 127 < first < 192:
            rx = self._rx
            if rx is None:
                return
            if 192 <= data[1] <= 223:
                try:
                    plain = rx.unprotect_rtcp(data)
                except pylibsrtp.Error:
                    self.unprotect_errors += 1
                    return
                self.packets["rtcp"] += 1
                self.bytes["rtcp"] += len(data)
                if self.on_rtcp is not None:
                    try:
                        self.on_rtcp(rtcp.parse_compound(plain))
                    except rtcp.RtcpError:
                        pass
                return
            try:
                plain = rx.unprotect(data)
            except pylibsrtp.Error:
                self.unprotect_errors += 1
                return
            gen = self._twcc_gen
            if gen is not None:
                try:
                    tseq = read_transport_seq(plain, parse_header(plain), EXT_ID_TWCC)
                except RtpError:
                    tseq = None
                if tseq is not None:
                    gen.record(tseq, time.monotonic())
            ssrc = int.from_bytes(plain[8:12], "big")
            retransmission = False
            if self.nack and self.answer is not None and ssrc in self.answer.rtx:
                media_ssrc, apt = self.answer.rtx[ssrc]
                try:
                    _, plain = rtx_wire.unwrap(plain, media_ssrc=media_ssrc, media_pt=apt)
                except RtpError:
                    return  # padding-only RTX (a bandwidth probe): nothing to recover
                self.rtx_received += 1
                self.rtx_bytes += len(data)
                ssrc, retransmission = media_ssrc, True
            kind = self.answer.ssrc_kinds.get(ssrc, "other") if self.answer else "other"
            if kind == "video" and self.nack and not self._on_video_seq(
                    ssrc, (plain[2] << 8) | plain[3], retransmission):
                return
            self.packets[kind] += 1
            self.bytes[kind] += len(data)
            if kind == "video":
                now = time.monotonic()
                if self.first_video_at is None:
                    self.first_video_at = now
                if self.recording and len(self.arrivals) < MAX_ARRIVALS:
                    pid = vp8_picture_id(plain)
                    if pid is not None:
                        self.arrivals.append((pid, now))
        elif first < 4:
            self._on_stun(data, addr)
        elif 19 < first < 64:
            if self._pipe is not None:
                self._pipe.feed(data)

    # --- loss recovery (nack=True) -----------------------------------------------------------

    def _on_video_seq(self, ssrc: int, seq: int, retransmission: bool) -> bool:
        """Feed the NACK generator; False for a duplicate (already received) packet."""
        if seq in self._seen:
            self.duplicates += 1
            return False
        self._seen[seq] = None
        if len(self._seen) > 4096:
            del self._seen[next(iter(self._seen))]
        self._video_ssrc_in = ssrc
        gen = self._nack_gen
        assert gen is not None
        if not retransmission:
            self._rr_received += 1
            ext = self._rr_ext
            if ext is None:
                self._rr_ext = self._rr_base = self._rr_prev_ext = seq
            else:
                diff = ((seq - ext + 0x8000) & 0xFFFF) - 0x8000
                if diff > 0:
                    self._rr_ext = ext + diff
        loop = asyncio.get_running_loop()
        gen.on_packet(seq, loop.time(), is_retransmission=retransmission)
        at = gen.get_timer()
        if at is not None and (self._nack_at is None or at < self._nack_at):
            if self._nack_handle is not None:
                self._nack_handle.cancel()
            self._nack_at = at
            self._nack_handle = loop.call_at(at, self._on_nack_timer)
        return True

    def _on_nack_timer(self) -> None:
        self._nack_handle = None
        self._nack_at = None
        gen, ssrc = self._nack_gen, self._video_ssrc_in
        if gen is None or ssrc is None or self.closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        seqs = gen.handle_timer(now)
        for i in range(0, len(seqs), 100):
            self.send_rtcp([rtcp.Nack(self.rtcp_ssrc, ssrc, seqs[i:i + 100])])
            self.nacks_sent += 1
        self.nacked_seqs += len(seqs)
        if gen.take_keyframe_request() and now - self._last_pli >= 0.5:
            self._last_pli = now
            self.plis_sent += 1
            self.send_rtcp([rtcp.Pli(self.rtcp_ssrc, ssrc)])
        at = gen.get_timer()
        if at is not None:
            self._nack_at = max(at, now + 0.001)
            self._nack_handle = loop.call_at(self._nack_at, self._on_nack_timer)

    async def _rr_loop(self) -> None:
        """Receiver reports for video: loss fraction of original packets over the interval
        (as libwebrtc counts it); no LSR, so the node learns loss from them but no RTT."""
        while not self.closed:
            await asyncio.sleep(RR_INTERVAL)
            ext, prev, ssrc = self._rr_ext, self._rr_prev_ext, self._video_ssrc_in
            if ext is None or prev is None or ssrc is None or self._rr_base is None:
                continue
            expected = ext - prev
            received = self._rr_received - self._rr_prev_received
            self._rr_prev_ext, self._rr_prev_received = ext, self._rr_received
            fraction = 0 if expected <= 0 else max(
                0, min(255, (expected - received) * 256 // expected))
            lost = max(0, ext - self._rr_base + 1 - self._rr_received)
            block = rtcp.ReportBlock(ssrc, fraction, lost, ext & 0xFFFFFFFF, 0, 0, 0)
            self.send_rtcp([rtcp.ReceiverReport(self.rtcp_ssrc, [block])])

    def _on_stun(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        try:
            msg = stun.parse_message(data)
        except ValueError:
            return
        if (msg.message_class == stun.Class.REQUEST and msg.message_method == stun.Method.BINDING
                and addr is not None and self.transport is not None):
            # A full ICE peer (Janus's libnice, even as ICE lite) checks the pair back.
            self._answer_binding(msg, addr)
            return
        if msg.message_class == stun.Class.RESPONSE and msg.transaction_id in self._pending_tx:
            self._pending_tx.discard(msg.transaction_id)
            self.stun_responses += 1
            self._ice_done.set()

    def _answer_binding(self, request: stun.Message, addr: tuple[str, int]) -> None:
        if not request.check_message_integrity(self.pwd.encode()):
            return  # not for us (wrong credentials)
        if not str(request.attributes.get("USERNAME", "")).startswith(self.ufrag + ":"):
            return
        resp = stun.Message(message_method=stun.Method.BINDING,
                            message_class=stun.Class.RESPONSE,
                            transaction_id=request.transaction_id)
        resp.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        resp.add_message_integrity(self.pwd.encode())
        resp.add_fingerprint()
        assert self.transport is not None
        self.transport.sendto(bytes(resp), addr)

    # --- set-up ------------------------------------------------------------------------------

    def offer(self) -> str:
        return build_offer(
            ufrag=self.ufrag,
            pwd=self.pwd,
            fingerprint=certificate_fingerprint(self.certificate),
            publish=self.publish,
            video_ssrc=self.video_ssrc,
            audio_ssrc=self.audio_ssrc,
            audio=self.audio,
            candidate=self.local,
            cname=self.name,
            twcc=self.twcc,
            rtx=self.nack,
        )

    async def connect(
        self, http: aiohttp.ClientSession, http_url: str, room: str, token: str
    ) -> None:
        """POST the offer, then ICE and DTLS. Raises on any failure (bounded by timeouts)."""
        await self.open()
        endpoint = "whip" if self.publish else "whep"
        url = f"{http_url.rstrip('/')}/{endpoint}/{urllib.parse.quote(room, safe='')}"
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
        async with http.post(
            url, data=self.offer().encode(), headers=headers,
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
        ) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise ConnectionError(f"{endpoint} POST: HTTP {resp.status}: {body.strip()}")
            self.location = urllib.parse.urljoin(url, resp.headers.get("Location", ""))
        host = urllib.parse.urlsplit(http_url).hostname or "127.0.0.1"
        await self.start_media(body, host)

    # --- signalling-agnostic steps (used by connect, and by bench/janus.py) ----------------

    async def open(self, host: str = "127.0.0.1") -> None:
        """Bind the peer's UDP socket on ``host`` (before its offer or answer is built)."""
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        assert self.transport is not None
        self.local = self.transport.get_extra_info("sockname")[:2]

    async def start_media(self, remote_sdp: str, fallback_host: str = "127.0.0.1") -> None:
        """ICE, DTLS and consent checks towards the remote description (answer or offer)."""
        self.answer = read_answer(remote_sdp, fallback_host)
        await self._ice()
        await self._handshake()
        self._consent = asyncio.ensure_future(self._consent_loop())
        if self.nack:
            self._rr_task = asyncio.ensure_future(self._rr_loop())
        if self.twcc and self.twcc_feedback:
            self._twcc_gen = FeedbackGenerator(sender_ssrc=self.rtcp_ssrc)
            self._twcc_task = asyncio.ensure_future(self._twcc_loop())

    async def _twcc_loop(self) -> None:
        gen = self._twcc_gen
        assert gen is not None
        while not self.closed:
            await asyncio.sleep(0.05)
            for feedback in gen.handle_timer(time.monotonic()):
                self.send_rtcp([feedback])

    def answer_offer(self, offer_sdp: str) -> str:
        """Answer mode: a recvonly answer to a sending peer's offer (e.g. Janus's subscriber
        offer), as DTLS client (setup:active); call :meth:`open` first, then
        :meth:`start_media` with the same offer."""
        return build_answer(
            offer_sdp, ufrag=self.ufrag, pwd=self.pwd,
            fingerprint=certificate_fingerprint(self.certificate), candidate=self.local,
        )

    def _binding_request(self, nominate: bool) -> bytes:
        assert self.answer is not None
        msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        msg.attributes["USERNAME"] = f"{self.answer.ufrag}:{self.ufrag}"
        msg.attributes["PRIORITY"] = 1853824767
        msg.attributes["ICE-CONTROLLING"] = self.tie_breaker
        if nominate:
            msg.attributes["USE-CANDIDATE"] = None
        msg.add_message_integrity(self.answer.pwd.encode())
        msg.add_fingerprint()
        self._pending_tx.add(msg.transaction_id)
        if len(self._pending_tx) > 64:  # never answered ones: keep the set bounded
            self._pending_tx.clear()
            self._pending_tx.add(msg.transaction_id)
        return bytes(msg)

    async def _ice(self) -> None:
        assert self.transport is not None and self.answer is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ICE_TIMEOUT
        wait = 0.05
        while not self._ice_done.is_set():
            if loop.time() > deadline:
                raise TimeoutError(f"no STUN answer from {self.answer.address} in {ICE_TIMEOUT}s")
            self.transport.sendto(self._binding_request(True), self.answer.address)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ice_done.wait(), wait)
            wait = min(wait * 2, 0.5)

    def _send_raw(self, data: bytes) -> None:
        if self.transport is not None and self.answer is not None and not self.closed:
            self.transport.sendto(data, self.answer.address)

    async def _handshake(self) -> None:
        assert self.answer is not None
        self._dtls, self._pipe = make_dtls(self.certificate, self._send_raw, server=False)
        params = RTCDtlsParameters(
            fingerprints=[RTCDtlsFingerprint(a, v) for a, v in self.answer.fingerprints]
        )
        await asyncio.wait_for(self._dtls.start(params), DTLS_TIMEOUT)
        if self._dtls.state != "connected":
            raise ConnectionError(f"DTLS handshake ended in state {self._dtls.state}")
        ssl = self._dtls._ssl
        if ssl is not None:
            self.srtp_profile = (ssl.get_selected_srtp_profile() or b"").decode()
        self._tx = self._dtls._tx_srtp
        self._rx = self._dtls._rx_srtp

    async def _consent_loop(self) -> None:
        # Consent freshness (RFC 7675): the node drops a peer silent for peer_timeout (7 s).
        while not self.closed:
            await asyncio.sleep(CONSENT_INTERVAL)
            if self.transport is not None and self.answer is not None and not self.closed:
                self.transport.sendto(self._binding_request(False), self.answer.address)

    # --- sending -----------------------------------------------------------------------------

    def send_rtp(self, packet: bytes) -> None:
        tx = self._tx
        if tx is None or self.transport is None or self.answer is None or self.closed:
            return
        self.transport.sendto(tx.protect(packet), self.answer.address)

    def send_rtcp(self, packets: list[rtcp.RtcpPacket]) -> None:
        tx = self._tx
        if tx is None or self.transport is None or self.answer is None or self.closed:
            return
        self.transport.sendto(
            tx.protect_rtcp(rtcp.serialize_compound(packets)), self.answer.address
        )

    # --- tear-down ---------------------------------------------------------------------------

    async def close(self, http: aiohttp.ClientSession | None = None, token: str = "") -> None:
        """DELETE the resource (when ``http`` is given), stop DTLS and the socket. Never raises."""
        if self.closed:
            return
        if http is not None and self.location:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.delete(
                    self.location, headers={"Authorization": f"Bearer {token}"},
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as resp:
                    await resp.read()
        self.closed = True
        if self._nack_handle is not None:
            self._nack_handle.cancel()
        if self._twcc_task is not None:
            self._twcc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._twcc_task
        if self._rr_task is not None:
            self._rr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rr_task
        if self._consent is not None:
            self._consent.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consent
        if self._dtls is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._dtls.stop(), 2)
        if self._pipe is not None:
            self._pipe.close()
        if self.transport is not None:
            self.transport.close()


class RawPublisher(RawPeer):
    """Replays an :class:`EncodedStream` with continuous seq/ts, paced at its frame rate."""

    def __init__(self, certificate: RTCCertificate, stream: EncodedStream, **kw: Any) -> None:
        super().__init__(certificate, publish=True, audio=bool(stream.audio), **kw)
        self.stream = stream
        self.on_rtcp = self._rtcp
        self.video_seq = secrets.randbits(16)
        self.audio_seq = secrets.randbits(16)
        self.video_ts = secrets.randbits(32)
        self.audio_ts = secrets.randbits(32)
        self.picture_id = secrets.randbits(15)
        self.frame_index = 0
        self.audio_index = 0
        self.sent = {"video": 0, "audio": 0}
        self.sent_bytes = {"video": 0, "audio": 0}
        self.frames_sent = 0
        self.plis = 0
        self.pli_times: list[float] = []  # time.monotonic() of each PLI/FIR (bounded)
        self.restarts = 0
        self.send_times: dict[int, float] = {}  # picture id -> time.monotonic() of its send
        self._restart = False
        self.paused = False  # keep the clock running but send nothing (window edges)
        self._task: asyncio.Task[None] | None = None

    def _rtcp(self, packets: list[rtcp.RtcpPacket]) -> None:
        for p in packets:
            if isinstance(p, (rtcp.Pli, rtcp.Fir)):
                self.plis += 1
                if len(self.pli_times) < 10_000:
                    self.pli_times.append(time.monotonic())
                self._restart = True

    def send_frame(self) -> None:
        """Send the next video frame (the first frame, a keyframe, after a PLI)."""
        stream = self.stream
        if self._restart or self.frame_index >= len(stream.video):
            if self._restart:
                self.restarts += 1
            self._restart = False
            self.frame_index = 0
        payloads = stream.video[self.frame_index]
        self.frame_index += 1
        pid = self.picture_id
        self.picture_id = (pid + 1) & 0x7FFF
        self.send_times[pid] = time.monotonic()
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            pkt = bytearray(12 + len(payload))
            _rtp_header.pack_into(
                pkt, 0, 0x80, (0x80 if i == last else 0) | VIDEO_PT,
                self.video_seq, self.video_ts, self.video_ssrc,
            )
            pkt[12:] = payload
            set_picture_id(pkt, 12, pid)
            self.video_seq = (self.video_seq + 1) & 0xFFFF
            self.send_rtp(bytes(pkt))
            self.sent["video"] += 1
            self.sent_bytes["video"] += len(pkt)
        self.video_ts = (self.video_ts + VIDEO_CLOCK // stream.fps) & 0xFFFFFFFF
        self.frames_sent += 1

    def send_audio(self) -> None:
        audio = self.stream.audio
        payload = audio[self.audio_index % len(audio)]
        self.audio_index += 1
        pkt = _rtp_header.pack(
            0x80, AUDIO_PT, self.audio_seq, self.audio_ts, self.audio_ssrc
        ) + payload
        self.audio_seq = (self.audio_seq + 1) & 0xFFFF
        self.audio_ts = (self.audio_ts + int(AUDIO_CLOCK * AUDIO_PTIME)) & 0xFFFFFFFF
        self.send_rtp(pkt)
        self.sent["audio"] += 1
        self.sent_bytes["audio"] += len(pkt)

    def start(self, max_seconds: float) -> None:
        """Start replaying in the background, for at most ``max_seconds``."""
        self._task = asyncio.ensure_future(self._run(max_seconds))

    async def _run(self, max_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + max_seconds
        frame_dt = 1.0 / self.stream.fps
        next_video = next_audio = start
        has_audio = bool(self.stream.audio)
        while not self.closed:
            now = loop.time()
            if now >= end:
                break
            if now >= next_video:
                if not self.paused:
                    self.send_frame()
                next_video += frame_dt
                if now - next_video > 1.0:  # badly late (a stall): do not burst to catch up
                    next_video = now + frame_dt
            if has_audio and now >= next_audio:
                if not self.paused:
                    self.send_audio()
                next_audio += AUDIO_PTIME
                if now - next_audio > 1.0:
                    next_audio = now + AUDIO_PTIME
            wake = min(next_video, next_audio) if has_audio else next_video
            await asyncio.sleep(max(0.0, wake - loop.time()))

    async def close(self, http: aiohttp.ClientSession | None = None, token: str = "") -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await super().close(http, token)


# --- simulcast publisher ------------------------------------------------------------------------


def packetize_vp8_layered(frame: bytes, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """Like :func:`packetize_vp8`, with a 6-byte descriptor that also carries TL0PICIDX and
    the TID (X=1 with I, L and T set), as a simulcast encoder with temporal layers sends it.
    Picture id, TL0PICIDX and TID are left at zero for :func:`set_vp8_fields`."""
    if max_payload <= VP8_TL_DESCRIPTOR:
        raise ValueError("max_payload too small for the VP8 payload descriptor")
    if not frame:
        raise ValueError("empty VP8 frame")
    chunk = max_payload - VP8_TL_DESCRIPTOR
    out = []
    for i, start in enumerate(range(0, len(frame), chunk)):
        b0 = 0x80 | (0x10 if i == 0 else 0x00)
        out.append(bytes((b0, 0xE0, 0x80, 0x00, 0x00, 0x00)) + frame[start : start + chunk])
    return out


def set_vp8_fields(
    packet: bytearray, payload_offset: int, picture_id: int, tl0picidx: int, tid: int,
    sync: bool,
) -> None:
    """Fill a descriptor made by :func:`packetize_vp8_layered`."""
    _pid.pack_into(packet, payload_offset + 2, 0x8000 | (picture_id & 0x7FFF))
    packet[payload_offset + 4] = tl0picidx & 0xFF
    packet[payload_offset + 5] = (tid << 6) | (0x20 if sync else 0)


def sdes_extension_block(mid: str, rid: str) -> bytes:
    """A one-byte-header extension block (RFC 8285) with the mid and rtp-stream-id elements."""
    body = bytearray()
    for ext_id, value in ((EXT_ID_MID, mid.encode()), (EXT_ID_RID, rid.encode())):
        if not 1 <= len(value) <= 16:
            raise ValueError(f"extension value {value!r} must be 1-16 bytes")
        body.append((ext_id << 4) | (len(value) - 1))
        body += value
    body += b"\x00" * (-len(body) % 4)
    return b"\xbe\xde" + struct.pack("!H", len(body) // 4) + bytes(body)


def relabel_layered(stream: EncodedStream, max_payload: int = MAX_PAYLOAD) -> EncodedStream:
    """The same encoded frames re-packetized with :func:`packetize_vp8_layered`."""
    frames = [b"".join(p[VP8_DESCRIPTOR:] for p in payloads) for payloads in stream.video]
    return EncodedStream(
        [packetize_vp8_layered(f, max_payload) for f in frames], list(stream.keyframes),
        stream.fps, stream.width, stream.height, list(stream.audio),
    )


@dataclass
class SimulcastLayer:
    """One layer's encoder state: its own SSRC, seq, timestamp, picture id and TL0PICIDX."""

    rid: str
    stream: EncodedStream  # packetized with packetize_vp8_layered
    ssrc: int = field(default_factory=lambda: secrets.randbits(32) | 1)
    seq: int = field(default_factory=lambda: secrets.randbits(16))
    ts: int = field(default_factory=lambda: secrets.randbits(32))
    picture_id: int = field(default_factory=lambda: secrets.randbits(15))
    tl0picidx: int = field(default_factory=lambda: secrets.randbits(8))
    frame_index: int = 0
    since_key: int = 0  # frames since the last key frame: the TID pattern restarts there
    sent_packets: int = 0
    active: bool = True  # False: the layer stops (a weak uplink, encodings[i].active=false)
    restart: bool = False
    plis: int = 0
    keyframes_sent: int = 0


class RawSimulcastPublisher(RawPublisher):
    """A RID-simulcast publisher: one VP8 section with a layer per stream, plus Opus.

    The offer announces a=rid/a=simulcast and the mid/rtp-stream-id extensions; no video
    a=ssrc, so the node learns each layer's SSRC from the first :data:`RID_PACKETS` packets,
    which carry both extensions (as Chromium does until its packets are acknowledged). Every
    packet has a 15-bit picture id, TL0PICIDX and a TID following :data:`TEMPORAL_PATTERN`
    (the frames themselves are not temporally scalable, so they decode only when a viewer
    gets every TID). A PLI restarts only the layer it names, at its key frame.
    """

    def __init__(
        self, certificate: RTCCertificate, layers: list[tuple[str, EncodedStream]], **kw: Any
    ) -> None:
        if len(layers) < 2:
            raise ValueError("simulcast needs at least two layers")
        super().__init__(certificate, layers[0][1], **kw)
        self.layers = [SimulcastLayer(rid, stream) for rid, stream in layers]
        self.layer_by_ssrc = {la.ssrc: la for la in self.layers}
        fps = {la.stream.fps for la in self.layers}
        if len(fps) != 1:
            raise ValueError("all layers must have the same frame rate")
        self.audio = any(bool(la.stream.audio) for la in self.layers)

    def offer(self) -> str:
        return build_offer(
            ufrag=self.ufrag,
            pwd=self.pwd,
            fingerprint=certificate_fingerprint(self.certificate),
            publish=True,
            audio_ssrc=self.audio_ssrc,
            audio=self.audio,
            candidate=self.local,
            cname=self.name,
            rids=[la.rid for la in self.layers],
        )

    def _rtcp(self, packets: list[rtcp.RtcpPacket]) -> None:
        for p in packets:
            ssrcs: list[int] = []
            if isinstance(p, rtcp.Pli):
                ssrcs = [p.media_ssrc]
            elif isinstance(p, rtcp.Fir):
                ssrcs = [e[0] for e in p.entries]
            for ssrc in ssrcs:
                layer = self.layer_by_ssrc.get(ssrc)
                if layer is None:
                    continue
                layer.plis += 1
                layer.restart = True
                self.plis += 1
                if len(self.pli_times) < 10_000:
                    self.pli_times.append(time.monotonic())

    def set_active(self, rid: str, active: bool) -> None:
        """Stop or resume sending one layer (it restarts at a key frame when resumed)."""
        for la in self.layers:
            if la.rid == rid:
                if active and not la.active:
                    la.restart = True
                la.active = active

    def send_frame(self) -> None:
        """Send the next frame of every active layer."""
        pid_for_times: int | None = None
        for la in self.layers:
            if not la.active:
                continue
            stream = la.stream
            if la.restart or la.frame_index >= len(stream.video):
                if la.restart:
                    self.restarts += 1
                la.restart = False
                la.frame_index = 0
            key = stream.keyframes[la.frame_index]
            payloads = stream.video[la.frame_index]
            la.frame_index += 1
            if key:
                la.since_key = 0
                la.keyframes_sent += 1
            tid = 0 if key else TEMPORAL_PATTERN[la.since_key % len(TEMPORAL_PATTERN)]
            la.since_key += 1
            if tid == 0:
                la.tl0picidx = (la.tl0picidx + 1) & 0xFF
            sync = tid > 0 and la.since_key <= len(TEMPORAL_PATTERN)
            pid = la.picture_id
            la.picture_id = (pid + 1) & 0x7FFF
            if pid_for_times is None:
                pid_for_times = pid
            last = len(payloads) - 1
            for i, payload in enumerate(payloads):
                ext = sdes_extension_block("0", la.rid) if la.sent_packets < RID_PACKETS else b""
                pkt = bytearray(12 + len(ext) + len(payload))
                _rtp_header.pack_into(
                    pkt, 0, 0x90 if ext else 0x80, (0x80 if i == last else 0) | VIDEO_PT,
                    la.seq, la.ts, la.ssrc,
                )
                off = 12 + len(ext)
                pkt[12:off] = ext
                pkt[off:] = payload
                set_vp8_fields(pkt, off, pid, la.tl0picidx, tid, sync)
                la.seq = (la.seq + 1) & 0xFFFF
                la.sent_packets += 1
                self.send_rtp(bytes(pkt))
                self.sent["video"] += 1
                self.sent_bytes["video"] += len(pkt)
            la.ts = (la.ts + VIDEO_CLOCK // stream.fps) & 0xFFFFFFFF
        if pid_for_times is not None:
            self.send_times[pid_for_times] = time.monotonic()
        self.frames_sent += 1
