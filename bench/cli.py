"""``python -m bench COMMAND``: benchmarks, one argparse subcommand each.

    python -m bench forwarding --subscribers 1,10,100 --duration 12

Later subcommands (``sim``, ``replay``, ``load``) register themselves in ``_build_parser``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or any(v < 1 or v > 1000 for v in values):
        raise argparse.ArgumentTypeError("subscriber counts must be between 1 and 1000")
    return values


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError("must be in (0, 600] seconds")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Media node benchmarks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fwd = sub.add_parser(
        "forwarding",
        help="node CPU per forwarded packet (1 publisher, N subscribers) vs the floor loop",
    )
    fwd.add_argument("--subscribers", type=_counts, default=[1, 10, 100],
                     help="comma-separated subscriber counts (default 1,10,100)")
    fwd.add_argument("--duration", type=_positive, default=12.0,
                     help="measured window per scenario, seconds (default 12)")
    fwd.add_argument("--warmup", type=_positive, default=3.0,
                     help="warm-up before each window, seconds (default 3)")
    fwd.add_argument("--joins", type=int, default=20,
                     help="join-to-first-frame repetitions, 0 to skip (default 20)")
    fwd.add_argument("--out", type=Path, default=Path("bench-results/forwarding.json"),
                     help="JSON results (default bench-results/forwarding.json)")
    fwd.add_argument("--skip-floor", action="store_true", help="do not run the floor loop")
    fwd.add_argument("--twcc", action="store_true",
                     help="subscribers negotiate transport-cc and return feedback (the node "
                          "numbers their egress and runs its estimator and allocator)")
    fwd.add_argument("--twcc-silent", action="store_true",
                     help="with --twcc: subscribers send no feedback (numbering cost alone)")

    fec = sub.add_parser(
        "fec-cost", help="node CPU per packet and viewer for video RED/ULPFEC, and at ingress"
    )
    from bench.fec_cost import add_arguments as fec_arguments

    fec_arguments(fec)
    fan = sub.add_parser(
        "fanout",
        help="commerce datachannels: order.place latency under a race, fan-out msg/s per core",
    )
    fan.add_argument("--viewers", type=int, default=1000, help="fan-out viewers (default 1000)")
    fan.add_argument("--race-viewers", type=int, default=500,
                     help="viewers racing for the stock (default 500)")
    fan.add_argument("--orders", type=int, default=2000, help="orders in the race (default 2000)")
    fan.add_argument("--stock", type=int, default=100, help="stock in the race (default 100)")
    fan.add_argument("--duration", type=_positive, default=10.0,
                     help="fan-out window, seconds (default 10)")
    fan.add_argument("--store", help="store URL for the node (default: SQLite in a temp dir)")
    fan.add_argument("--out", type=Path, default=Path("bench-results/fanout.json"),
                     help="JSON results (default bench-results/fanout.json)")
    _add_sim_commands(sub)
    _add_simulcast_command(sub)
    _add_load_commands(sub)
    rec = sub.add_parser(
        "record", help="node CPU per recorded stream, as a ratio to forwarding it to a viewer"
    )
    rec.add_argument("--duration", type=_positive, default=10.0,
                     help="measured window per mode, seconds (default 10)")
    rec.add_argument("--warmup", type=_positive, default=2.0,
                     help="warm-up before each window, seconds (default 2)")
    rec.add_argument("--repeats", type=int, default=2, help="rounds of the 3 modes (default 2)")
    rec.add_argument("--out", type=Path, default=Path("bench-results/recording.json"),
                     help="JSON results (default bench-results/recording.json)")
    cas = sub.add_parser(
        "cascade", help="latency one origin->edge QUIC hop adds, origin CPU per edge vs per "
        "direct viewer"
    )
    cas.add_argument("--edges", type=int, default=2, help="edge nodes (default 2)")
    cas.add_argument("--viewers", type=int, default=4,
                     help="direct raw viewers on the origin for the CPU comparison (default 4)")
    cas.add_argument("--duration", type=_positive, default=8.0,
                     help="each measured window, seconds (default 8)")
    cas.add_argument("--warmup", type=_positive, default=2.0,
                     help="warm-up before each window, seconds (default 2)")
    cas.add_argument("--out", type=Path, default=Path("bench-results/cascade.json"),
                     help="JSON results (default bench-results/cascade.json)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "forwarding":
        from bench.forwarding import Options
        from bench.forwarding import main as forwarding_main

        if not 0 <= args.joins <= 200:
            raise SystemExit("error: --joins must be between 0 and 200")
        return forwarding_main(
            Options(subscribers=args.subscribers, duration=args.duration, warmup=args.warmup,
                    joins=args.joins, out=args.out, skip_floor=args.skip_floor,
                    twcc=args.twcc, twcc_feedback=not args.twcc_silent)
        )
    if args.command == "fec-cost":
        from bench.fec_cost import main as fec_cost_main

        return fec_cost_main(args)
    if args.command == "fanout":
        from bench.fanout import Options as FanoutOptions
        from bench.fanout import main as fanout_main

        for name in ("viewers", "race_viewers", "orders", "stock"):
            if not 1 <= getattr(args, name) <= 100_000:
                raise SystemExit(f"error: --{name.replace('_', '-')} must be in 1..100000")
        return fanout_main(
            FanoutOptions(viewers=args.viewers, race_viewers=args.race_viewers,
                          orders=args.orders, stock=args.stock, duration=args.duration,
                          store=args.store, out=args.out)
        )
    if args.command in ("sim", "run-scenarios"):
        return _run_sim_commands(args)
    if args.command == "simulcast":
        return _run_simulcast(args)
    if args.command in ("load", "compare", "replay", "cluster-load"):
        return _run_load_commands(args)
    if args.command == "record":
        from bench.recording import main as record_main

        return record_main(warmup=args.warmup, duration=args.duration,
                           repeats=max(1, min(args.repeats, 10)), out=args.out)
    if args.command == "cascade":
        from bench.cascade import Options as CascadeOptions
        from bench.cascade import main as cascade_main

        if not (1 <= args.edges <= 8 and 1 <= args.viewers <= 50):
            raise SystemExit("error: --edges must be in 1..8 and --viewers in 1..50")
        return cascade_main(CascadeOptions(edges=args.edges, viewers=args.viewers,
                                           duration=args.duration, warmup=args.warmup,
                                           out=args.out))
    raise SystemExit(f"unknown command {args.command}")  # pragma: no cover


def _add_sim_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`sim` and `run-scenarios`: the simulated-time bench (bench/sim)."""
    from bench.sim.cli import add_commands

    add_commands(sub)


