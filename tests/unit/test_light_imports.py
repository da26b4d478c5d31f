"""What runs outside Spark never imports pyspark: Spark modules import it once, at module level.

The Ranking page (on the API server), the hourly repair and the lifecycle commands (in Airflow
tasks), the Redis reader (in the app's services) and the CLI's start-up must stay light; the
Spark-only modules (features, transforms, lake tables, steps) import ``functions as F`` at the
top, so this checks the line between the two.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT = [
    "rankflow.cli",
    "rankflow.store",
    "rankflow.store.writer",
    "rankflow.ui.page_sources",
    "rankflow.publish.repair",
    "rankflow.ops.lifecycle",
    "rankflow.ops.demo",
    "rankflow.steps.runner",
    "rankflow.features.registry",
    "rankflow.evaluation.gate",
    "rankflow.lake.gold",
]


@pytest.mark.parametrize("module", LIGHT)
def test_a_light_module_does_not_import_pyspark(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('pyspark')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"{module} imports pyspark at import time"


def test_a_spark_module_imports_pyspark_functions_at_the_top() -> None:
    code = (
        "import sys, rankflow.transforms.candidates; print('pyspark.sql.functions' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
