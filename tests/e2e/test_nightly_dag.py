"""One whole nightly DAG run (`dag.test()`) at tiny scale on the real services.

Spark steps run through spark-submit, Redis and S3 are the local servers of `make up`; the run
ends with a lookup through the documented reader client.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from airflow_processes import redis_connection
from dag_runs import nightly_run, tiny_history
from rankflow.config import load_settings
from rankflow.monitoring.history import history_rows

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.services]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_env(tmp_path, redis_url, redis_admin_url, s3_endpoint, monkeypatch):
    env = {
        "RANKFLOW_HOME": str(tmp_path / "home"),
        "RANKFLOW_REDIS_URL": redis_url,
        "RANKFLOW_S3_ENDPOINT": s3_endpoint,
        "RANKFLOW_S3_BUCKET": "e2e-" + tmp_path.name.lower().replace("_", "-")[-40:],
        "RANKFLOW_SHUFFLE_PARTITIONS": "4",
        "RANKFLOW_SPARK_MASTER": "local[2]",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # left by in-process MLflow tests
    # the DAG's Spark steps attach to the Connect server of `make up` (spark-submit itself is
    # exercised by the backfill below and by tests/dags/test_blocked_steps.py)
    connect = urlparse(os.environ.get("RANKFLOW_SPARK_CONNECT") or "sc://127.0.0.1:15002")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_RANKFLOW",
        json.dumps(
            {"conn_type": "spark_connect", "host": f"sc://{connect.hostname}", "port": connect.port}
        ),
    )
    # the steps take their credentials from Airflow connections, as in production; the S3 secret
    # is a canary the run must never write to a log, a run record, MLflow or a rendered template
    canary = f"rankflow-canary-{secrets.token_hex(12)}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    monkeypatch.setenv("AIRFLOW_CONN_S3_RANKFLOW", s3_connection(s3_endpoint, env, canary))
    monkeypatch.setenv("AIRFLOW_CONN_REDIS_RANKFLOW", redis_connection(redis_url))
    import redis

    redis.Redis.from_url(redis_admin_url).flushdb()
    return load_settings()


def s3_connection(endpoint: str, env: dict[str, str], secret: str) -> str:
    """An Airflow AWS connection to the local S3 endpoint, as JSON."""
    extra = {"endpoint_url": endpoint, "bucket": env["RANKFLOW_S3_BUCKET"]}
    extra["region_name"] = "us-east-1"
    login = os.environ.get("AWS_ACCESS_KEY_ID", "rankflow-local")
    return json.dumps({"conn_type": "aws", "login": login, "password": secret, "extra": extra})


def secrets_of_the_run(redis_url: str) -> list[str]:
    """The secret values a run handles: the S3 canary and the Redis writer's password."""
    found = [os.environ["AWS_SECRET_ACCESS_KEY"]]
    password = unquote(urlparse(redis_url).password or "")
    return found + ([password] if len(password) >= 12 else [])


def assert_no_secret_written(secrets_: list[str], folders: list[Path], output: str) -> None:
    """No secret value appears in the run's output nor in any file under ``folders``."""
    for secret in secrets_:
        assert secret not in output, "a secret reached the task output"
        needle = secret.encode()
        for folder in folders:
            for path in folder.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    assert needle not in path.read_bytes(), f"a secret was written to {path}"