def _run_sim_commands(args: argparse.Namespace) -> int:
    from bench.sim.cli import run

    return run(args)


def _add_simulcast_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`simulcast`: layer switch time and the CPU simulcast adds per forwarded packet."""
    sim = sub.add_parser(
        "simulcast",
        help="simulcast: layer switch time (POST to first decoded frame), CPU vs plain",
    )
    sim.add_argument("--subscribers", type=_counts, default=[100],
                     help="comma-separated subscriber counts for the CPU runs (default 100)")
    sim.add_argument("--switches", type=int, default=20,
                     help="layer switches to time, 0 to skip (default 20)")
    sim.add_argument("--rounds", type=int, default=3,
                     help="plain/simulcast rounds per subscriber count (default 3)")
    sim.add_argument("--duration", type=_positive, default=10.0,
                     help="measured CPU window per run, seconds (default 10)")
    sim.add_argument("--warmup", type=_positive, default=3.0,
                     help="warm-up before each window, seconds (default 3)")
    sim.add_argument("--no-spread", action="store_true",
                     help="skip the run with subscribers spread over the three layers")
    sim.add_argument("--out", type=Path, default=Path("bench-results/simulcast.json"),
                     help="JSON results (default bench-results/simulcast.json)")


def _run_simulcast(args: argparse.Namespace) -> int:
    from bench.simulcast import Options as SimulcastOptions
    from bench.simulcast import main as simulcast_main

    if not 0 <= args.switches <= 200:
        raise SystemExit("error: --switches must be between 0 and 200")
    if not 0 <= args.rounds <= 10:
        raise SystemExit("error: --rounds must be between 0 and 10")
    return simulcast_main(
        SimulcastOptions(subscribers=args.subscribers, switches=args.switches,
                         rounds=args.rounds, duration=args.duration, warmup=args.warmup,
                         spread=not args.no_spread, out=args.out)
    )


def _add_load_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`load`, `compare` and `replay`: real-time runs against a running or spawned node."""
    from bench.load import add_commands

    add_commands(sub)


def _run_load_commands(args: argparse.Namespace) -> int:
    from bench.load import run_command

    return run_command(args)
