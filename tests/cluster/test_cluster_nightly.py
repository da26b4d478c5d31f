"""The tiny nightly DAG on a real Spark standalone cluster, with the lake on S3.

A master and two workers from the pinned pyspark (``rankflow.ops.cluster``, what ``make
cluster-up`` runs), executors in JVMs of their own, the lake at ``s3a://`` on the local S3
endpoint and no lake on the local disk. The history and the DAG's steps attach to the cluster's
Spark Connect server (a warm driver whose executors run on the workers); the night ends with a
lookup. Then the score step runs again as a spark-submit in client mode (what the
``spark_rankflow`` connection runs for every step of a scheduled night), a worker is killed while
it runs and the lists it writes are the same; and a step whose S3 credentials are half set fails
at once, naming the missing variable.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rankflow.config import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.services, pytest.mark.cluster]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_endpoint):
    """The master, two workers and the cluster's Connect server, stopped after the module."""
    from rankflow.ops import cluster as spark_cluster

    home = tmp_path_factory.mktemp("cluster")
    jars = load_settings().paths.jars  # fetched once by `make setup`
    env = {**os.environ, "RANKFLOW_HOME": str(home), "RANKFLOW_JARS": str(jars)}
    env["RANKFLOW_S3_ENDPOINT"] = s3_endpoint
    settings = load_settings(env)
    try:
        print("\n".join(spark_cluster.up(settings)))
        yield settings
    finally:
        print("\n".join(spark_cluster.down(settings)))


@pytest.fixture(scope="module")
def night_env(cluster, tmp_path_factory, redis_url, redis_admin_url, s3_endpoint):
    """Rankflow pointed at the cluster, a lake of its own on S3 and the tests' Redis DB."""
    import redis

    from rankflow.lake.storage import ensure_bucket, s3_client
    from rankflow.ops.cluster import CONNECT_PORT, HOST, ClusterShape, cluster_environment

    bucket = f"cluster-lake-{secrets.token_hex(4)}"
    env = {
        **cluster_environment(ClusterShape()),
        "RANKFLOW_HOME": str(tmp_path_factory.mktemp("night") / "home"),
        "RANKFLOW_JARS": str(cluster.paths.jars),
        "RANKFLOW_LAKE": f"s3a://{bucket}/lake",
        "RANKFLOW_REDIS_URL": redis_url,
        "RANKFLOW_S3_ENDPOINT": s3_endpoint,
        "RANKFLOW_S3_BUCKET": bucket,
        "RANKFLOW_SHUFFLE_PARTITIONS": "4",
        # the DAG's steps attach to the cluster's Connect server; the backfill spark-submits
        "AIRFLOW_CONN_SPARK_RANKFLOW": json.dumps(
            {"conn_type": "spark_connect", "host": f"sc://{HOST}", "port": CONNECT_PORT}
        ),
    }
    patch = pytest.MonkeyPatch()
    for name, value in env.items():
        patch.setenv(name, value)
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("AIRFLOW_CONN_S3_RANKFLOW", "AIRFLOW_CONN_REDIS_RANKFLOW"):
        patch.delenv(name, raising=False)
    settings = load_settings()
    ensure_bucket(s3_client(settings.s3), bucket)
    redis.Redis.from_url(redis_admin_url).flushdb()
    yield settings
    patch.undo()


