"""Bench output: report.json, PNG plots (matplotlib, Agg) and a Markdown summary.

`write_run` writes one run's directory; `write_set` the top-level summary of a scenario set;
`progress` is the tqdm bar shown while a simulation runs (off when not a TTY or quiet).
The report schema is documented in docs/bench.md.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PLOTS = ("bitrate.png", "latency.png", "loss.png", "layers.png")

# (key in metrics.aggregate, column title, formatter)
HEADLINE: list[tuple[str, str, Callable[[Any], str]]] = []


def _num(fmt: str, scale: float = 1.0) -> Callable[[Any], str]:
    def f(v: Any) -> str:
        return "n/a" if v is None else format(v * scale, fmt)

    return f


HEADLINE += [
    ("latency_p50_ms", "latency p50 (ms)", _num(".1f")),
    ("latency_p95_ms", "latency p95 (ms)", _num(".1f")),
    ("latency_p99_ms", "latency p99 (ms)", _num(".1f")),
    ("loss_before_recovery", "loss before recovery", _num(".2%")),
    ("residual_loss", "residual loss", _num(".2%")),
    ("frames_not_rendered", "frames not rendered", _num(".2%")),
    ("freeze_count", "freezes", _num(".0f")),
    ("freeze_total_s", "freeze time (s)", _num(".2f")),
    ("time_without_video_s", "no video (s)", _num(".2f")),
    ("received_bitrate_bps", "received (Mbit/s)", _num(".3f", 1e-6)),
    ("utilisation", "utilisation", _num(".1%")),
    ("join_to_first_frame_s", "join to 1st frame (s)", _num(".3f")),
    ("layer_switches", "layer switches", _num(".0f")),
    ("recovery", "recovery", str),
]


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The summary.json entry of one run: scenario, seed, duration and the headline metrics."""
    agg = report["metrics"]["aggregate"]
    return {"scenario": report["scenario"], "seed": report["seed"],
            "duration": report["duration"], **agg}


def _cells(entry: dict[str, Any]) -> list[str]:
    cells = [fmt(entry.get(key)) for key, _, fmt in HEADLINE]
    q = entry.get("queuing_delay_p95_ms") or {}
    cells.insert(3, _num(".1f")(q.get("downlink")))
    return cells


def _titles() -> list[str]:
    titles = [t for _, t, _ in HEADLINE]
    titles.insert(3, "downlink queue p95 (ms)")
    return titles