def test_nightly_dag_publishes_lists_readers_can_look_up(
    tiny_env, spark, capfd, monkeypatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from rankflow.lake.session import spark_submit_command
    from rankflow.store.reader import RankingReader

    settings = tiny_env
    # the history a first nightly run needs, backfilled through the same jobs the DAG runs
    last = tiny_history(settings, lambda job, args: (spark_submit_command(settings, job, args), {}))

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["rankflow_nightly"]
    run = nightly_run(dag, last, hour=2)

    runs = settings.paths.home / "runs" / f"ds={last.isoformat()}"
    published = json.loads((runs / "publish-redis-home.json").read_text())
    exported = json.loads((runs / "publish-s3-home.json").read_text())
    candidates = json.loads((runs / "candidates.json").read_text())
    assert published["status"] == "switched"
    assert published["users"] == exported["users"] == candidates["users"]
    assert published["users"] > 100

    reader = RankingReader.from_url(settings.redis.url, prefix=settings.redis.key_prefix)
    found = reader.lookup(int(published["sample_user"]), "home")
    assert found.version == published["version"]
    assert not found.fallback
    assert 0 < len(found.items) <= 50
    assert len(set(found.items)) == len(found.items)
    unknown = reader.lookup(4_000_000_000, "home")
    assert unknown.fallback
    assert len(unknown.items) == 50

    import boto3

    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url, region_name=settings.s3.region)
    pointer = json.loads(
        s3.get_object(Bucket=settings.s3.bucket, Key="rankings/home/_latest.json")["Body"].read()
    )
    manifest = json.loads(
        s3.get_object(Bucket=settings.s3.bucket, Key=pointer["manifest"])["Body"].read()
    )
    assert manifest["users"] == published["users"]
    assert manifest["version"] == published["version"]
    assert os.environ["RANKFLOW_HOME"] in str(settings.paths.home)

    first_night = nightly_monitoring(settings, last, run.run_id, published)
    served_and_replayed(settings, spark, last, runs, tmp_path_of(settings))
    lifecycle(settings, spark, dag, last, runs, published)
    second_night = [r for r in history_rows(settings, "home") if r["ds"] == last.isoformat()]
    assert len(second_night) == len(first_night)  # the rerun replaced the day's rows
    assert {r["run_id"] for r in second_night} != {first_night[0]["run_id"]}
    sold_item_repair(settings)
    backfill_keeps_the_champion(settings, dag, last)
    rejection_through_the_operator(settings, last, monkeypatch)
    captured = capfd.readouterr()
    airflow_home = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".rankflow" / "airflow"))
    assert_no_secret_written(
        secrets_of_the_run(settings.redis.url),
        [settings.paths.home, airflow_home],
        captured.out + captured.err,
    )


def nightly_monitoring(settings, day, run_id: str, published: dict) -> list[dict]:
    """The night's figures are in the monitoring history, and `rankflow health` shows them."""
    from rankflow.features.registry import MODEL_FEATURES

    rows = [r for r in history_rows(settings, "home") if r["ds"] == day.isoformat()]
    assert {r["run_id"] for r in rows} == {run_id}
    figures = {(r["metric"], r["subject"]): r for r in rows}
    assert figures[("published_users", "")]["value"] == published["users"]
    assert figures[("list_coverage", "")]["value"] >= 0.99
    assert figures[("served_sold_share", "")]["value"] == 0.0  # the residual after the repair
    from rankflow.publish.repair import last_repair

    repair = last_repair(settings, "home")
    assert repair["version"] == published["version"]
    removed = figures[("sold_entries_removed", "")]["value"]
    assert removed == repair["entries_removed"]
    found = removed + figures[("served_entries", "")]["value"]
    assert figures[("served_sold_share_before_repair", "")]["value"] == removed / found
    assert figures[("redis_publish_seconds", "")]["value"] > 0
    assert {s for m, s in figures if m == "feature_psi"} == set(MODEL_FEATURES)
    assert figures[("ndcg@10", "champion")]["value"] > figures[("ndcg@10", "random")]["value"]
    assert figures[("list_coverage", "")]["threshold_source"] == "default"
    health = cli("health", "--json")
    assert health["ds"] == day.isoformat()
    assert len(health["figures"]) == len(rows)
    monitored = json.loads(
        (settings.paths.home / "runs" / f"ds={day.isoformat()}" / "monitor-home.json").read_text()
    )

    def breached(rows: list[dict]) -> set:
        return {(b["metric"], b["subject"], round(b["value"], 9)) for b in rows}

    assert breached(health["breaches"]) == breached(monitored["breaches"])
    assert health["breaches"] == [b for b in health["breaches"] if b["group"] == "feature"], (
        "a clean generated day breached a list, publishing or offline threshold"
    )
    return rows


