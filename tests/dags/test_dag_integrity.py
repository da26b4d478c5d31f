"""DAG integrity: imports cleanly, nothing runs at parse time, structure as documented."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
HEAVY = {"pyspark", "xgboost", "mlflow", "boto3", "redis", "great_expectations", "sklearn"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def nightly(dagbag):
    return dagbag.dags["rankflow_nightly"]


def test_dags_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert "rankflow_nightly" in dagbag.dag_ids


def test_schedule_is_nightly_around_two_utc_without_catchup(nightly) -> None:
    assert nightly.timetable.summary == "0 2 * * *"
    assert nightly.catchup is False
    assert nightly.max_active_runs == 1


def test_steps_run_in_the_documented_order(nightly) -> None:
    order = [
        "check_params",
        "ingest",
        "features",
        "candidates",
        "training_set",
        "choose_model",
    ]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in nightly.get_task(upstream).downstream_task_ids
    # the online features of the day follow the features step and hold nothing else up
    assert nightly.get_task("features").downstream_task_ids == {
        "candidates",
        "materialise_features",
    }
    assert nightly.get_task("materialise_features").downstream_task_ids == set()
    # the day's served answers are drained and replayed before monitor judges the night
    assert nightly.get_task("check_params").downstream_task_ids >= {"drain_served"}
    assert nightly.get_task("drain_served").downstream_task_ids == {"check_skew"}
    assert nightly.get_task("check_skew").downstream_task_ids == {"monitor"}
    assert nightly.get_task("choose_model").downstream_task_ids == {"train", "reuse_champion"}
    assert nightly.get_task("train").downstream_task_ids == {"evaluate"}
    assert nightly.get_task("evaluate").downstream_task_ids == {"needs_approval", "alert_gate"}
    assert nightly.get_task("alert_gate").trigger_rule == "all_done"
    assert nightly.get_task("needs_approval").downstream_task_ids == {
        "approve_promotion",
        "promoted_by_gate",
    }
    assert nightly.get_task("promoted_by_gate").downstream_task_ids == {"score"}
    assert nightly.get_task("approve_promotion").downstream_task_ids == {"promote"}
    assert nightly.get_task("promote").downstream_task_ids == {"score"}
    assert nightly.get_task("score").downstream_task_ids == {"publish_s3"}
    for upstream, downstream in itertools.pairwise(
        ["publish_s3", "publish_redis", "repair_sold", "monitor", "alert_breaches"]
    ):
        assert nightly.get_task(upstream).downstream_task_ids == {downstream}


def test_promotion_waits_for_a_person_only_when_asked(nightly) -> None:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    approve = nightly.get_task("approve_promotion")
    assert isinstance(approve, ApprovalOperator)
    assert approve.defaults == ["Reject"]  # no answer keeps the champion
    assert approve.response_timeout == timedelta(hours=12)
    assert nightly.params.get_param("require_approval").value is False
    # without approval evaluate promotes itself; a rejection skips promote and score still
    # runs (with the old champion)
    evaluate_args = nightly.get_task("evaluate").application_args
    assert evaluate_args[evaluate_args.index("--promote") + 1] == (
        "{{ 'no' if params.require_approval else 'yes' }}"
    )
    assert nightly.get_task("score").trigger_rule == "none_failed"
    assert nightly.get_task("score").upstream_task_ids == {
        "check_params",  # the day, as an XCom argument
        "promote",
        "promoted_by_gate",
        "reuse_champion",
    }
    assert nightly.get_task("publish_s3").downstream_task_ids == {"publish_redis"}


def test_retries_everywhere_but_where_a_retry_cannot_help(nightly) -> None:
    no_retry = {"check_params", "evaluate", "approve_promotion", "alert_breaches", "alert_gate"}
    for task in nightly.tasks:
        if task.task_id in no_retry:
            assert task.retries == 0, task.task_id
        elif task.task_id not in {
            "choose_model",
            "reuse_champion",
            "needs_approval",
            "promoted_by_gate",
        }:
            assert task.retries >= 2, task.task_id
            assert task.retry_delay >= timedelta(minutes=1)


def test_trigger_form_params_are_validated(nightly) -> None:
    params = nightly.params
    assert set(params.keys()) == {"ds", "surface", "top_k", "retrain", "require_approval"}
    assert params.get_param("top_k").schema["maximum"] == 500
    assert params.get_param("surface").schema["enum"] == ["home", "search", "similar"]


def test_spark_steps_use_the_rankflow_spark_connection(nightly) -> None:
    spark_steps = [t for t in nightly.tasks if t.task_type == "RankflowSparkSubmitOperator"]
    assert len(spark_steps) == 14
    for task in spark_steps:
        assert task._conn_id == "spark_rankflow"
        assert Path(task.application).exists(), task.application


def test_each_spark_task_runs_the_step_module_of_its_name(nightly) -> None:
    """Task X = jobs/X.py = rankflow.steps.X: the job file runs that module's ``run``."""
    import importlib

    for task in nightly.tasks:
        if task.task_type != "RankflowSparkSubmitOperator":
            continue
        job = Path(task.application)
        assert job.stem == task.task_id
        assert f"from rankflow.steps import {task.task_id}\n" in job.read_text()
        assert f"main({task.task_id}.run)" in job.read_text()
        step = importlib.import_module(f"rankflow.steps.{task.task_id}")
        assert callable(step.run)


