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
                    joins=args.joins, out=args.out, skip_floor=args.skip_floor)
        )
    raise SystemExit(f"unknown command {args.command}")  # pragma: no cover
