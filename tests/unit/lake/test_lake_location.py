"""The lake's location: a local path or an s3a:// URI, and the Spark settings an S3 lake needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankflow.config import lake_location, load_settings
from rankflow.lake.session import s3a_conf, spark_submit_conf
from rankflow.lake.storage import LakeAccessError, check_lake_access
from rankflow.ops.cluster import ClusterShape, cluster_environment, cluster_file_text


def settings_with(tmp_path: Path, **env: str):
    """Settings from a clean environment plus ``env``."""
    return load_settings({"RANKFLOW_HOME": str(tmp_path / "home"), **env})


def test_a_local_lake_is_an_absolute_path_and_tables_join_under_it(tmp_path) -> None:
    settings = settings_with(tmp_path)
    assert settings.paths.lake == str((tmp_path / "home" / "data" / "lake").resolve())
    assert settings.paths.table("gold/rankings") == f"{settings.paths.lake}/gold/rankings"
    assert not settings.paths.lake_on_s3
    assert lake_location("file:///srv/lake/") == "/srv/lake"
    assert s3a_conf(settings) == {}


def test_an_s3a_lake_keeps_its_uri_and_other_schemes_are_refused(tmp_path) -> None:
    settings = settings_with(tmp_path, RANKFLOW_LAKE="s3a://team-lake/rankflow/")
    assert settings.paths.lake == "s3a://team-lake/rankflow"
    assert settings.paths.table("bronze/events") == "s3a://team-lake/rankflow/bronze/events"
    assert settings.paths.lake_on_s3
    with pytest.raises(ValueError, match="s3a"):
        lake_location("s3://team-lake/rankflow")
    with pytest.raises(ValueError, match="names no bucket"):
        lake_location("s3a:///rankflow")
    with pytest.raises(ValueError, match="use a local path"):
        lake_location("hdfs://namenode/lake")


def test_an_s3a_lake_sets_the_endpoint_class_path_and_executor_endpoint(tmp_path) -> None:
    settings = settings_with(
        tmp_path,
        RANKFLOW_LAKE="s3a://team-lake/rankflow",
        RANKFLOW_S3_ENDPOINT="http://127.0.0.1:9010",
        RANKFLOW_JARS=str(tmp_path / "jars"),
    )
    conf = spark_submit_conf(settings)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9010"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.executorEnv.RANKFLOW_S3_ENDPOINT"] == "http://127.0.0.1:9010"
    jars = conf["spark.executor.extraClassPath"]
    assert jars == conf["spark.driver.extraClassPath"]
    assert jars.startswith(str(tmp_path / "jars" / "hadoop-aws-"))
    assert jars.endswith("/*")
    assert not any("secret" in key.lower() or "access.key" in key for key in conf)
    aws = settings_with(tmp_path, RANKFLOW_LAKE="s3a://team-lake/x", RANKFLOW_S3_ENDPOINT="")
    assert "spark.hadoop.fs.s3a.endpoint" not in spark_submit_conf(aws)  # AWS's own


def test_a_half_set_key_pair_is_named_before_spark_starts(tmp_path, monkeypatch) -> None:
    settings = settings_with(tmp_path, RANKFLOW_LAKE="s3a://team-lake/rankflow")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(LakeAccessError, match="AWS_SECRET_ACCESS_KEY is not set"):
        check_lake_access(settings)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(LakeAccessError, match="AWS_ACCESS_KEY_ID is not set"):
        check_lake_access(settings)
    check_lake_access(settings_with(tmp_path))  # a local lake needs nothing


def test_the_cluster_file_points_every_target_at_the_cluster_and_the_s3_lake() -> None:
    shape = ClusterShape()
    env = cluster_environment(shape)
    text = cluster_file_text(shape)
    for name, value in env.items():
        assert f"export {name} := {value}\n" in text
    assert env["RANKFLOW_LAKE"].startswith("s3a://")
    assert json.loads(env["AIRFLOW_CONN_SPARK_RANKFLOW"])["host"] == "spark://127.0.0.1"
    conf = json.loads(env["RANKFLOW_SPARK_CONF"])
    # two applications (the Connect server's and a step's) fit on every worker at once
    assert int(conf["spark.cores.max"]) == shape.workers * shape.executor_cores
    assert 2 * shape.executor_cores <= shape.cores
    assert 2 * int(shape.executor_memory.rstrip("g")) <= int(shape.memory.rstrip("g"))