def test_parsing_does_no_heavy_imports_and_no_connection_lookups() -> None:
    """Parse the DAG file in a fresh interpreter and inspect what it imported or looked up."""
    probe = f"""
import sys
from airflow.sdk import BaseHook
calls = []
BaseHook.get_connection = classmethod(lambda cls, conn_id: calls.append(conn_id))
before = set(sys.modules)
import runpy
runpy.run_path({str(DAGS / "rankflow_nightly.py")!r})
heavy = sorted(m for m in set(sys.modules) - before
               if m.split(".")[0] in {HEAVY!r})
print("HEAVY", heavy)
print("CONNS", calls)
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert "HEAVY []" in out, out
    assert "CONNS []" in out, out


def test_sold_item_repair_runs_hourly_for_every_surface(dagbag) -> None:
    repair = dagbag.dags["rankflow_sold_items"]
    assert repair.timetable.expression == "5 * * * *"
    assert not repair.catchup
    assert set(repair.task_dict) == {"repair"}
    mapped = repair.task_dict["repair"].op_kwargs_expand_input.value
    assert mapped["surface"] == ["home", "search", "similar"]


@pytest.mark.parametrize("dag_file", ["rankflow_sold_items.py", "rankflow_stream_watch.py"])
def test_parsing_the_small_dags_does_no_heavy_imports(dag_file: str) -> None:
    probe = f"""
import sys
before = set(sys.modules)
import runpy
runpy.run_path({str(DAGS / dag_file)!r})
print("HEAVY", sorted(m for m in set(sys.modules) - before if m.split(".")[0] in {HEAVY!r}))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert "HEAVY []" in out, out


def test_the_stream_watch_checks_every_five_minutes_and_alerts_after_one_retry(dagbag) -> None:
    watch = dagbag.dags["rankflow_stream_watch"]
    assert watch.timetable.expression == "*/5 * * * *"
    assert not watch.catchup
    assert watch.max_active_runs == 1
    assert set(watch.task_dict) == {"check_freshness"}
    check = watch.task_dict["check_freshness"]
    assert check.retries == 1
    assert check.retry_delay == timedelta(minutes=1)  # RANKFLOW_STREAM_WATCH_RETRY_SECONDS unset
    assert check.on_failure_callback  # the alerting notifier
    assert check.execution_timeout == timedelta(minutes=1)


def test_the_stream_watch_retry_delay_is_set_in_whole_seconds() -> None:
    from rankflow.config import stream_watch_retry_delay

    name = "RANKFLOW_STREAM_WATCH_RETRY_SECONDS"
    assert stream_watch_retry_delay({}) == timedelta(minutes=1)
    assert stream_watch_retry_delay({name: " 5 "}) == timedelta(seconds=5)
    for nonsense in ("0", "-5", "1m", "2.5", "²"):
        with pytest.raises(ValueError, match=f"{name}=.*whole number of seconds"):
            stream_watch_retry_delay({name: nonsense})
