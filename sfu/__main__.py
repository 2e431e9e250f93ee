"""``python -m sfu``: delegates to the command line in sfu.cli."""

from sfu.cli import main

raise SystemExit(main())