@pytest.fixture(scope="module")
def night(night_env):
    """The tiny marketplace's history backfilled on the cluster, then one nightly DAG run."""
    from airflow.dag_processing.dagbag import DagBag

    from dag_runs import nightly_run, tiny_history
    from rankflow.lake.session import job_command

    settings = night_env

    def on_cluster_connect(job: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
        command, extra = job_command(settings, job, args)
        assert extra == {"SPARK_REMOTE": "sc://127.0.0.1:15003"}  # the cluster's Connect server
        return command, extra

    last = tiny_history(settings, on_cluster_connect)
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["rankflow_nightly"]
    nightly_run(dag, last, hour=2)
    return settings, last


def test_the_tiny_night_runs_on_the_cluster_and_ends_with_a_lookup(night) -> None:
    from rankflow.store.reader import RankingReader

    settings, last = night
    runs = settings.paths.home / "runs" / f"ds={last.isoformat()}"
    published = json.loads((runs / "publish-redis-home.json").read_text())
    exported = json.loads((runs / "publish-s3-home.json").read_text())
    assert published["status"] == "switched"
    assert published["users"] == exported["users"] > 100

    reader = RankingReader.from_url(settings.redis.lookup_url, prefix=settings.redis.key_prefix)
    found = reader.lookup(int(published["sample_user"]), "home")
    assert found.version == published["version"]
    assert not found.fallback
    assert 0 < len(found.items) <= 50

    # the lake is on S3 only, and the executors that wrote it ran in the workers' JVMs
    assert not (settings.paths.home / "data" / "lake").exists()
    assert lake_objects(settings, "gold/rankings/_delta_log/")
    assert lake_objects(settings, "silver/training_set/_delta_log/")
    status = master_status()
    (connect,) = [app for app in status["activeapps"] if app["name"] == "rankflow-connect"]
    assert connect["cores"] == 2  # one executor on each worker


def test_a_worker_killed_while_scoring_leaves_the_lists_exact(night, cluster) -> None:
    from rankflow.lake.session import spark_submit_command
    from rankflow.ops.cluster import ClusterShape, cluster_services, wait_for_workers
    from rankflow.ops.services import run_dir, start

    settings, last = night
    before = gold_lists(settings, last)
    worker = cluster_services(cluster, ClusterShape())[2]  # spark-worker-2
    folder = run_dir(cluster)
    tasks_before = tasks_started(folder / worker.name)
    args = ["--ds", last.isoformat(), "--surface", "home", "--top-k", "50", "--model", "champion"]
    # a spark-submit in client mode, as the spark_rankflow connection runs every step
    command = spark_submit_command(settings, "score", args)
    assert "spark://127.0.0.1:7077" in command
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while tasks_started(folder / worker.name) < tasks_before + 3:
            assert job.poll() is None, "the score step ended before the worker ran its tasks"
            assert time.monotonic() < deadline, "no task of the score step reached the worker"
            time.sleep(0.05)
        assert job.poll() is None, "the score step ended before the worker was killed"
        os.killpg(int((folder / f"{worker.name}.pid").read_text()), signal.SIGKILL)
        output, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
        (folder / f"{worker.name}.pid").unlink(missing_ok=True)
        start(worker, folder)  # the next tests see two workers again
        wait_for_workers(2)
    assert job.returncode == 0, output[-3000:]
    # spark-submit prints the Python driver's log lines and its result line on stdout
    (result,) = [line for line in output.splitlines() if line.startswith('{"step": "score"')]
    scored = json.loads(result)["result"]
    after = gold_lists(settings, last)
    assert scored["users"] == len(after) == len(before) > 100
    assert after == before  # retried tasks rewrote exactly the same lists
    assert "rankflow-score" in {app["name"] for app in master_status()["completedapps"]}


def test_a_step_without_the_s3_secret_fails_naming_it(night_env) -> None:
    from rankflow.lake.session import spark_submit_command

    env = {k: v for k, v in os.environ.items() if k != "AWS_SECRET_ACCESS_KEY"}
    command = spark_submit_command(night_env, "ingest", ["--ds", "2026-01-01"])
    began = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    output = done.stdout + done.stderr  # spark-submit merges the Python driver's stderr in stdout
    assert "LakeAccessError" in output
    assert f"the lake is on {night_env.paths.lake} but AWS_SECRET_ACCESS_KEY is not set" in output
    assert time.monotonic() - began < 60  # before any Spark work


def test_the_spark_engine_trains_on_the_cluster_reproducibly_for_the_gate(
    night, tmp_path, monkeypatch
) -> None:
    from rankflow.lake.session import job_command, spark_submit_command

    settings, last = night
    config = tmp_path / "spark-engine.yaml"
    config.write_text("training:\n  engine: spark\n  spark_workers: 2\n")
    monkeypatch.setenv("RANKFLOW_CONFIG", str(config))
    args = ["--ds", last.isoformat(), "--run-id", "cluster-spark-engine"]
    # the train step as the spark_rankflow connection runs it: a spark-submit on the master
    done = subprocess.run(
        spark_submit_command(settings, "train", args), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith('{"step": "train"')]
    trained = json.loads(line)["result"]
    assert trained["training_engine"] == {"engine": "spark", "workers": 2}
    assert trained["training_config"]["engine"] == "spark"
    assert "rankflow-train" in {app["name"] for app in master_status()["completedapps"]}

    # the same rows, partitioning and seed give the same bytes (a classic session on the master)
    rebuilt = cli("train", "--reproduce", trained["model_version"])
    assert rebuilt["identical"], rebuilt
    assert rebuilt["sha256"] == trained["model_sha256"]
    assert (rebuilt["train_rows"], rebuilt["validation_rows"]) == (
        trained["train_rows"],
        trained["validation_rows"],
    )

    # the gate judges it like any model: the evaluate step on the night's champion
    command, extra = job_command(settings, "evaluate", [*args, "--promote", "no"])
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **extra}, capture_output=True, text=True
    )
    assert done.returncode in (0, 4), (done.stdout + done.stderr)[-4000:]  # 4: rejected
    runs = settings.paths.home / "runs" / f"ds={last.isoformat()}"
    evaluation = json.loads((runs / "evaluation.json").read_text())
    assert evaluation["model_version"] == trained["model_version"]
    assert evaluation["previous_champion"] not in (None, trained["model_version"])
    assert {"challenger", "champion"} <= set(evaluation["gate"]["lists"])


