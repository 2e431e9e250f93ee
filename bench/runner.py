"""What every real-time bench command does around its measurement: run it on uvloop (the
node's loop), head its results with the command, date and machine, and write them as JSON."""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on uvloop (plain asyncio if uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(coro)
    return uvloop.run(coro)


def write_json(results: Any, out: Path) -> None:
    """`results` as indented JSON in `out` (parent directories created)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")


def header() -> dict[str, Any]:
    """The first keys of every report: the command line, the UTC date and the machine."""
    from bench.forwarding import machine_info

    return {
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
