"""The floor: the least a Python forwarder can do per packet, measured on this machine.

Per incoming packet: one SRTP unprotect; then per subscriber one header rewrite (``struct``
``pack_into`` of seq/ts/ssrc into a ``bytearray`` copy), one SRTP protect with that
subscriber's own outbound session and one ``sendto`` on loopback to a bound socket that nobody
reads (the kernel drops what overflows its buffer, silently). No routing, statistics, RTCP or
event loop: the node's real figure is compared against this.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import pylibsrtp

from bench.rawpeer import AUDIO_PT, VIDEO_PT, EncodedStream

PROFILES = {
    "SRTP_AEAD_AES_256_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32 + 12),
    "SRTP_AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16 + 12),
    "SRTP_AES128_CM_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16 + 14),
}

# A helper process that binds N sockets and drains them (epoll), for the "live" variant: the
# kernel's loopback delivery and receiver wake-ups are charged to the sender, as in the node.
_DRAIN = r"""
import selectors, socket, sys, time
n, limit = int(sys.argv[1]), float(sys.argv[2])
sel = selectors.DefaultSelector()
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sel.register(s, selectors.EVENT_READ)
    socks.append(s)
print(",".join(str(s.getsockname()[1]) for s in socks), flush=True)
end = time.monotonic() + limit
while time.monotonic() < end:
    for key, _ in sel.select(0.5):
        sock = key.fileobj
        for _ in range(256):
            try:
                sock.recv(2048)
            except BlockingIOError:
                break
"""

_rtp_header = struct.Struct("!BBHII")
_seq_ts_ssrc = struct.Struct("!HII")


@dataclass
class FloorResult:
    subscribers: int
    profile: str
    sink: str  # "unread": one bound socket nobody reads; "live": N sockets a process drains
    incoming_packets: int
    egress_packets: int
    cpu_seconds: float
    us_per_egress_packet: float
    egress_packets_per_core_second: float
    send_errors: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _session(profile: str, key: bytes, outbound: bool) -> pylibsrtp.Session:
    srtp_profile, _ = PROFILES[profile]
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=(
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
        ),
        srtp_profile=srtp_profile,
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return pylibsrtp.Session(policy)


def plain_packets(stream: EncodedStream, count: int) -> list[bytes]:
    """``count`` plain RTP packets replaying ``stream`` (video and audio interleaved as sent)."""
    out: list[bytes] = []
    vseq = aseq = 0
    vts = ats = 0
    frame = audio = 0
    per_frame_audio = 1.0 / stream.fps / 0.020 if stream.audio else 0.0
    audio_due = 0.0
    while len(out) < count:
        payloads = stream.video[frame % len(stream.video)]
        frame += 1
        for i, payload in enumerate(payloads):
            marker = 0x80 if i == len(payloads) - 1 else 0
            out.append(_rtp_header.pack(0x80, marker | VIDEO_PT, vseq & 0xFFFF, vts, 1) + payload)
            vseq += 1
        vts = (vts + 90000 // stream.fps) & 0xFFFFFFFF
        audio_due += per_frame_audio
        while audio_due >= 1.0:
            audio_due -= 1.0
            payload = stream.audio[audio % len(stream.audio)]
            audio += 1
            out.append(_rtp_header.pack(0x80, AUDIO_PT, aseq & 0xFFFF, ats, 2) + payload)
            aseq += 1
            ats = (ats + 960) & 0xFFFFFFFF
    return out[:count]


def run_floor(
    stream: EncodedStream,
    subscribers: int,
    *,
    profile: str = "SRTP_AEAD_AES_256_GCM",
    egress_target: int = 200_000,
    max_incoming: int = 20_000,
    max_seconds: float = 20.0,
    live: bool = False,
) -> FloorResult:
    """Measure the floor loop with ``subscribers`` egress copies per incoming packet.

    ``live`` sends to ``subscribers`` sockets drained by a helper process instead of one
    unread socket (the definition of the floor); a diagnostic, not the floor itself.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown SRTP profile {profile}")
    incoming = max(200, min(max_incoming, egress_target // max(subscribers, 1)))
    key_len = PROFILES[profile][1]
    in_key = os.urandom(key_len)
    sender = _session(profile, in_key, outbound=True)
    protected = [sender.protect(p) for p in plain_packets(stream, incoming)]
    rx = _session(profile, in_key, outbound=False)
    txs = [_session(profile, os.urandom(key_len), outbound=True) for _ in range(subscribers)]
    ssrcs = [0x10000 + i for i in range(subscribers)]
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    dests = [sink.getsockname()] * subscribers
    drain: subprocess.Popen[bytes] | None = None
    if live:
        drain = subprocess.Popen(
            [sys.executable, "-c", _DRAIN, str(subscribers), str(max_seconds + 10)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        assert drain.stdout is not None
        ports = drain.stdout.readline().decode().strip().split(",")
        dests = [("127.0.0.1", int(p)) for p in ports]
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setblocking(False)
    seqs = [0] * subscribers
    pack_into = _seq_ts_ssrc.pack_into
    sendto = out.sendto
    errors = 0
    done = 0
    deadline = time.monotonic() + max_seconds
    start = time.process_time()
    try:
        for data in protected:
            plain = rx.unprotect(data)
            ts = int.from_bytes(plain[4:8], "big")
            for j in range(subscribers):
                pkt = bytearray(plain)
                seq = seqs[j]
                pack_into(pkt, 2, seq, ts, ssrcs[j])
                seqs[j] = (seq + 1) & 0xFFFF
                try:
                    sendto(txs[j].protect(bytes(pkt)), dests[j])
                except OSError:
                    errors += 1
            done += 1
            if not done & 0xFF and time.monotonic() > deadline:
                break
        cpu = time.process_time() - start
    finally:
        out.close()
        sink.close()
        if drain is not None:
            drain.kill()  # our own helper, by its handle
            drain.wait(5)
    egress = done * subscribers
    us = cpu / egress * 1e6 if egress else float("nan")
    return FloorResult(
        subscribers=subscribers,
        profile=profile,
        sink="live" if live else "unread",
        incoming_packets=done,
        egress_packets=egress,
        cpu_seconds=round(cpu, 4),
        us_per_egress_packet=round(us, 3),
        egress_packets_per_core_second=round(1e6 / us) if egress else 0,
        send_errors=errors,
    )
