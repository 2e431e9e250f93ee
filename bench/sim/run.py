"""One simulated run: publisher -> uplink -> node (real sfu.core) -> downlinks -> subscribers.

`simulate(config)` builds the links from trace/loss specs, runs the engine for `duration`
seconds of virtual time plus a drain period, and returns the report as a plain dict (the
schema is documented in docs/bench.md). The same config and seed give the same dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.sim.engine import Engine
from bench.sim.hooks import RECOVERY_MODES, SubscriberRecovery, make_recovery
from bench.sim.node import TICK, SimNode
from bench.sim.publisher import (
    AUDIO_PT,
    VIDEO_PT,
    Publisher,
    PublisherConfig,
)
from bench.sim.subscriber import Subscriber, SubscriberConfig
from sfu.core.receiver import TrackInfo
from sfu.sdp import Codec

REPO_ROOT = Path(__file__).resolve().parents[2]
VP8_CODEC = Codec(VIDEO_PT, "VP8", 90000, 1, {}, ["nack pli"])
OPUS_CODEC = Codec(AUDIO_PT, "OPUS", 48000, 2)


class ConfigError(ValueError):
    """A bad parameter or input file; `str()` is a one-line message naming it."""


@dataclass(slots=True)
class PathSpec:
    """Impairment of one direction of media (publisher->node or node->subscriber)."""

    trace: str | None = None  # load_trace spec; None = unlimited capacity
    loss: str = "none"  # parse_loss spec
    delay_ms: float = 0.0  # one-way propagation delay
    jitter_ms: float = 0.0
    queue_ms: float | None = None
    queue_bytes: int | None = None
    reorder: bool = False


@dataclass(slots=True)
class SimConfig:
    name: str = "sim"
    duration: float = 60.0
    seed: int = 0
    bitrate: float = 1.5e6  # video bits/s (fixed: no bandwidth estimation yet)
    fps: float = 30.0
    keyframe_interval: float = 3.0
    keyframe_ratio: float = 6.0
    temporal_layers: int = 1  # VP8 TIDs per video stream: 1 (none), 2 or 3
    temporal_steps: bool = False  # bwe runs: the allocator's --bwe-temporal-steps
    audio: bool = True
    subscribers: int = 1
    join_at: float = 1.0  # when subscribers join (the publisher starts at 0)
    drain: float = 2.0  # virtual seconds after the publisher stops, for packets in flight
    bin: float = 0.5  # time-series bin, seconds
    convergence: float = 5.0  # utilisation is averaged from here on
    up: PathSpec = field(default_factory=PathSpec)
    down: PathSpec = field(default_factory=PathSpec)
    recovery: str = "none"  # none | nack | nack+red | nack+red+fec (bench.sim.hooks)
    base_dir: str | None = None  # relative trace paths resolve here (default: cwd)

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("base_dir")
        return d


def check_temporal_layers(config: SimConfig) -> None:
    if config.temporal_layers not in (1, 2, 3):
        raise ConfigError(f"temporal_layers: must be 1, 2 or 3, got {config.temporal_layers!r}")


class _Port:
    """Feeds one bench.link.Link from the engine: send, re-arm on get_timer, poll, deliver."""

    def __init__(self, engine: Engine, link: Any, deliver: Callable[[bytes, float], None],
                 delay: float) -> None:
        self._engine = engine
        self._link = link
        self._deliver = deliver
        self._delay = delay
        self._armed: float | None = None
        self.sent_times: list[float] = []
        self.delivered_mask: bytearray = bytearray()
        self.transit_times: list[float] = []  # delivery time of each delivered packet
        self.excess: list[float] = []  # transit - propagation delay (queue + serialization)
        self.refused = 0

    def send(self, data: bytes, now: float) -> None:
        pid = len(self.sent_times)
        self.sent_times.append(now)
        self.delivered_mask.append(0)
        if not self._link.send((data, now, pid), len(data), now):
            self.refused += 1
        self._arm()

    def _arm(self) -> None:
        t = self._link.get_timer()
        if t is not None and (self._armed is None or t < self._armed):
            self._armed = t
            self._engine.schedule(t, self._fire)

    def _fire(self, now: float) -> None:
        self._armed = None
        for t, (data, sent, pid) in self._link.poll(now):
            self.delivered_mask[pid] = 1
            self.transit_times.append(t)
            self.excess.append(max(0.0, t - sent - self._delay))
            self._deliver(data, t)
        self._arm()


def _load_trace(spec: str | None, param: str, base: Path) -> Any:
    if spec is None:
        return None
    from bench.traces import load_trace

    resolved = spec
    if ":" not in spec and spec != "rfc8867":
        p = Path(spec)
        if not p.is_absolute():
            p = base / p
        if not p.is_file():
            raise ConfigError(f"{param}: trace file not found: {p}")
        resolved = str(p)
    try:
        return load_trace(resolved)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ConfigError(f"{param}: {resolved}: {exc}") from None


def _parse_loss(spec: str, seed: int, param: str) -> Any:
    from bench.loss import parse_loss

    try:
        return parse_loss(spec, seed)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{param}: {spec!r}: {exc}") from None


def link_config(path: PathSpec, seed: int, prefix: str, base: Path) -> Any:
    """A bench.link.LinkConfig for one direction; raises ConfigError naming the parameter."""
    from bench.link import LinkConfig

    for name, value in (("delay", path.delay_ms), ("jitter", path.jitter_ms)):
        if value < 0:
            raise ConfigError(f"--{prefix}{name}: must be >= 0 ms, got {value}")
    if path.queue_ms is not None and path.queue_ms <= 0:
        raise ConfigError(f"--{prefix}queue-ms: must be > 0, got {path.queue_ms}")
    capacity = _load_trace(path.trace, f"--{prefix}trace", base)
    loss = _parse_loss(path.loss, seed + 1, f"--{prefix}loss")
    try:
        return LinkConfig(
            capacity=capacity, queue_bytes=path.queue_bytes, queue_ms=path.queue_ms,
            delay=path.delay_ms / 1000, jitter=path.jitter_ms / 1000, reorder=path.reorder,
            loss=loss, seed=seed,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--{prefix}*: {exc}") from None


@dataclass(slots=True)
class _Built:
    engine: Engine
    publisher: Publisher
    node: SimNode
    up: _Port
    downs: list[_Port]
    subscribers: list[Subscriber]
    up_link: Any
    down_links: list[Any]
    up_capacity: Any
    down_capacity: Any


def build(config: SimConfig) -> _Built:
    """Validate the config and wire the components; raises ConfigError on bad input."""
    from bench.link import Link

    if not 0 < config.duration <= 24 * 3600:
        raise ConfigError(f"--duration: must be in (0, 86400] seconds, got {config.duration}")
    if config.bitrate <= 0:
        raise ConfigError(f"--bitrate: must be positive, got {config.bitrate}")
    if not 1 <= config.subscribers <= 100:
        raise ConfigError(f"--subscribers: must be 1..100, got {config.subscribers}")
    if config.recovery not in RECOVERY_MODES:
        raise ConfigError(f"--recovery: must be one of {', '.join(RECOVERY_MODES)}, "
                          f"got {config.recovery!r}")
    check_temporal_layers(config)
    base = Path(config.base_dir) if config.base_dir else Path.cwd()
    seed = config.seed
    up_cfg = link_config(config.up, seed * 1000 + 11, "up-", base)
    down_cfgs = [link_config(config.down, seed * 1000 + 101 + 10 * i, "down-", base)
                 for i in range(config.subscribers)]

    engine = Engine()
    up_link: Link[tuple[bytes, float, int]] = Link(up_cfg, start=0.0)
    pub_cfg = PublisherConfig(video_bitrate=config.bitrate, fps=config.fps,
                              keyframe_interval=config.keyframe_interval,
                              keyframe_ratio=config.keyframe_ratio, audio=config.audio,
                              temporal_layers=config.temporal_layers)
    holder: dict[str, Any] = {}
    up_delay = config.up.delay_ms / 1000
    down_delay = config.down.delay_ms / 1000

    def to_publisher(data: bytes, now: float) -> None:
        # RTCP back to the publisher: same propagation delay, no loss or queue (documented).
        engine.schedule(now + up_delay, lambda t: holder["publisher"].on_rtcp(data, t))

    # The cores get the configured propagation RTT of their path (no RTT measurement here).
    down_rtt = max(0.01, 2 * down_delay)
    recovery = make_recovery(config.recovery, down_rtt=down_rtt, up_rtt=max(0.01, 2 * up_delay))
    node = SimNode(upstream_rtcp=to_publisher, recovery=recovery)
    up = _Port(engine, up_link, node.on_rtp, up_delay)
    publisher = Publisher(pub_cfg, up.send, seed)
    holder["publisher"] = publisher

    video_info = TrackInfo(track_id="pub-video", kind="video", participant="pub",
                           stream_id="pub", codec=VP8_CODEC)
    audio_info = TrackInfo(track_id="pub-audio", kind="audio", participant="pub",
                           stream_id="pub", codec=OPUS_CODEC)
    node.publish(video_info, pub_cfg.video_ssrc, 0.0)
    if config.audio:
        node.publish(audio_info, pub_cfg.audio_ssrc, 0.0)

    downs: list[_Port] = []
    subscribers: list[Subscriber] = []
    down_links: list[Any] = []

    def to_node(data: bytes, now: float) -> None:
        engine.schedule(now + down_delay, lambda t: node.on_subscriber_rtcp(data, t))

    for i in range(config.subscribers):
        name = f"sub{i}"
        v_ssrc, a_ssrc = 0x2222_0000 + 2 * i, 0x2222_0001 + 2 * i
        sub_rec = None
        if config.recovery != "none":
            from bench.sim.subscriber import SUBSCRIBER_RTCP_SSRC

            sub_rec = SubscriberRecovery(
                config.recovery, video_ssrc=v_ssrc, audio_ssrc=a_ssrc,
                rtcp_ssrc=SUBSCRIBER_RTCP_SSRC | i, rtt=down_rtt, schedule=engine.schedule,
                send_rtcp=to_node)
        sub = Subscriber(name, v_ssrc, a_ssrc, engine.schedule, to_node, SubscriberConfig(),
                         recovery=sub_rec)
        link: Link[tuple[bytes, float, int]] = Link(down_cfgs[i], start=0.0)
        port = _Port(engine, link, sub.on_packet, down_delay)
        subscribers.append(sub)
        downs.append(port)
        down_links.append(link)

        def join(now: float, name: str = name, port: _Port = port, v: int = v_ssrc,
                 a: int = a_ssrc) -> None:
            node.subscribe(name, "video", v, VP8_CODEC, port.send, now)
            if config.audio:
                node.subscribe(name, "audio", a, OPUS_CODEC, port.send, now)

        engine.schedule(config.join_at, join)

    frame = 1.0 / config.fps
    def next_frame(now: float) -> None:
        publisher.video_frame(now)
        nxt = round((round(now / frame) + 1) * frame, 9)
        if nxt < config.duration:
            engine.schedule(nxt, next_frame)

    engine.schedule(0.0, next_frame)
    if config.audio:
        def next_audio(now: float) -> None:
            publisher.audio_packet(now)
            nxt = round(now + 0.020, 9)
            if nxt < config.duration:
                engine.schedule(nxt, next_audio)

        engine.schedule(0.0, next_audio)
    engine.every(TICK, node.tick, until=config.duration + config.drain)
    return _Built(engine, publisher, node, up, downs, subscribers, up_link, down_links,
                  up_cfg.capacity, down_cfgs[0].capacity)


def simulate(config: SimConfig, progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run the simulation and return the report dict (see docs/bench.md)."""
    built = build(config)
    built.engine.run(config.duration + config.drain, progress=progress)
    from bench.sim.collect import collect

    return collect(config, built)
