"""``python -m bench.cascade_node``: a node that serves as an edge of one room (for the bench).

The room directory decides in production which node subscribes to which origin; the bench
has no directory, so this runner starts an ordinary Node (credentials from SFU_API_KEY /
SFU_API_SECRET, like ``python -m sfu serve``) and subscribes it to ``--room`` on
``--origin`` at once. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from pathlib import Path

from sfu.config import Settings
from sfu.node import Node


async def _run(args: argparse.Namespace) -> None:
    host, port = args.origin.rsplit(":", 1)
    settings = Settings(
        host="127.0.0.1", http_port=args.http_port, udp_port=args.udp_port,
        cascade_port=args.cascade_port, data_dir=Path(args.data_dir),
        api_key=os.environ["SFU_API_KEY"], api_secret=os.environ["SFU_API_SECRET"],
        log_level="warning",
    )
    node = Node(settings)
    await node.start()
    assert node.cascade is not None
    await node.cascade.subscribe(args.room, (host, int(port)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cascade_node")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--udp-port", type=int, required=True)
    parser.add_argument("--cascade-port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--origin", required=True, help="host:cascade_port of the origin")
    parser.add_argument("--room", required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(_run(args))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(_run(args))


if __name__ == "__main__":
    main()
