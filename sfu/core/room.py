"""Room: the routing table from published tracks (Receivers) to subscriber slots (DownTracks).

A slot either wants one named track (room protocol subscriptions) or "any track of this kind"
(WHEP players, which cannot renegotiate). Binding picks a codec the subscriber accepted and the
header-extension id mapping. Every change returns the bindings it made, so the caller can ask
the publisher for a keyframe; the room itself does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver
from sfu.negotiate import extension_map, fec_codecs, match_codec, repair_codecs
from sfu.sdp import Codec, Extmap


@dataclass(eq=False, slots=True)
class Slot:
    """A subscriber's receiving m= section."""

    downtrack: DownTrack
    subscriber: str  # participant id: a slot never receives its own participant's tracks
    codecs: list[Codec]
    extmaps: list[Extmap]
    wants: str | None = None  # a track id, or None for any track of the slot's kind
    # The subscriber's session (peer id): a session's "any track" slots each take a different
    # track. Another session of the same participant (a reconnect while the old one lingers,
    # a second tab) is not held back by what the first one receives.
    session: str = ""
    mismatched: set[str] = field(default_factory=set)  # track ids whose codec it cannot take


class Room:
    """Tracks and subscriptions of one room."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.receivers: dict[str, Receiver] = {}
        self.slots: list[Slot] = []
        self.participants: dict[str, str] = {}  # participant id -> role (publisher/subscriber)
        self.version = 0  # bumps whenever the set of tracks changes

    @property
    def empty(self) -> bool:
        return not self.participants and not self.receivers and not self.slots

    def tracks(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for r in self.receivers.values():
            info: dict[str, object] = dict(r.info.public())
            if r.simulcast:
                info["layers"] = [la.rid or str(la.layer) for la in r.ranked()]
            out.append(info)
        return out

    def add_receiver(self, receiver: Receiver, now: float) -> list[Slot]:
        """Publish a track; returns the slots that now receive it."""
        self.receivers[receiver.info.track_id] = receiver
        self.version += 1
        bound = []
        for slot in self.slots:
            if not slot.downtrack.bound and self._wanted(slot, receiver):
                if self._bind(slot, receiver, now):
                    bound.append(slot)
        return bound

    def remove_receiver(self, track_id: str, now: float) -> list[Slot]:
        """Unpublish a track; returns slots that were re-bound to another track."""
        receiver = self.receivers.pop(track_id, None)
        if receiver is None:
            return []
        self.version += 1
        rebound = []
        for slot in self.slots:
            if slot.downtrack.receiver is receiver:
                slot.downtrack.unbind()
                if slot.wants is None and self._bind_any(slot, now):
                    rebound.append(slot)
        for layer in receiver.layers:
            for dt in list(layer.downtracks) + list(layer.pending):
                dt.unbind()
            layer.downtracks.clear()
            layer.pending.clear()
        return rebound

    def add_slot(self, slot: Slot, now: float) -> bool:
        """Add a subscriber slot and bind it if a suitable track exists."""
        self.slots.append(slot)
        if slot.wants is not None:
            receiver = self.receivers.get(slot.wants)
            return receiver is not None and self._bind(slot, receiver, now)
        return self._bind_any(slot, now)

    def remove_slot(self, slot: Slot) -> None:
        if slot in self.slots:
            self.slots.remove(slot)
        slot.downtrack.unbind()

    def _wanted(self, slot: Slot, receiver: Receiver) -> bool:
        if slot.wants is not None:
            return slot.wants == receiver.info.track_id
        return (
            receiver.info.kind == slot.downtrack.kind
            and receiver.info.participant != slot.subscriber
            and not self._taken_by(slot, receiver)
        )

    def _taken_by(self, slot: Slot, receiver: Receiver) -> bool:
        """Whether another slot of the same session already receives `receiver`."""
        return any(
            s.subscriber == slot.subscriber and s.session == slot.session
            and s.downtrack.receiver is receiver
            for s in self.slots
        )

    def _bind_any(self, slot: Slot, now: float) -> bool:
        for receiver in self.receivers.values():
            if self._wanted(slot, receiver) and self._bind(slot, receiver, now):
                return True
        return False

    def _bind(self, slot: Slot, receiver: Receiver, now: float) -> bool:
        codec = match_codec(receiver.info.codec, slot.codecs)
        if codec is None:
            slot.mismatched.add(receiver.info.track_id)
            return False
        ext = extension_map(receiver.info.extmaps, slot.extmaps)
        publisher_ids = {e.id for e in receiver.info.extmaps}
        slot.downtrack.bind(receiver, codec.payload_type, ext, publisher_ids, now)
        rtx_pt, red_pt = repair_codecs(codec, slot.codecs)
        slot.downtrack.configure_repair(
            nack="nack" in codec.rtcp_fb, rtx_pt=rtx_pt, red_pt=red_pt,
            fec=fec_codecs(slot.codecs) if slot.downtrack.kind == "video" else None,
        )
        return True
