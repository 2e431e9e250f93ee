"""The `sim` and `run-scenarios` subcommands of `python -m bench` (registered by bench.cli).

Bad input (malformed trace, unknown loss model, unreadable scenario file) prints one line
naming the file or parameter and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.sim.run import REPO_ROOT, ConfigError, PathSpec, SimConfig

STANDARD = Path(__file__).resolve().parents[1] / "scenarios" / "standard.json"
PATH_KEYS = {"trace", "loss", "delay_ms", "jitter_ms", "queue_ms", "queue_bytes", "reorder"}
TOP_KEYS = {"name", "duration", "seed", "bitrate", "fps", "keyframe_interval",
            "keyframe_ratio", "temporal_layers", "temporal_steps", "audio", "subscribers",
            "join_at", "drain", "bin", "convergence", "up", "down", "recovery"}
FULL_RECOVERY = "nack+red+fec"
# Headline keys copied from the recovery-off run into each summary entry's "without_recovery".
BASELINE_KEYS = ("residual_loss", "video_residual_loss", "freeze_count", "freeze_total_s",
                 "frames_not_rendered", "latency_p95_ms", "audio_delivered_within_300ms",
                 "time_without_video_s")


def add_commands(sub: Any) -> None:
    """Register `sim` and `run-scenarios` on the bench parser's subparsers."""
    sim = sub.add_parser("sim", help="simulated publisher -> node (real sfu.core) -> "
                         "subscriber over impaired links, in virtual time")
    sim.add_argument("--trace", help="downlink capacity: Mahimahi file, OpenNetLab .json, "
                     "const:BPS or rfc8867 (default: unlimited)")
    sim.add_argument("--loss", default=None, help="downlink loss: none, bernoulli:5%%, "
                     "ge:loss=10%%,burst=3, ge:p=..,r=..,h=..,k=.. (default none)")
    sim.add_argument("--delay", type=float, default=25.0, help="downlink one-way delay, ms")
    sim.add_argument("--jitter", type=float, default=0.0, help="downlink jitter, ms")
    sim.add_argument("--queue-ms", type=float, default=300.0, help="downlink queue, ms")
    sim.add_argument("--down-trace", help="same as --trace")
    sim.add_argument("--down-loss", help="same as --loss")
    sim.add_argument("--up-trace", help="uplink capacity (default: unlimited)")
    sim.add_argument("--up-loss", default="none", help="uplink loss (default none)")
    sim.add_argument("--up-delay", type=float, default=0.0, help="uplink one-way delay, ms")
    sim.add_argument("--up-jitter", type=float, default=0.0, help="uplink jitter, ms")
    sim.add_argument("--up-queue-ms", type=float, default=300.0, help="uplink queue, ms")
    sim.add_argument("--duration", type=float, default=60.0, help="simulated seconds")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--bitrate", type=float, default=1.5e6, help="video bits/s (fixed)")
    sim.add_argument("--fps", type=float, default=30.0)
    sim.add_argument("--temporal-layers", type=int, default=1, choices=(1, 2, 3),
                     help="VP8 temporal layers per video stream (Chromium's VP8 simulcast "
                     "sends 3; default 1: none)")
    sim.add_argument("--temporal-steps", action="store_true",
                     help="with --estimator: the allocator may also step down temporal layers "
                     "(the node's --bwe-temporal-steps)")
    sim.add_argument("--subscribers", type=int, default=1)
    sim.add_argument("--name", default="sim", help="scenario name in the report")
    sim.add_argument("--recovery", default=FULL_RECOVERY,
                     help="loss recovery: none, nack, nack+red, nack+red+fec (default)")
    sim.add_argument("--out", type=Path, default=Path("bench-results/sim"))
    sim.add_argument("--no-plots", action="store_true")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument("--estimator", default="none", choices=("none", "gcc", "remb-aiortc"),
                     help="downlink bandwidth estimation: none (single stream, as before), gcc "
                     "(simulcast + send-side GCC/allocator/pacer at the node) or remb-aiortc "
                     "(simulcast + aiortc's receive-side REMB estimator at the viewer)")
    sim.add_argument("--layers", default="150k,500k,1.5M",
                     help="simulcast layer bitrates for --estimator gcc|remb-aiortc")

    rs = sub.add_parser("run-scenarios", help="run the standard simulated scenario set")
    rs.add_argument("--scenarios", type=Path, default=STANDARD,
                    help=f"scenario file (default {STANDARD.relative_to(REPO_ROOT)})")
    rs.add_argument("--smoke", action="store_true", help="short run of a few scenarios")
    rs.add_argument("--only", default=None, help="comma-separated scenario names")
    rs.add_argument("--recovery", default=FULL_RECOVERY,
                    help="loss recovery for the runs (each scenario also runs once without, "
                    "for the comparison; default nack+red+fec)")
    rs.add_argument("--out", type=Path, default=Path("bench-results"))
    rs.add_argument("--no-plots", action="store_true")
    rs.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "sim":
            return _sim(args)
        return _run_scenarios(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _sim(args: argparse.Namespace) -> int:
    from bench.report import headline, progress, stopwatch, write_run
    from bench.sim.run import simulate

    config = SimConfig(
        name=args.name, duration=args.duration, seed=args.seed, bitrate=args.bitrate,
        fps=args.fps, subscribers=args.subscribers, recovery=args.recovery,
        temporal_layers=args.temporal_layers, temporal_steps=args.temporal_steps,
        up=PathSpec(trace=args.up_trace, loss=args.up_loss, delay_ms=args.up_delay,
                    jitter_ms=args.up_jitter, queue_ms=args.up_queue_ms),
        down=PathSpec(trace=args.down_trace or args.trace,
                      loss=args.down_loss or args.loss or "none", delay_ms=args.delay,
                      jitter_ms=args.jitter, queue_ms=args.queue_ms),
    )
    if not 0 < args.fps <= 120:
        raise ConfigError(f"--fps: must be in (0, 120], got {args.fps}")
    if getattr(args, "estimator", "none") != "none":
        from bench.sim.bwe import parse_layers, run_cli

        return run_cli(config, args.estimator, parse_layers(args.layers), args.out,
                       plots=not args.no_plots, quiet=args.quiet)
    total = config.duration + config.drain
    elapsed = stopwatch()
    with progress(total, config.name, args.quiet) as update:
        report = simulate(config, progress=update)
    wall = elapsed()
    write_run(report, args.out, plots=not args.no_plots)
    h = headline(report)
    if not args.quiet:
        print(json.dumps(h, indent=1))
    print(f"simulated {config.duration:g} s in {wall:.2f} s; wrote {args.out}/report.json",
          file=sys.stderr)
    return 0


def load_scenarios(path: Path, smoke: bool = False) -> list[SimConfig]:
    """Scenario configs from a JSON file; raises ConfigError naming the file and entry."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read scenario file: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("scenarios"), list):
        raise ConfigError(f"{path}: expected an object with a 'scenarios' list")
    defaults = doc.get("defaults", {})
    entries: list[dict[str, Any]] = doc["scenarios"]
    smoke_cfg = doc.get("smoke", {}) if smoke else {}
    if smoke:
        names = smoke_cfg.get("scenarios")
        if names is not None:
            known = {e.get("name") for e in entries if isinstance(e, dict)}
            for n in names:
                if n not in known:
                    raise ConfigError(f"{path}: smoke: unknown scenario {n!r}")
            entries = [e for e in entries if e.get("name") in names]
    configs = []
    for i, entry in enumerate(entries):
        where = f"{path}: scenarios[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: each scenario needs a 'name'")
        where = f"{path}: scenario {entry['name']!r}"
        merged = _merge(defaults, entry, where)
        if smoke and "duration" in smoke_cfg:
            merged["duration"] = min(float(merged.get("duration", 60)), smoke_cfg["duration"])
        try:
            up = PathSpec(**merged.pop("up", {}))
            down = PathSpec(**merged.pop("down", {}))
            configs.append(SimConfig(**merged, up=up, down=down, base_dir=str(REPO_ROOT)))
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return configs


def _merge(defaults: dict[str, Any], entry: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for source in (defaults, entry):
        for key, value in source.items():
            if key.startswith("_"):
                continue
            if key not in TOP_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}")
            if key in ("up", "down"):
                if not isinstance(value, dict) or set(value) - PATH_KEYS:
                    bad = sorted(set(value) - PATH_KEYS) if isinstance(value, dict) else value
                    raise ConfigError(f"{where}: {key}: unknown keys {bad}")
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def _run_scenarios(args: argparse.Namespace) -> int:
    from bench.report import headline, progress, stopwatch, write_run, write_set
    from bench.sim.run import build, simulate

    configs = load_scenarios(args.scenarios, smoke=args.smoke)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {c.name for c in configs})
        if unknown:
            raise ConfigError(f"--only: unknown scenario(s) {', '.join(unknown)}")
        configs = [c for c in configs if c.name in wanted]
    for c in configs:
        if args.recovery is not None:
            c.recovery = args.recovery
    for c in configs:  # validate every trace and loss spec before running anything
        try:
            build(c)
        except ConfigError as exc:
            raise ConfigError(f"scenario {c.name!r}: {exc}") from None
    entries = []
    elapsed_all = stopwatch()
    for c in configs:
        elapsed = stopwatch()
        with progress(c.duration + c.drain, c.name, args.quiet) as update:
            report = simulate(c, progress=update)
        wall = elapsed()
        write_run(report, args.out / c.name, plots=not args.no_plots)
        entry = headline(report)
        entry["wall_s"] = round(wall, 3)
        if c.recovery != "none":
            # The same scenario with recovery off, for the on/off comparison.
            off = headline(simulate(replace(c, recovery="none")))
            entry["without_recovery"] = {k: off.get(k) for k in BASELINE_KEYS}
        entries.append(entry)
        if not args.quiet:
            print(f"{c.name}: {c.duration:g} s simulated in {wall:.2f} s", file=sys.stderr)
    total = elapsed_all()
    comparison = _comparison_table(entries)
    write_set(entries, args.out, note=comparison + f"{len(entries)} scenarios{' (smoke)' if args.smoke else ''}"
              f", seed(s) {sorted({c.seed for c in configs})}, loss recovery: "
              f"{', '.join(sorted({c.recovery for c in configs}))} (each also run without; see "
              f"without_recovery in summary.json), bandwidth estimation: none; "
              f"wall time {total:.1f} s.")
    print(f"wrote {args.out}/summary.json ({len(entries)} scenarios, {total:.1f} s)",
          file=sys.stderr)
    return 0


def _comparison_table(entries: list[dict[str, Any]]) -> str:
    """Markdown: recovery on vs off per scenario (empty when nothing ran with recovery)."""
    rows = [e for e in entries if "without_recovery" in e]
    if not rows:
        return ""

    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2%}"

    def num(v: Any, fmt: str = ".2f") -> str:
        return "n/a" if v is None else format(v, fmt)

    lines = ["## Loss recovery on vs off", "",
             "| scenario | recovery | residual loss (on / off) | freeze time s (on / off) | "
             "p95 latency ms (on / off) | audio within 300 ms (on / off) | overhead |",
             "|---|---|---|---|---|---|---|"]
    for e in rows:
        off = e["without_recovery"]
        ovh = (e.get("overhead_nack_rtx_fec") or {}).get("ratio")
        lines.append(
            f"| {e['scenario']} | {e.get('recovery')} | {pct(e.get('residual_loss'))} / "
            f"{pct(off.get('residual_loss'))} | {num(e.get('freeze_total_s'))} / "
            f"{num(off.get('freeze_total_s'))} | {num(e.get('latency_p95_ms'), '.0f')} / "
            f"{num(off.get('latency_p95_ms'), '.0f')} | "
            f"{pct(e.get('audio_delivered_within_300ms'))} / "
            f"{pct(off.get('audio_delivered_within_300ms'))} | {pct(ovh)} |")
    return "\n".join(lines) + "\n\n"
