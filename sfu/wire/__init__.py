"""Stateless wire codecs: RTP, RTCP, STUN helpers. No I/O, no clock."""
