"""A redis-server of a test's own: its own port and folder, killable, with chosen settings."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from rankflow.store.client import redis_client


def free_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real redis-server started with ``options`` (e.g. ``--maxmemory 8mb``)."""

    def __init__(self, folder: Path, *options: str) -> None:
        self.folder = folder
        self.options = options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> RedisServer:
        """Start (or restart, on its own files) the server and wait until it answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
            "--save", "", *self.options,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with redis_client(self.url, socket_timeout=1) as client:
                    if client.ping():
                        return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server {' '.join(self.options)} did not start")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no last fsync) and start it again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1
        self.start()

    def stop(self) -> None:
        """Stop the server for good."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
