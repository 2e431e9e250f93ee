"""Selective forwarding unit for live commerce: WebRTC in, RTP forwarded without decoding."""

__version__ = "0.1.0"
