"""The QUIC shell shared by both ends of a cascade link (aioquic).

It only moves bytes: DATAGRAM frames in and out (one relayed RTP packet each), control
lines on the first bidirectional stream (sfu.wire.cascade), and a close. What the bytes
mean is decided by the origin and edge objects built on it. The certificate is generated
at start and never verified by the edge: trust comes from the node-secret handshake
(sfu.cascade.auth), which is bound to this certificate.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sfu.wire.cascade import CascadeWireError, LineReader, encode

log = logging.getLogger("sfu.cascade")

ALPN = "sfu-cascade/1"
# The largest UDP payload sent: fits a 1500-byte MTU under IPv6 and IPv4 headers.
MAX_UDP_PAYLOAD = 1452
# QUIC short header (1 + 8-byte connection id + up to 4-byte packet number), AEAD tag (16),
# DATAGRAM frame type and length (3), with room to spare.
QUIC_OVERHEAD = 40
MAX_DATAGRAM = MAX_UDP_PAYLOAD - QUIC_OVERHEAD
MAX_QUEUED = 512  # DATAGRAM frames waiting for the congestion window (about 0.5 s of video)
IDLE_TIMEOUT = 10.0  # seconds of silence before a link counts as lost
CONTROL_STREAM = 0  # the client's first bidirectional stream

# Application error codes in CONNECTION_CLOSE.
CLOSE_NORMAL = 0x0
CLOSE_AUTH = 0x1
CLOSE_PROTOCOL = 0x2


class Certificate:
    """A self-signed ECDSA certificate for the QUIC listener, made at start."""

    def __init__(self, name: str = "sfu-cascade") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(self.key, hashes.SHA256())
        )
        self.der = self.cert.public_bytes(serialization.Encoding.DER)


def configuration(*, server: bool, idle_timeout: float,
                  certificate: Certificate | None = None) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=not server,
        alpn_protocols=[ALPN],
        max_datagram_frame_size=65536,
        max_datagram_size=MAX_UDP_PAYLOAD,
        idle_timeout=idle_timeout,
    )
    if server:
        assert certificate is not None
        config.certificate = certificate.cert
        config.private_key = certificate.key
    else:
        import ssl

        config.verify_mode = ssl.CERT_NONE  # see the module docstring
    return config


def peer_certificate_der(protocol: QuicConnectionProtocol) -> bytes:
    """The DER certificate the peer presented in the TLS handshake (b"" if unknown)."""
    tls = getattr(protocol._quic, "tls", None)
    cert = getattr(tls, "_peer_certificate", None)
    if cert is None:
        return b""
    der: bytes = cert.public_bytes(serialization.Encoding.DER)
    return der


class LinkProtocol(QuicConnectionProtocol):
    """One QUIC connection of a cascade link: datagrams, control lines, close.

    Subclasses (or the owner, through the callbacks) handle `on_message`, `on_datagram`
    and `on_closed`. Sends are batched: every send schedules one transmit for the end of
    the current loop iteration, so a burst of packets leaves in one pass.
    """

    accept: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reader = LineReader(self.accept)
        self.on_message: Callable[[dict[str, Any]], None] = lambda m: None
        self.on_bad_message: Callable[[CascadeWireError], None] = lambda e: None
        self.on_datagram: Callable[[bytes], None] = lambda d: None
        self.on_closed: Callable[[str], None] = lambda reason: None
        self.closed = False
        self.close_reason = ""
        self.close_code: int | None = None  # the peer's application error code

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.DatagramFrameReceived):
            self.on_datagram(event.data)
        elif isinstance(event, events.StreamDataReceived):
            if event.stream_id != CONTROL_STREAM:
                self.on_bad_message(CascadeWireError(f"data on stream {event.stream_id}"))
                return
            for item in self.reader.feed(event.data):
                if isinstance(item, CascadeWireError):
                    self.on_bad_message(item)
                else:
                    self.on_message(item)
                if self.closed:
                    return
        elif isinstance(event, events.ConnectionTerminated):
            if not self.closed:
                self.closed = True
                reason = event.reason_phrase or f"error 0x{event.error_code:x}"
                self.close_reason = reason
                self.close_code = event.error_code
                self.on_closed(reason)

    def send_message(self, message: dict[str, Any]) -> bool:
        """Queue one control line; False when closed or when it cannot be encoded (a track
        list beyond MAX_LINE: logged, never raised into the node's callers)."""
        if self.closed:
            return False
        try:
            line = encode(message)
        except CascadeWireError as exc:
            log.error("cascade: control message not sent", extra={"error": str(exc)})
            return False
        try:
            self._quic.send_stream_data(CONTROL_STREAM, line)
        except ValueError:  # the origin's side before the edge opened the stream
            return False
        self._transmit_soon()
        return True

    def send_datagram(self, data: bytes) -> bool:
        """Queue one DATAGRAM frame; False (not sent) when closed, too large for one QUIC
        packet, or when the congestion window has held back MAX_QUEUED frames already:
        a live stream is better served by a gap the edge can NACK than by a growing queue."""
        if self.closed or len(data) > MAX_DATAGRAM:
            return False
        pending = getattr(self._quic, "_datagrams_pending", ())
        if len(pending) >= MAX_QUEUED:
            return False
        self._quic.send_datagram_frame(data)
        self._transmit_soon()
        return True

    def shut(self, code: int, reason: str) -> None:
        """Close the connection (CONNECTION_CLOSE with an application error code)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._quic.close(error_code=code, reason_phrase=reason)
        self.transmit()
        self.on_closed(reason)
