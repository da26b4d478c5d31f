"""Run a DAG once in the test process, as ``airflow dags test`` does.

Airflow 3.3.2's ``dag.test()`` crashes when a successful run of a DAG with ``deadline=`` finishes
(``DagRun.update_state`` looks the in-memory DAG's deadline definitions up as ``deadline_alert``
row ids that only the DAG processor's copy holds). Deadlines are evaluated by the scheduler loop
only, never under ``dag.test()``, so a test run detaches them; ``rankflow demo`` parses the DAG
with ``RANKFLOW_PUBLICATION_DEADLINE=off`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def deadline_suspended(dag: Any) -> Iterator[Any]:
    """Detach a DAG's deadline for one ``dag.test()`` run (see the module docstring for why)."""
    saved = dag.deadline
    dag.deadline = None
    try:
        yield dag
    finally:
        dag.deadline = saved


def nightly_run(dag: Any, day: date, hour: int) -> Any:
    """One retraining night of ``day`` on the home surface through ``dag.test()``; must succeed."""
    with deadline_suspended(dag):  # Airflow 3.3.2: see the module docstring
        run = dag.test(
            logical_date=datetime(day.year, day.month, day.day, hour, tzinfo=UTC),
            run_conf={"ds": day.isoformat(), "surface": "home", "top_k": 50, "retrain": True},
        )
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    return run


def tiny_history(
    settings: Any, launch: Callable[[str, list[str]], tuple[list[str], dict[str, str]]]
) -> date:
    """Generate the tiny marketplace and backfill the history its first night needs; its last day.

    ``launch(job, args)`` returns the command and extra environment of a job (spark-submit, or a
    Connect client), so the history goes through the same jobs the DAG runs.
    """
    import os
    import subprocess

    from rankflow.ops.demo import history_window
    from rankflow.sim.marketplace import GeneratorConfig, generate_marketplace

    config = GeneratorConfig.preset("tiny")
    generate_marketplace(config, settings.paths.raw)
    last: date = config.start + timedelta(days=config.days - 1)
    first, end = history_window(last, settings)
    for job, start in (("ingest", config.start), ("training_set", first)):
        command, extra = launch(job, ["--start", str(start), "--ds", str(end)])
        done = subprocess.run(
            command, cwd=ROOT, env={**os.environ, **extra}, capture_output=True, text=True
        )
        # spark-submit merges the Python driver's stderr into stdout
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return last
