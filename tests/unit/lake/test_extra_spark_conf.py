"""RANKFLOW_SPARK_CONF adds Spark settings to every step, and a bad value is refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankflow.config import load_settings, spark_conf
from rankflow.lake.session import connect_server_command, spark_submit_conf


def test_extra_conf_reaches_every_step_and_wins(tmp_path: Path) -> None:
    env = {
        "RANKFLOW_HOME": str(tmp_path),
        "RANKFLOW_SPARK_CONF": '{"spark.driver.memory": "12g", "spark.eventLog.enabled": true,'
        ' "spark.sql.shuffle.partitions": 32}',
    }
    settings = load_settings(env)
    conf = spark_submit_conf(settings)
    assert conf["spark.driver.memory"] == "12g"
    assert conf["spark.eventLog.enabled"] == "true"
    assert conf["spark.sql.shuffle.partitions"] == "32"  # the extra conf wins
    command = connect_server_command(settings, 15002)
    assert "spark.driver.memory=12g" in command
    assert "spark.driver.memory=4g" not in command
    assert "spark.connect.grpc.binding.port=15002" in command  # never overridden


def test_without_extra_conf_the_server_keeps_its_default_memory(tmp_path: Path) -> None:
    settings = load_settings({"RANKFLOW_HOME": str(tmp_path)})
    assert "spark.driver.memory" not in spark_submit_conf(settings)
    assert "spark.driver.memory=4g" in connect_server_command(settings, 15002)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spark.driver.memory=4g", "is not JSON"),
        ('["spark.driver.memory"]', "JSON object of spark"),
        ('{"driver.memory": "4g"}', "JSON object of spark"),
    ],
)
def test_a_malformed_extra_conf_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spark_conf(text)
