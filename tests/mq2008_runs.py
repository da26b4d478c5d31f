"""The MQ2008 benchmark command and the run of it started in the background (tests/benchmark)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rankflow.evaluation.benchmark import default_data_dir

DATA = Path(os.environ.get("RANKFLOW_MQ2008") or default_data_dir())
# the spark engine's run, started when its test was collected (tests/benchmark/conftest.py)
BACKGROUND: dict[str, subprocess.Popen[str]] = {}


def benchmark_command(*options: str) -> list[str]:
    """`rankflow benchmark mq2008 --json`, the command the README documents."""
    command = [sys.executable, "-m", "rankflow.cli", "benchmark", "mq2008", "--data", str(DATA)]
    return [*command, "--json", *options]
