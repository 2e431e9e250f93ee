"""SDP (RFC 8866) as WebRTC uses it (JSEP, RFC 8829): parse an offer, write an answer.

Only what the node needs is modelled; unknown attributes are ignored. Every malformed line
raises `SdpError` with the line number, so a bad offer becomes a clear 400, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_SDP_NAMES = {"OPUS": "opus", "RTX": "rtx", "RED": "red", "ULPFEC": "ulpfec"}
_m_line = re.compile(r"^m=(\w+) (\d+)(?:/\d+)? ([\w/]+)(?: (.*))?$")


class SdpError(ValueError):
    """The SDP cannot be used; the message says why."""


@dataclass(slots=True)
class Codec:
    payload_type: int
    name: str  # upper-case encoding name: OPUS, VP8, H264, RTX, RED, ULPFEC, ...
    clock_rate: int
    channels: int = 1
    fmtp: dict[str, str] = field(default_factory=dict)
    rtcp_fb: list[str] = field(default_factory=list)

    @property
    def apt(self) -> int | None:
        """The payload type an RTX (or RED-wrapped) codec belongs to."""
        value = self.fmtp.get("apt")
        return int(value) if value and value.isdigit() else None

    def name_for_sdp(self) -> str:
        return _SDP_NAMES.get(self.name, self.name)

    def fmtp_line(self) -> str:
        return ";".join(f"{k}={v}" if v != "" else k for k, v in self.fmtp.items())


@dataclass(slots=True)
class Extmap:
    id: int
    uri: str


@dataclass(slots=True)
class Rid:
    rid: str
    direction: str  # "send" or "recv"
    params: str = ""


@dataclass(slots=True)
class MediaSection:
    kind: str
    port: int
    proto: str
    formats: list[str]
    mid: str | None = None
    direction: str = "sendrecv"
    codecs: list[Codec] = field(default_factory=list)
    extmaps: list[Extmap] = field(default_factory=list)
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    rids: list[Rid] = field(default_factory=list)
    simulcast: str | None = None
    msid: str | None = None
    rtcp_mux: bool = False
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    sctp_port: int | None = None
    max_message_size: int | None = None

    def codec(self, payload_type: int) -> Codec | None:
        for c in self.codecs:
            if c.payload_type == payload_type:
                return c
        return None

    def extmap_id(self, uri: str) -> int | None:
        for e in self.extmaps:
            if e.uri == uri:
                return e.id
        return None


@dataclass(slots=True)
class SessionDescription:
    media: list[MediaSection] = field(default_factory=list)
    bundle: list[str] = field(default_factory=list)
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_lite: bool = False
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None

    def ice_credentials(self, m: MediaSection) -> tuple[str, str]:
        ufrag = m.ice_ufrag or self.ice_ufrag
        pwd = m.ice_pwd or self.ice_pwd
        if not ufrag or not pwd:
            raise SdpError("offer has no a=ice-ufrag / a=ice-pwd")
        return ufrag, pwd

    def dtls(self, m: MediaSection) -> tuple[list[tuple[str, str]], str]:
        fps = m.fingerprints or self.fingerprints
        if not fps:
            raise SdpError("offer has no a=fingerprint (DTLS-SRTP is required)")
        return fps, (m.setup or self.setup or "actpass")


def _int(value: str, what: str, lineno: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise SdpError(f"line {lineno}: {what} is not a number: {value!r}") from None


def _parse_fmtp(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            params[k.strip()] = v.strip()
        else:
            params[part] = ""
    return params


def parse(text: str) -> SessionDescription:
    """Parse an SDP offer. Raises SdpError naming the offending line."""
    if not text or not text.lstrip().startswith("v=0"):
        raise SdpError("not an SDP body (must start with v=0)")
    sdp = SessionDescription()
    media: MediaSection | None = None
    pending_fmtp: list[tuple[int, str, int]] = []
    pending_fb: list[tuple[str, str, int]] = []

    def flush() -> None:
        assert media is not None
        for pt, params, _lineno in pending_fmtp:
            codec = media.codec(pt)
            if codec is not None:
                codec.fmtp = _parse_fmtp(params)
        for target, fb, _lineno in pending_fb:
            for codec in media.codecs:
                if target == "*" or target == str(codec.payload_type):
                    codec.rtcp_fb.append(fb)
        pending_fmtp.clear()
        pending_fb.clear()

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {lineno}: not a type=value line: {line[:40]!r}")
        if line.startswith("m="):
            if media is not None:
                flush()
            m = _m_line.match(line)
            if not m:
                raise SdpError(f"line {lineno}: malformed m= line: {line[:60]!r}")
            media = MediaSection(
                kind=m.group(1),
                port=int(m.group(2)),
                proto=m.group(3),
                formats=(m.group(4) or "").split(),
            )
            sdp.media.append(media)
            continue
        if not line.startswith("a="):
            continue
        attr, _, value = line[2:].partition(":")
        if media is None:
            if attr == "group" and value.startswith("BUNDLE"):
                sdp.bundle = value.split()[1:]
            elif attr == "ice-ufrag":
                sdp.ice_ufrag = value
            elif attr == "ice-pwd":
                sdp.ice_pwd = value
            elif attr == "ice-lite":
                sdp.ice_lite = True
            elif attr == "fingerprint":
                algo, _, fp = value.partition(" ")
                if not fp:
                    raise SdpError(f"line {lineno}: malformed a=fingerprint")
                sdp.fingerprints.append((algo.lower(), fp.upper()))
            elif attr == "setup":
                sdp.setup = value
            continue
        if attr == "mid":
            media.mid = value
        elif attr in DIRECTIONS:
            media.direction = attr
        elif attr == "rtpmap":
            pt_s, _, desc = value.partition(" ")
            parts = desc.split("/")
            if len(parts) < 2:
                raise SdpError(f"line {lineno}: malformed a=rtpmap: {value!r}")
            pt = _int(pt_s, "payload type", lineno)
            if not 0 <= pt <= 127:
                raise SdpError(f"line {lineno}: payload type {pt} out of range")
            channels = _int(parts[2], "channels", lineno) if len(parts) > 2 else 1
            media.codecs.append(
                Codec(pt, parts[0].upper(), _int(parts[1], "clock rate", lineno), channels)
            )
        elif attr == "fmtp":
            pt_s, _, params = value.partition(" ")
            pending_fmtp.append((_int(pt_s, "fmtp payload type", lineno), params, lineno))
        elif attr == "rtcp-fb":
            target, _, fb = value.partition(" ")
            pending_fb.append((target, fb.strip(), lineno))
        elif attr == "extmap":
            id_s, _, rest = value.partition(" ")
            uri = rest.split(" ")[0]
            ext_id = _int(id_s.split("/")[0], "extmap id", lineno)
            if not 1 <= ext_id <= 255 or not uri:
                raise SdpError(f"line {lineno}: malformed a=extmap: {value!r}")
            media.extmaps.append(Extmap(ext_id, uri))
        elif attr == "ssrc":
            ssrc_s, _, desc = value.partition(" ")
            ssrc = _int(ssrc_s, "ssrc", lineno)
            if not 0 <= ssrc <= 0xFFFFFFFF:
                raise SdpError(f"line {lineno}: ssrc out of range")
            key, _, val = desc.partition(":")
            media.ssrcs.setdefault(ssrc, {})[key] = val
        elif attr == "ssrc-group":
            parts = value.split()
            if len(parts) < 2:
                raise SdpError(f"line {lineno}: malformed a=ssrc-group")
            media.ssrc_groups.append(
                (parts[0], [_int(s, "ssrc", lineno) for s in parts[1:]])
            )
        elif attr == "rid":
            parts = value.split(" ", 2)
            if len(parts) < 2 or parts[1] not in ("send", "recv"):
                raise SdpError(f"line {lineno}: malformed a=rid: {value!r}")
            media.rids.append(Rid(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
        elif attr == "simulcast":
            media.simulcast = value
        elif attr == "msid":
            media.msid = value
        elif attr == "rtcp-mux":
            media.rtcp_mux = True
        elif attr == "ice-ufrag":
            media.ice_ufrag = value
        elif attr == "ice-pwd":
            media.ice_pwd = value
        elif attr == "fingerprint":
            algo, _, fp = value.partition(" ")
            if not fp:
                raise SdpError(f"line {lineno}: malformed a=fingerprint")
            media.fingerprints.append((algo.lower(), fp.upper()))
        elif attr == "setup":
            media.setup = value
        elif attr == "sctp-port":
            media.sctp_port = _int(value, "sctp-port", lineno)
        elif attr == "max-message-size":
            media.max_message_size = _int(value, "max-message-size", lineno)
    if media is not None:
        flush()
    if not sdp.media:
        raise SdpError("offer has no m= sections")
    return sdp


# --- answers -------------------------------------------------------------------------------


@dataclass(slots=True)
class AnswerMedia:
    """One m= section of an answer, in the order of the offer."""

    kind: str
    mid: str
    proto: str
    direction: str = "inactive"
    rejected: bool = False
    formats: list[str] = field(default_factory=list)  # used when no codecs (application/rejected)
    codecs: list[Codec] = field(default_factory=list)
    extmaps: list[Extmap] = field(default_factory=list)
    ssrcs: list[tuple[int, str]] = field(default_factory=list)  # (ssrc, cname)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    msid: str | None = None
    rids: list[Rid] = field(default_factory=list)
    simulcast: str | None = None
    sctp_port: int | None = None
    max_message_size: int | None = None


@dataclass(slots=True)
class AnswerTransport:
    ice_ufrag: str
    ice_pwd: str
    fingerprint: tuple[str, str]
    setup: str  # "passive" or "active"
    candidates: list[tuple[str, int]]  # host candidates (ip, port)


def write_answer(
    session_id: int, transport: AnswerTransport, media: list[AnswerMedia], version: int = 1
) -> str:
    """Serialise an ICE-lite, BUNDLEd, rtcp-muxed answer."""
    bundled = [m.mid for m in media if not m.rejected]
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=ice-lite",
        "a=msid-semantic: WMS *",
    ]
    if bundled:
        lines.append("a=group:BUNDLE " + " ".join(bundled))
    for m in media:
        if m.rejected:
            fmt = " ".join(m.formats or [str(c.payload_type) for c in m.codecs] or ["0"])
            lines += [f"m={m.kind} 0 {m.proto} {fmt}", "c=IN IP4 0.0.0.0", f"a=mid:{m.mid}"]
            continue
        fmt = " ".join([str(c.payload_type) for c in m.codecs] or m.formats)
        port = transport.candidates[0][1] if transport.candidates else 9
        lines += [
            f"m={m.kind} {port} {m.proto} {fmt}",
            f"c=IN IP4 {transport.candidates[0][0] if transport.candidates else '0.0.0.0'}",
            f"a=mid:{m.mid}",
            f"a=ice-ufrag:{transport.ice_ufrag}",
            f"a=ice-pwd:{transport.ice_pwd}",
            f"a=fingerprint:{transport.fingerprint[0]} {transport.fingerprint[1]}",
            f"a=setup:{transport.setup}",
        ]
        # The same candidates in every bundled section: some stacks (aiortc) read only the
        # last section of a bundle for them.
        for i, (ip, cport) in enumerate(transport.candidates, 1):
            lines.append(f"a=candidate:{i} 1 udp {2130706431 - i} {ip} {cport} typ host")
        lines.append("a=end-of-candidates")
        if m.kind == "application":
            if m.sctp_port is not None:
                lines.append(f"a=sctp-port:{m.sctp_port}")
            if m.max_message_size is not None:
                lines.append(f"a=max-message-size:{m.max_message_size}")
            continue
        lines.append(f"a={m.direction}")
        lines.append("a=rtcp-mux")
        if m.kind == "video":
            lines.append("a=rtcp-rsize")
        for e in m.extmaps:
            lines.append(f"a=extmap:{e.id} {e.uri}")
        for c in m.codecs:
            chan = f"/{c.channels}" if m.kind == "audio" and c.channels > 1 else ""
            lines.append(f"a=rtpmap:{c.payload_type} {c.name_for_sdp()}/{c.clock_rate}{chan}")
            if c.fmtp:
                lines.append(f"a=fmtp:{c.payload_type} {c.fmtp_line()}")
            for fb in c.rtcp_fb:
                lines.append(f"a=rtcp-fb:{c.payload_type} {fb}")
        if m.msid:
            lines.append(f"a=msid:{m.msid}")
        for r in m.rids:
            lines.append(f"a=rid:{r.rid} {r.direction}" + (f" {r.params}" if r.params else ""))
        if m.simulcast:
            lines.append(f"a=simulcast:{m.simulcast}")
        for semantic, ssrcs in m.ssrc_groups:
            lines.append(f"a=ssrc-group:{semantic} " + " ".join(map(str, ssrcs)))
        for ssrc, cname in m.ssrcs:
            lines.append(f"a=ssrc:{ssrc} cname:{cname}")
            if m.msid:
                lines.append(f"a=ssrc:{ssrc} msid:{m.msid}")
    return "\r\n".join(lines) + "\r\n"