def tmp_path_of(settings) -> Path:
    """A folder of this run for files the test writes."""
    folder = settings.paths.home / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def served_and_replayed(settings, spark, day, runs: Path, folder: Path) -> None:
    """The ranking service answers from what the night materialised; its log replays exactly.

    The night's own drain and skew check found nothing served on the simulated day; the
    answers sent here are logged today, drained and replayed offline: zero skew.
    """
    from rankflow.lake.tables import read_partition
    from rankflow.steps.check_skew import run_check_skew
    from rankflow.steps.drain_served import run_drain_served
    from serving_helpers import call, metric, running_service, wait_for

    night = json.loads((runs / "skew-check.json").read_text())
    assert (night["answers"], night["unreplayable"]) == (0, 0)
    materialised = json.loads((runs / "materialise-features.json").read_text())
    assert materialised["status"] == "switched"
    per_user = (
        read_partition(spark, settings, "silver/candidates", day)
        .groupBy("user_id")
        .agg({"item_id": "collect_list"})
        .orderBy("user_id")
        .limit(5)
        .collect()
    )
    config = folder / "serve.yaml"
    config.write_text("serving:\n  log_vectors_percent: 100\n")
    with running_service(settings, config) as base:
        for user, items in per_user:
            status, body = call(
                f"{base}/v1/rank", {"user_id": int(user), "surface": "home", "candidates": items}
            )
            assert status == 200, body
            assert body["fallback"] is False, body
            assert body["feature_version"] == materialised["version"]
        logged = 'outcome="logged"'
        wait_for(lambda: metric(base, "rankflow_serving_log_records_total", logged) >= 5, 10)
    today = datetime.now(UTC).date()
    drained = run_drain_served(spark, settings, today)
    assert (drained["rows"], drained["quarantined"]) == (5, 0)
    skew = run_check_skew(spark, settings, today)
    assert (skew["sampled"], skew["replayed"]) == (5, 5)
    assert skew["mismatched_features"] == []
    assert (skew["score_parity"], skew["topk_parity"]) == (1.0, 1.0)


def sold_item_repair(settings) -> None:
    """A morning of sales, then one repair: no served item sold more than an hour earlier."""
    from datetime import timedelta

    from rankflow.sim.sales import land_simulated_sales

    start, sold = land_simulated_sales(settings, "home", hours=3, per_hour=40, seed=1)
    at = (start + timedelta(hours=3)).isoformat()
    before = cli("health", "--json", "--at", at)
    repaired = cli("repair-sold", "--at", at)
    after = cli("health", "--json", "--at", at)
    assert sold == 120
    assert before["served_sold_share"] > 0
    assert repaired["entries_removed"] > 0
    assert after["served_sold_share"] == 0.0
    assert after["sold_entries_removed"] == repaired["entries_removed"]
    assert after["served_entries"] == before["served_entries"] - repaired["entries_removed"]


def cli(*args: str) -> dict:
    """Run a ``rankflow`` command as a user would; return its JSON output."""
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "rankflow.cli", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def lifecycle(settings, spark, dag, last, runs: Path, first_publication: dict) -> None:
    """Reproduce the model, run the night again against a champion, then roll back."""
    trained = json.loads((runs / "train.json").read_text())
    first_model = trained["model_version"]
    reproduction(settings, spark, trained, last)

    # the second night: a challenger against the champion, the whole gate, a new publication
    nightly_run(dag, last, hour=4)
    evaluation = json.loads((runs / "evaluation.json").read_text())
    gate = evaluation["gate"]
    second_model = evaluation["model_version"]
    assert evaluation["previous_champion"] == first_model != second_model
    assert gate["promote"], gate["reason"]
    assert gate["difference"]["low"] <= gate["difference"]["estimate"] <= gate["difference"]["high"]
    assert {"challenger", "champion"} <= set(gate["lists"])
    assert 0.0 <= gate["overlap"]["jaccard@10"] <= 1.0
    assert {s["name"] for s in gate["segments"]} >= {"new users", "returning users"}
    second = json.loads((runs / "publish-redis-home.json").read_text())
    assert second["status"] == "switched"
    assert second["version"] != first_publication["version"]

    served = cli("models", "which")
    assert (served["redis_version"], served["model_version"]) == (second["version"], second_model)
    listed = {row["version"]: row["aliases"] for row in cli("models", "list", "--json")}
    assert listed[second_model] == ["champion"]
    assert listed[first_model] == ["previous_champion"]

    rolled = cli("models", "rollback", "--reason", "e2e: lists looked wrong")
    assert (rolled["redis_after"], rolled["model_after"]) == (
        first_publication["version"],
        first_model,
    )
    user = str(first_publication["sample_user"])
    served = cli("models", "which", "--user", user)
    assert (served["redis_version"], served["model_version"]) == (
        first_publication["version"],
        first_model,
    )
    assert served["user"]["list"] == "personal"
    assert served["user"]["model_version"] == first_model
    listed = {row["version"]: row["aliases"] for row in cli("models", "list", "--json")}
    assert listed[first_model] == ["champion"]