def markdown_table(entries: Sequence[dict[str, Any]], first: str = "scenario") -> str:
    head = [first, *_titles()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        lines.append("| " + " | ".join([str(e.get(first, "")), *_cells(e)]) + " |")
    return "\n".join(lines) + "\n"


def write_run(report: dict[str, Any], out: Path, plots: bool = True) -> None:
    """Write report.json, summary.md and (unless `plots` is False) the PNGs into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    if plots:
        plot_run(report, out)
    (out / "summary.md").write_text(_run_markdown(report, plots))


def _run_markdown(report: dict[str, Any], plots: bool) -> str:
    cfg = report["config"]
    agg = report["metrics"]["aggregate"]
    pub = report["metrics"]["publisher"]
    node = report["metrics"]["node"]

    def path(p: dict[str, Any]) -> str:
        parts = [f"trace `{p['trace']}`" if p["trace"] else "unlimited capacity",
                 f"loss `{p['loss']}`", f"delay {p['delay_ms']:g} ms"]
        if p["jitter_ms"]:
            parts.append(f"jitter {p['jitter_ms']:g} ms")
        if p["queue_ms"] is not None:
            parts.append(f"queue {p['queue_ms']:g} ms")
        return ", ".join(parts)

    lines = [
        f"# Simulation: {report['scenario']}",
        "",
        f"{report['duration']:g} s simulated, seed {report['seed']}; video {cfg['bitrate'] / 1e6:g}"
        f" Mbit/s at {cfg['fps']:g} fps (fixed rate, keyframe every {cfg['keyframe_interval']:g} s)"
        f" plus Opus; {cfg['subscribers']} subscriber(s) joining at {cfg['join_at']:g} s.",
        "",
        f"- uplink: {path(cfg['up'])}",
        f"- downlink: {path(cfg['down'])}",
        f"- loss recovery: **{agg['recovery']}**; bandwidth estimation: **{agg['estimator']}**;"
        " CPU per forwarded packet: n/a in simulation",
        "",
        markdown_table([{"scenario": report["scenario"], **agg}]),
        f"Publisher: {pub['frames']} frames, {pub['keyframes']} keyframes "
        f"({pub['forced_keyframes']} forced by {pub['plis_received']} PLIs). Node: "
        f"{node['packets_forwarded']} packets forwarded, {node['plis_upstream']} PLIs upstream "
        f"({node['plis_suppressed']} suppressed by the throttle).",
        "",
    ]
    if plots:
        lines += [f"![{p}]({p})" for p in PLOTS] + [""]
    return "\n".join(lines)


def write_set(entries: Sequence[dict[str, Any]], out: Path, note: str = "") -> None:
    """bench-results/summary.json and summary.md for a scenario set."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(list(entries), indent=1, sort_keys=True) + "\n")
    text = ["# Simulated scenarios", ""]
    if note:
        text += [note, ""]
    text += [markdown_table(entries), "Each scenario's directory holds report.json, plots and "
             "summary.md. Latency is one-way publisher to subscriber (packets).", ""]
    (out / "summary.md").write_text("\n".join(text))


# --- plots ---------------------------------------------------------------------------------


def _none_to_nan(values: Sequence[Any], scale: float = 1.0) -> list[float]:
    return [float("nan") if v is None else v * scale for v in values]


def plot_run(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["series"]
    t = [x + s["bin_s"] / 2 for x in s["t"]]
    subs = s["subscribers"]
    title = f"{report['scenario']} (seed {report['seed']}, recovery: " \
            f"{report['metrics']['aggregate']['recovery']})"

    def figure(name: str, ylabel: str, draw: Callable[[Any], None], ylim0: bool = True) -> None:
        fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
        draw(ax)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, report["duration"])
        if ylim0:
            ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.set_title(title, fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)

    def bitrate(ax: Any) -> None:
        cap = s["capacity_bps"]
        if any(c is not None for c in cap):
            ax.step(t, _none_to_nan(cap, 1e-6), where="mid", color="black", lw=1.5,
                    label="bottleneck capacity")
        ax.plot(t, _none_to_nan(s["sent_bitrate_bps"], 1e-6), color="tab:gray", lw=1,
                ls="--", label="publisher sent")
        for name, sub in subs.items():
            ax.plot(t, _none_to_nan(sub["received_bitrate_bps"], 1e-6), lw=1.2,
                    label=f"{name} received")

    def latency(ax: Any) -> None:
        for name, sub in subs.items():
            ax.plot(t, _none_to_nan(sub["latency_p50_ms"]), lw=1.2, label=f"{name} packet p50")
            ax.plot(t, _none_to_nan(sub["latency_p95_ms"]), lw=1, label=f"{name} packet p95")
            ax.plot(t, _none_to_nan(sub["frame_latency_p95_ms"]), lw=1, ls=":",
                    label=f"{name} frame (capture to render) p95")

    def loss(ax: Any) -> None:
        for name, sub in subs.items():
            ax.plot(t, _none_to_nan(sub["loss_before_recovery"], 100), lw=1,
                    label=f"{name} on the links (before recovery)")
            ax.plot(t, _none_to_nan(sub["residual_loss"], 100), lw=1, ls="--",
                    label=f"{name} residual (after recovery)")
            for i, (start, length) in enumerate(sub["freezes_s"]):
                ax.axvspan(start, start + length, color="tab:red", alpha=0.2, lw=0,
                           label=f"{name} video frozen" if i == 0 else None)
        ax.set_ylim(0, 100)

    def layers(ax: Any) -> None:
        for name, sub in subs.items():
            ax.step(t, sub["layer_switches"], where="mid", label=f"{name} (no simulcast yet)")
        ax.set_ylim(-0.05, max(1, *(max(v["layer_switches"]) for v in subs.values())) + 0.05)

    figure("bitrate.png", "bitrate (Mbit/s)", bitrate)
    figure("latency.png", "one-way latency (ms)", latency)
    figure("loss.png", f"packet loss per {s['bin_s']:g} s bin (%)", loss)
    figure("layers.png", "layer switches per bin", layers, ylim0=False)


# --- progress --------------------------------------------------------------------------------


@contextmanager
def progress(total: float, desc: str, quiet: bool = False) -> Iterator[Callable[[float], None]]:
    """A tqdm bar over simulated seconds; yields `update(now)`. Off when quiet or not a TTY."""
    from tqdm import tqdm

    bar = tqdm(total=round(total), desc=desc, unit="sim-s", leave=False,
               disable=quiet or not sys.stderr.isatty(), file=sys.stderr)
    done = [0]

    def update(now: float) -> None:
        n = min(round(total), int(now))
        if n > done[0]:
            bar.update(n - done[0])
            done[0] = n

    try:
        yield update
    finally:
        bar.close()


def stopwatch() -> Callable[[], float]:
    """Wall-clock seconds since the call (the bench/sim engine itself never reads a clock)."""
    started = time.perf_counter()
    return lambda: time.perf_counter() - started
