"""The cascade's protocol and policy modules do no I/O: the QUIC shells (quic, origin, edge)
own the sockets, the loop and the clock."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CORES = ("sfu/wire/cascade.py", "sfu/cascade/auth.py", "sfu/cascade/feed.py",
         "sfu/cascade/backoff.py", "sfu/cascade/remote.py")


def test_cascade_cores_are_sans_io() -> None:
    for rel in CORES:
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            top = {n.split(".")[0] for n in names}
            assert not top & {"asyncio", "socket", "time", "aioquic"}, (rel, names)
