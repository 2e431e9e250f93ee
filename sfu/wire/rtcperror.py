"""The RTCP codec's error type, in a module of its own so that `rtcp` and `twcc` can both use it
(and `rtcp` can import `twcc`) without an import cycle. Import it from `sfu.wire.rtcp`."""

from __future__ import annotations


class RtcpError(ValueError):
    """Malformed RTCP input, or a packet field that cannot be encoded."""
