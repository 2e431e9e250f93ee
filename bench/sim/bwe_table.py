"""The bandwidth-estimation table and plots of docs/benchmarks.md, in one command.

    python -m bench.sim.bwe_table [--out bench-results/bwe] [--plots docs/bwe] [--only NAME]

Runs every workload (RFC 8867 5.1 and three Mahimahi LTE downlink traces from
/work/shared/traces, or $BWE_TRACES) with each estimator (gcc, remb-aiortc): one simulcast
viewer, 50 ms one-way delay, 300 ms drop-tail queue, seed 1. Prints the markdown table and
the step events, writes each report to `--out` and the side-by-side figures to `--plots`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench.sim.bwe import DEFAULT_LAYERS, fmt_pct, plot, simulate_bwe
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
ESTIMATORS = ("gcc", "remb-aiortc")


def config(name: str, trace: str, duration: float) -> SimConfig:
    return SimConfig(name=name, duration=duration, seed=1,
                     down=PathSpec(trace=trace, delay_ms=50.0, queue_ms=300.0))


def row(name: str, metrics: dict[str, Any]) -> str:
    q = metrics["queuing_delay_ms"]["p95"]
    est = metrics["estimate_over_capacity_median"]
    steady = metrics["layer_switches_per_min_steady"]
    switches = str(metrics["layer_switches"])
    if steady is not None:
        switches += f" ({steady:.1f})"
    return (f"| {name} | {metrics['estimator']} | {fmt_pct(metrics['utilisation'])} | "
            f"{fmt_pct(metrics['utilisation_of_feasible'])} | "
            f"{fmt_pct(metrics['utilisation_of_attainable'])} | "
            f"{'-' if est is None else f'{est:.2f}'} | {'-' if q is None else f'{q:.0f}'} | "
            f"{switches} | {metrics['freezes']} ({metrics['freeze_total_s']:.0f} s) |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sim.bwe_table", description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("bench-results/bwe"))
    ap.add_argument("--plots", type=Path, default=None, help="write the figures here")
    ap.add_argument("--only", default=None, help="one workload name")
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))
    args = ap.parse_args(argv)
    estimators = [e for e in args.estimators.split(",") if e]
    lines = ["| workload | estimator | util. | util. of feasible | util. of attainable | "
             "est./capacity (median) | queue p95 ms | layer switches (per min, steady) | "
             "freezes (total s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    events: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, trace, duration, figure in WORKLOADS:
        if args.only and args.only != name:
            continue
        reports = []
        for est in estimators:
            try:
                rep = simulate_bwe(config(name, trace, duration), est, DEFAULT_LAYERS)
            except ConfigError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            reports.append(rep)
            mt = rep["metrics"]
            lines.append(row(name, mt))
            slug = f"{figure.removesuffix('.png')}-{est}"
            (args.out / f"{slug}.json").write_text(json.dumps(rep, default=float))
            for d in mt["drops"]:
                events.append(f"{name} {est}: drop {d['from'] / 1e6:g} -> {d['to'] / 1e6:g} "
                              f"at {d['at']:.0f} s: sending under after {d['sending_under_s']}"
                              f" s, estimate under after {d['estimate_under_s']} s")
            for u in mt["step_ups"]:
                events.append(f"{name} {est}: up {u['from'] / 1e6:g} -> {u['to'] / 1e6:g} "
                              f"at {u['at']:.0f} s: estimate up after {u['estimate_up_s']} s,"
                              f" layer {u['target_rank']} after {u['layer_up_s']} s")
        if args.plots is not None:
            plot(reports, args.plots / figure, name)
    print("\n".join(lines))
    print("\n".join(events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
