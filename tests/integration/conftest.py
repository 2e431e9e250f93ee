"""Real backing services for the store tests: a redis-server subprocess per test.

Redis runs exactly as production must for durable orders (AOF, fsync on every write) and
with RDB snapshots off, so a restart on the same ``--dir`` recovers only from the AOF.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from bench.ports import free_port

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0


class RedisServer:
    """One redis-server process on a fixed port and data dir; restartable after a kill."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        if not os.access(REDIS_SERVER, os.X_OK):
            pytest.fail(
                f"{REDIS_SERVER} is missing: the store tests need a real Redis. "
                "Run `make system-deps` (or `apt-get install redis-server`)."
            )
        self.data_dir = data_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.data_dir),
                "--daemonize",
                "no",
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"redis-server exited with {self.proc.returncode}:\n{log}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass  # still replaying the AOF
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"redis-server did not answer PING within {START_TIMEOUT_S}s")
                # Wait on the process itself between pings: returns at once if it exits.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """kill -9: no shutdown hook, no final fsync; only what was already on disk stays."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
