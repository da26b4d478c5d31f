from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# a step process's logging, as `runner.main` configures it, fed one line per logger and level
PROGRAM = """
import logging
from rankflow.steps.runner import configure_logging
configure_logging()
for name in ("rankflow.steps.ingest", "great_expectations._docs_decorators", "py4j.clientserver"):
    logging.getLogger(name).info("info from %s", name)
    logging.getLogger(name).warning("warning from %s", name)
"""


def test_a_steps_log_keeps_its_own_info_and_drops_the_libraries_chatter() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "include")},
        capture_output=True,
        text=True,
        check=True,
    )
    logged = done.stderr
    assert "info from rankflow.steps.ingest" in logged
    assert "info from great_expectations" not in logged
    assert "info from py4j" not in logged
    for name in ("rankflow.steps.ingest", "great_expectations._docs_decorators", "py4j"):
        assert f"warning from {name}" in logged  # their warnings still reach the task log
