"""When the datagram being handled reached the host: the kernel's receive timestamp.

Transport-cc feedback reports packet arrival times to 250 us. The event loop's clock in
`datagram_received` says when Python got to the packet, which can be tens of milliseconds
later when the loop was busy (a DTLS handshake, a burst of keyframe packets, another peer); a
probe cluster read in one burst then looks like it arrived at an impossible rate, and Chromium
discards the probe (measured: about one start-up in eight stayed at 300 kbit/s). The kernel
stamps every datagram on arrival; SIOCGSTAMP returns the stamp of the last datagram read on
the socket, which inside `datagram_received` is the one being handled (asyncio's selector loop
and uvloop both read one datagram and call the protocol before reading the next).

Linux only; elsewhere, or if the ioctl fails, the loop's `now` is used unchanged.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

SIOCGSTAMP = 0x8906  # linux/sockios.h: struct timeval of the last packet read
_TIMEVAL = struct.Struct("@ll")
_EMPTY = bytes(_TIMEVAL.size)
MAX_AGE = 1.0  # a larger age means a clock step, not a queue: ignore it


class RxStamp:
    """Arrival times, on the event loop's clock, of datagrams read from one UDP socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._fd = sock.fileno()
        self.enabled = sys.platform.startswith("linux")
        if self.enabled:
            try:
                import fcntl

                self._ioctl = fcntl.ioctl
                # The first SIOCGSTAMP turns stamping on for the socket; with nothing read since,
                # it fails with ENOENT, which is expected.
                self._ioctl(self._fd, SIOCGSTAMP, _EMPTY)
            except FileNotFoundError:
                pass
            except (ImportError, OSError):
                self.enabled = False

    def arrival(self, now: float) -> float:
        """`now` (loop clock) moved back by how long the datagram just read was queued."""
        if not self.enabled:
            return now
        try:
            sec, usec = _TIMEVAL.unpack(self._ioctl(self._fd, SIOCGSTAMP, _EMPTY))
        except OSError:
            return now
        age = time.time() - sec - usec * 1e-6
        return now - age if 0.0 < age < MAX_AGE else now
