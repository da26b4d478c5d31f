"""The MQ2008 benchmark command and the run of it started in the background (tests/benchmark)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rankflow.evaluation.benchmark import default_data_dir

DATA = Path(os.environ.get("RANKFLOW_MQ2008") or default_data_dir())


@dataclass
class BenchmarkRun:
    """A run of the benchmark command whose output goes to files, never to a full pipe.

    A run nobody reads for minutes would block on a pipe's 64 kB (Spark's log alone is more).
    """

    options: tuple[str, ...]
    stdout: IO[bytes] = field(default_factory=tempfile.TemporaryFile)
    stderr: IO[bytes] = field(default_factory=tempfile.TemporaryFile)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> BenchmarkRun:
        """Start the command."""
        command = benchmark_command(*self.options)
        self.process = subprocess.Popen(command, stdout=self.stdout, stderr=self.stderr)
        return self

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the run; its JSON result, or its stderr's end when it failed."""
        assert self.process is not None
        status = self.process.wait(timeout=timeout)
        self.stdout.seek(0)
        self.stderr.seek(0)
        assert status == 0, self.stderr.read().decode(errors="replace")[-4000:]
        parsed: dict[str, Any] = json.loads(self.stdout.read())
        return parsed

    def stop(self) -> None:
        """Kill the run if it is still going."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# the spark engine's run, started when its test was collected (tests/benchmark/conftest.py)
BACKGROUND: dict[str, BenchmarkRun] = {}


def benchmark_command(*options: str) -> list[str]:
    """`rankflow benchmark mq2008 --json`, the command the README documents."""
    command = [sys.executable, "-m", "rankflow.cli", "benchmark", "mq2008", "--data", str(DATA)]
    return [*command, "--json", *options]