def test_the_spark_engine_refuses_a_connect_session_naming_the_fix(night, tmp_path) -> None:
    from rankflow.lake.session import job_command

    settings, last = night
    config = tmp_path / "spark-engine.yaml"
    config.write_text("training:\n  engine: spark\n")
    command, extra = job_command(settings, "train", ["--ds", last.isoformat()])
    assert "SPARK_REMOTE" in extra  # through the cluster's Connect server
    env = {**os.environ, **extra, "RANKFLOW_CONFIG": str(config)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "EngineError" in done.stderr
    assert "run the train step with spark-submit" in done.stderr


# --------------------------------------------------------------------------- helpers


def lake_objects(settings, prefix: str) -> list[str]:
    """The keys under a lake folder in its bucket."""
    from rankflow.lake.storage import s3_client

    bucket, _, root = settings.paths.lake.removeprefix("s3a://").partition("/")
    listed = s3_client(settings.s3).list_objects_v2(Bucket=bucket, Prefix=f"{root}/{prefix}")
    return [item["Key"] for item in listed.get("Contents", [])]


def gold_lists(settings, day) -> dict[int, list[int]]:
    """Every user's list in the gold files the day's last score run wrote (its run record)."""
    import pyarrow.parquet as pq

    from rankflow.lake.delta_log import arrow_filesystem
    from rankflow.lake.gold import GoldSnapshot

    record = settings.paths.home / "runs" / f"ds={day.isoformat()}" / "score-home.json"
    snapshot = GoldSnapshot.from_record(json.loads(record.read_text())["gold"])
    lists: dict[int, list[int]] = {}
    for location, rows in snapshot.locations():
        fs, path = arrow_filesystem(location)
        with fs.open_input_file(path) as source:
            table = pq.read_table(source, columns=["user_id", "item_ids"])
        assert table.num_rows == rows
        users, items = table["user_id"].to_pylist(), table["item_ids"].to_pylist()
        lists.update(zip(map(int, users), items, strict=True))
    return lists


def tasks_started(worker_home: Path) -> int:
    """How many tasks the worker's executors have started (their stderr logs say)."""
    pattern = re.compile(r"Running task ")
    total = 0
    for log in (worker_home / "work").glob("app-*/*/stderr"):
        total += len(pattern.findall(log.read_text(errors="replace")))
    return total


def master_status() -> dict:
    """The standalone master's JSON status page (workers, active and completed applications)."""
    import urllib.request

    from rankflow.ops.cluster import HOST, MASTER_UI_PORT

    with urllib.request.urlopen(f"http://{HOST}:{MASTER_UI_PORT}/json/", timeout=10) as page:
        return json.load(page)


def cli(*args: str) -> dict:
    """Run a ``rankflow`` command as a user would; return its JSON output."""
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "rankflow.cli", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode in (0, 1), (args, done.stdout[-2000:], done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])
