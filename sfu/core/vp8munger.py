"""Vp8Munger: one continuous VP8 picture ID and TL0PICIDX sequence per down-track.

A viewer's decoder uses the picture ID to notice lost frames and TL0PICIDX to find the base
temporal layer. When the forwarder drops a whole frame of an upper temporal layer, later
picture IDs shift down to close the gap. When it switches to another simulcast layer (another
encoder with its own counters), both sequences continue from where they were.
"""

from __future__ import annotations

from sfu.wire.vp8 import Vp8Descriptor

_PID_MOD = 1 << 15


class Vp8Munger:
    """Translates picture IDs and TL0PICIDX of one incoming stream at a time."""

    def __init__(self, picture_id_start: int, tl0_start: int) -> None:
        self._pid_offset = 0
        self._tl0_offset = 0
        self._last_out_pid = (picture_id_start - 1) % _PID_MOD
        self._last_out_tl0 = (tl0_start - 1) & 0xFF
        self._rebase = True  # the next packet starts a new incoming sequence
        self._dropped_pid: int | None = None
        self._last_in_pid: int | None = None

    def switch_source(self) -> None:
        """The next packet comes from another encoder: continue after the last output."""
        self._rebase = True

    def translate(self, d: Vp8Descriptor) -> tuple[int | None, int | None]:
        """Output (picture ID, TL0PICIDX) for a forwarded packet."""
        pid = d.picture_id
        tl0 = d.tl0picidx
        if self._rebase:
            if pid is not None:
                self._pid_offset = (self._last_out_pid + 1 - pid) % _PID_MOD
            if tl0 is not None:
                self._tl0_offset = (self._last_out_tl0 + 1 - tl0) & 0xFF
            self._rebase = False
        out_pid = out_tl0 = None
        if pid is not None:
            out_pid = (pid + self._pid_offset) % _PID_MOD
            if pid != self._last_in_pid and ((out_pid - self._last_out_pid) % _PID_MOD) < 0x4000:
                self._last_out_pid = out_pid
            self._last_in_pid = pid
        if tl0 is not None:
            out_tl0 = (tl0 + self._tl0_offset) & 0xFF
            self._last_out_tl0 = out_tl0
        return out_pid, out_tl0

    def drop_frame(self, d: Vp8Descriptor) -> None:
        """A packet of a frame that will not be forwarded: close its picture ID once."""
        pid = d.picture_id
        if pid is None or pid == self._dropped_pid:
            return
        self._dropped_pid = pid
        if not self._rebase:
            self._pid_offset = (self._pid_offset - 1) % _PID_MOD