def reproduction(settings, spark, trained: dict, last) -> None:
    """After a training day changed, --reproduce rebuilds the same bytes; a retrain does not."""
    from delta.tables import DeltaTable

    first_model = trained["model_version"]
    day = trained["window"]["train_start"]
    table = DeltaTable.forPath(spark, settings.paths.table("silver/training_set"))
    table.delete(f"ds = '{day}' AND user_id % 2 = 0")  # a new Delta version, other rows
    rebuilt = cli("train", "--reproduce", first_model)
    assert rebuilt["identical"], rebuilt
    assert rebuilt["sha256"] == trained["model_sha256"]
    assert rebuilt["training_set_version"] == trained["table_versions"]["silver/training_set"]
    assert rebuilt["train_rows"] == trained["train_rows"]

    retrained = cli("train", "--ds", last.isoformat())  # the latest rows: fewer, other bytes
    assert retrained["train_rows"] < trained["train_rows"]
    assert retrained["model_sha256"] != trained["model_sha256"]

    # an artefact that is not what its lineage builds: --reproduce says so and exits 1
    tampered = registered_artefact(settings, retrained["model_sha256"])
    tampered.write_bytes(b" " + tampered.read_bytes())  # same model, other bytes
    code, audit = cli_status("train", "--reproduce", retrained["model_version"])
    assert code == 1, audit
    assert not audit["identical"]
    assert audit["sha256"] == retrained["model_sha256"] != audit["registered_sha256"]
    # back to the rows the first model saw (a new Delta version again): the second night's
    # challenger is then judged on the same data as the champion, as before the edit
    table.restoreToVersion(int(trained["table_versions"]["silver/training_set"]))


def registered_artefact(settings, sha256: str) -> Path:
    """The one XGBoost JSON file in the MLflow store with these bytes."""
    import hashlib

    found = [
        path
        for path in settings.paths.mlflow.rglob("model.json")
        if hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    ]
    assert len(found) == 1, found
    return found[0]


def backfill_keeps_the_champion(settings, dag, last) -> None:
    """A retraining backfill of an earlier day is evaluated and recorded, never promoted."""
    from rankflow.model.registry import CHAMPION, aliases, mlflow_client

    client = mlflow_client(settings)
    champion = aliases(client, settings.model_name)[CHAMPION]
    current = cli("models", "which")["redis_version"]
    day = last - timedelta(days=1)
    nightly_run(dag, day, hour=2)
    runs = settings.paths.home / "runs" / f"ds={day.isoformat()}"
    evaluation = json.loads((runs / "evaluation.json").read_text())
    assert evaluation["backfill"]
    assert evaluation["model_version"] != champion
    assert not evaluation["gate"]["promote"]
    assert aliases(mlflow_client(settings), settings.model_name)[CHAMPION] == champion
    published = json.loads((runs / "publish-redis-home.json").read_text())
    assert published["status"] == "skipped_older"
    assert cli("models", "which")["redis_version"] == current


def rejection_through_the_operator(settings, last, monkeypatch) -> None:
    """The real evaluate job rejects a model (exit 4): the operator skips, nothing moves."""
    from airflow.sdk.exceptions import AirflowSkipException

    from rankflow.model.registry import CHAMPION, aliases, mlflow_client
    from rankflow_operators import RankflowSparkSubmitOperator

    champion = aliases(mlflow_client(settings), settings.model_name)[CHAMPION]
    strict = settings.paths.home / "strict-gate.yaml"
    # a gate no model passes: the challenger must beat the champion by a whole NDCG point
    strict.write_text("evaluation:\n  min_difference_lower_bound: 1.0\n")
    monkeypatch.setenv("RANKFLOW_CONFIG", str(strict))
    # the challenger is the night's model (train.json of the day), rolled back from champion
    evaluate = RankflowSparkSubmitOperator(
        task_id="evaluate",
        step="evaluate",
        application_args=["--ds", str(last), "--run-id", "e2e-rejection", "--promote", "yes"],
    )
    with pytest.raises(AirflowSkipException, match="rejected"):
        evaluate.execute(context={})
    monkeypatch.delenv("RANKFLOW_CONFIG")
    evaluation = json.loads(
        (settings.paths.home / "runs" / f"ds={last.isoformat()}" / "evaluation.json").read_text()
    )
    assert not evaluation["gate"]["promote"]
    assert evaluation["previous_champion"] == champion != evaluation["model_version"]
    failed = [c["detail"] for c in evaluation["gate"]["checks"] if not c["passed"]]
    assert any("lower bound must exceed +1.0000" in detail for detail in failed), failed
    assert aliases(mlflow_client(settings), settings.model_name)[CHAMPION] == champion


def cli_status(*args: str) -> tuple[int, dict]:
    """Run a ``rankflow`` command; return its exit status and JSON output."""
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "rankflow.cli", *args], cwd=ROOT, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    assert lines, (args, done.returncode, done.stderr[-4000:])
    return done.returncode, json.loads(lines[-1])
