"""The bandwidth-estimation table and plots of docs/benchmarks.md, in one command.

    python -m bench.sim.bwe_table [--out bench-results/bwe] [--plots docs/bwe] [--only NAME]
                                  [--seeds 1,2,3,4,5,6,7,8] [--temporal-layers 3]
                                  [--estimators gcc,gcc+temporal,remb-aiortc]

Runs every workload (RFC 8867 5.1 and three Mahimahi LTE downlink traces from
/work/shared/traces, or $BWE_TRACES) with each configuration: `gcc` (the node's default),
`gcc+temporal` (the node with --bwe-temporal-steps) and `remb-aiortc` (the baseline: aiortc's
receive-side estimator at the viewer). One simulcast viewer of a publisher with three
temporal layers per simulcast layer (as Chromium's VP8 simulcast sends), 50 ms one-way
delay, 300 ms drop-tail queue, once per seed. Each cell is
the median over the seeds with the range in brackets: one seed's figures move by several
points with nothing but the publisher's frame-size draws.

For each trace it also runs an idle sender (audio plus 30 kbit/s of video, no estimator):
the queuing delay the trace imposes on any packet whatever the sender does (its delivery
gaps), the floor under the queue figures.

Prints the markdown table and the seed-1 step events, writes each seed-1 report to `--out`
and the side-by-side figures (seed 1) to `--plots`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.sim.bwe import DEFAULT_LAYERS, plot, simulate_bwe
from bench.sim.run import ConfigError, PathSpec, SimConfig

TRACES = Path(os.environ.get("BWE_TRACES", "/work/shared/traces/mahimahi"))
# (name, trace spec, duration s, figure file)
WORKLOADS: tuple[tuple[str, str, float, str], ...] = (
    ("RFC 8867 5.1", "rfc8867", 100.0, "rfc8867-5.1.png"),
    ("ATT-LTE-driving-2016", str(TRACES / "ATT-LTE-driving-2016.down"), 120.0,
     "ATT-LTE-2016.png"),
    ("Verizon-LTE-short", str(TRACES / "Verizon-LTE-short.down"), 120.0,
     "Verizon-LTE-short.png"),
    ("TMobile-LTE-short", str(TRACES / "TMobile-LTE-short.down"), 120.0,
     "TMobile-LTE-short.png"),
)
ESTIMATORS = ("gcc", "gcc+temporal", "remb-aiortc")
IDLE_LAYERS = (10_000.0, 20_000.0, 30_000.0)  # the idle sender: null estimator, top 30k
NEVER = 1e9  # a drop or step-up the run never answered


def config(name: str, trace: str, duration: float, seed: int = 1,
           temporal_layers: int = 3, temporal_steps: bool = False) -> SimConfig:
    return SimConfig(name=name, duration=duration, seed=seed, temporal_layers=temporal_layers,
                     temporal_steps=temporal_steps,
                     down=PathSpec(trace=trace, delay_ms=50.0, queue_ms=300.0))


def _job(args: tuple[str, str, float, int, int, str]) -> dict[str, Any]:
    name, trace, duration, seed, tl, est = args
    if est == "idle":
        return simulate_bwe(config(name, trace, duration, seed, 1), "none", IDLE_LAYERS)
    estimator, _, option = est.partition("+")
    cfg = config(name, trace, duration, seed, tl, temporal_steps=option == "temporal")
    return simulate_bwe(cfg, estimator, DEFAULT_LAYERS)


def _cell(values: list[float | None], fmt: Callable[[float], str]) -> str:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return "-"
    mid = vals[(len(vals) - 1) // 2: len(vals) // 2 + 1]
    # a "never" in the middle makes the median "never", not an average with it
    med = max(mid) if max(mid) >= NEVER else statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(vals))}-{fmt(max(vals))}]"


def _opt(v: float | None) -> str:
    return "never" if v is None else f"{v:.2f}"


def _secs(v: float) -> str:
    return "never" if v >= NEVER else f"{v:.2f}"


def _pct(v: float) -> str:
    return f"{v * 100:.0f}"


def row(name: str, label: str, metrics: list[dict[str, Any]]) -> str:
    def col(key: str) -> list[float | None]:
        return [m[key] for m in metrics]

    q = [m["queuing_delay_ms"]["p95"] for m in metrics]
    drops = [max((d["sending_under_s"] or NEVER) for d in m["drops"]) if m["drops"] else None
             for m in metrics]
    ups = [max((u["layer_up_s"] or NEVER) for u in m["step_ups"]) if m["step_ups"] else None
           for m in metrics]
    return (f"| {name} | {label} | {_cell(col('utilisation'), _pct)} | "
            f"{_cell(col('oracle_utilisation'), _pct)} | "
            f"{_cell(col('utilisation_of_feasible'), _pct)} | "
            f"{_cell(col('utilisation_of_attainable'), _pct)} | "
            f"{_cell(q, lambda v: f'{v:.0f}')} | "
            f"{_cell(col('layer_switches_per_min_steady'), lambda v: f'{v:.1f}')} | "
            f"{_cell(col('temporal_steps_per_min_steady'), lambda v: f'{v:.1f}')} | "
            f"{_cell(drops, _secs)} | {_cell(ups, _secs)} | "
            f"{_cell(col('freeze_total_s'), lambda v: f'{v:.1f}')} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sim.bwe_table", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-results/bwe"))
    ap.add_argument("--plots", type=Path, default=None, help="write the figures here")
    ap.add_argument("--only", default=None, help="one workload name")
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))
    ap.add_argument("--seeds", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--temporal-layers", type=int, default=3, choices=(1, 2, 3))
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    estimators = [e for e in args.estimators.split(",") if e]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        print(f"error: --seeds: not a list of integers: {args.seeds!r}", file=sys.stderr)
        return 2
    workloads = [w for w in WORKLOADS if not args.only or args.only == w[0]]
    jobs = [(name, trace, duration, seed, args.temporal_layers, est)
            for name, trace, duration, _ in workloads for est in (*estimators, "idle")
            for seed in (seeds if est != "idle" else seeds[:1])]
    try:
        with ProcessPoolExecutor(max(1, args.jobs)) as pool:
            reports = list(pool.map(_job, jobs))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for job, rep in zip(jobs, reports, strict=True):
        rep["label"] = job[5]
        by.setdefault((job[0], job[5]), []).append(rep)
    lines = [f"seeds {','.join(map(str, seeds))}; median [min-max]",
             "| workload | configuration | util. % | oracle util. % | util. of feasible % | "
             "util. of attainable % | queue p95 ms | spatial switches /min steady | "
             "temporal steps /min steady | drop: sending under s | step-up: layer s | "
             "frozen s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    events: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, _, _, figure in workloads:
        for est in estimators:
            reps = by[(name, est)]
            lines.append(row(name, est, [r["metrics"] for r in reps]))
            first = reps[0]
            slug = f"{figure.removesuffix('.png')}-{est}"
            (args.out / f"{slug}.json").write_text(json.dumps(first, default=float))
            mt = first["metrics"]
            for d in mt["drops"]:
                events.append(f"{name} {est} seed {seeds[0]}: drop {d['from'] / 1e6:g} -> "
                              f"{d['to'] / 1e6:g} at {d['at']:.0f} s: sending under after "
                              f"{_opt(d['sending_under_s'])} s, estimate under after "
                              f"{_opt(d['estimate_under_s'])} s")
            for u in mt["step_ups"]:
                events.append(f"{name} {est} seed {seeds[0]}: up {u['from'] / 1e6:g} -> "
                              f"{u['to'] / 1e6:g} at {u['at']:.0f} s: estimate up after "
                              f"{_opt(u['estimate_up_s'])} s, layer {u['target_rank']} after "
                              f"{_opt(u['layer_up_s'])} s")
        idle = by[(name, "idle")][0]["metrics"]["queuing_delay_ms"]["p95"]
        lines.append(f"| {name} | idle sender (70 kbit/s) | | | | | {idle:.0f} | | | | | |")
        if args.plots is not None:
            plot([by[(name, est)][0] for est in estimators], args.plots / figure, name)
    print("\n".join(lines))
    print("\n".join(events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
