"""Gold snapshots from the Delta log, and the Redis publication that reads them (real Spark)."""

from __future__ import annotations

from datetime import date

import pytest

from rankflow.lake.delta_log import DeltaLogError, commit_versions, parse_commit
from rankflow.lake.gold import (
    GoldChangedError,
    GoldSnapshot,
    check_unchanged,
    snapshot_of,
    write_gold,
)
from rankflow.publish.redis import publish_snapshot, sample_user
from rankflow.store.errors import VersionCheckError
from rankflow.store.keys import new_version_id, parts_key
from rankflow.store.reader import RankingReader

pytestmark = [pytest.mark.spark, pytest.mark.services]

DS = date(2024, 1, 5)


def gold_frame(spark, users: int, surface: str, *, first: int = 1, offset: int = 0, ds=DS):
    """Ranked lists shaped like the scorer's output, with the encoded column it adds."""
    from pyspark.sql import functions as F

    from rankflow.model.scoring import RANKED_SCHEMA
    from rankflow.store.encoding import encode_list_array

    def encode(batches):
        for batch in batches:
            yield batch.append_column("items_u32le", encode_list_array(batch.column("item_ids")))

    lists = spark.range(first, first + users, numPartitions=3).select(
        F.col("id").alias("user_id"),
        F.array(F.col("id") * 10 + offset, F.col("id") * 10 + offset + 1).alias("item_ids"),
        F.array(F.lit(0.9).cast("float"), F.lit(0.1).cast("float")).alias("scores"),
    )
    return lists.mapInArrow(encode, RANKED_SCHEMA).select(
        "*", F.lit(ds).alias("ds"), F.lit(surface).alias("surface")
    )


def publish(spark, client, url: str, snapshot: GoldSnapshot, surface: str, **options):
    """Publish a snapshot as a new version of ``surface`` under the ``rf`` prefix."""
    return publish_snapshot(
        spark,
        client,
        url,
        snapshot,
        prefix="rf",
        surface=surface,
        version=new_version_id(DS),
        ds=DS,
        model_version="3",
        k=2,
        fallback=[7, 8],
        **options,
    )


def test_snapshot_lists_exactly_the_files_of_the_write(spark, tmp_path) -> None:
    table = str(tmp_path / "gold")
    home = write_gold(gold_frame(spark, 300, "home"), table, DS, "home")
    search = write_gold(gold_frame(spark, 50, "search"), table, DS, "search")
    again = write_gold(gold_frame(spark, 120, "home"), table, DS, "home")

    live = spark.read.format("delta").load(table).where("surface = 'home'").inputFiles()
    assert (home.users, search.users, again.users) == (300, 50, 120)
    assert {loc for loc, _ in again.locations()} == {f.removeprefix("file:") for f in live}
    assert not {p for p, _ in home.files} & {p for p, _ in again.files}
    assert GoldSnapshot.from_record(again.as_record()) == again
    assert commit_versions(table) == [0, 1, 2]


def test_a_later_write_to_the_partition_is_detected_and_others_are_not(spark, tmp_path) -> None:
    table = str(tmp_path / "gold")
    home = write_gold(gold_frame(spark, 100, "home"), table, DS, "home")
    write_gold(gold_frame(spark, 10, "search"), table, DS, "search")

    check_unchanged(home, DS, "home")  # another surface's commit does not matter
    spark.sql(f"DELETE FROM delta.`{table}` WHERE surface = 'home' AND user_id < 5")
    with pytest.raises(GoldChangedError, match="re-run the score task"):
        check_unchanged(home, DS, "home")


def test_files_without_row_counts_or_with_deletion_vectors_are_refused() -> None:
    add = (
        '{"add": {"path": "ds=2024-01-05/surface=home/p.parquet", "partitionValues": '
        '{"ds": "2024-01-05", "surface": "home"}, "dataChange": true%s}}'
    )
    no_stats = parse_commit(3, ['{"commitInfo": {"userMetadata": "t"}}', add % ""])
    with_dv = parse_commit(
        3, [add % ', "stats": "{\\"numRecords\\": 4}", "deletionVector": {"storageType": "u"}']
    )
    counted = parse_commit(4, [add % ', "stats": "{\\"numRecords\\": 4}"'])

    assert no_stats.user_metadata == "t"
    for commit in (no_stats, with_dv):
        with pytest.raises(DeltaLogError, match="numRecords statistic"):
            snapshot_of("/lake/gold", commit, DS, "home")
    assert snapshot_of("/lake/gold", counted, DS, "home").files == (
        ("ds=2024-01-05/surface=home/p.parquet", 4),
    )
    with pytest.raises(DeltaLogError, match="none in partition"):
        snapshot_of("/lake/gold", counted, DS, "search")  # not the commit of this partition


def test_publish_snapshot_writes_every_file_and_switches(
    spark, tmp_path, redis_client, redis_url
) -> None:
    table = str(tmp_path / "gold")
    snapshot = write_gold(gold_frame(spark, 700, "home"), table, DS, "home")

    done = publish(spark, redis_client, redis_url, snapshot, "home")
    version = done.version

    reader = RankingReader.from_url(redis_url, "rf")
    acks = redis_client.hgetall(parts_key("rf", "home", version))
    assert done.result.status == "switched"
    assert (done.users, done.files, done.value_bytes) == (700, len(snapshot.files), 700 * 8)
    assert {k.decode(): int(v) for k, v in acks.items()} == dict(snapshot.files)
    assert reader.lookup(1, "home").items == [10, 11]
    assert reader.lookup(700, "home").items == [7000, 7001]
    assert reader.lookup(701, "home").fallback
    assert sample_user(snapshot) in range(1, 701)


def test_a_file_that_disagrees_with_its_row_count_is_not_published(
    spark, tmp_path, redis_client, redis_url
) -> None:
    table = str(tmp_path / "gold")
    snapshot = write_gold(gold_frame(spark, 90, "home"), table, DS, "home")
    (path, rows), *rest = snapshot.files
    wrong = GoldSnapshot(snapshot.table, snapshot.commit, ((path, rows + 1), *rest))

    with pytest.raises(VersionCheckError, match="other row counts than recorded"):
        publish(spark, redis_client, redis_url, wrong, "home")
    assert redis_client.get("rf:home:current") is None


def test_a_gold_table_from_before_the_encoded_column_takes_it_and_publishes(
    spark, tmp_path, redis_client, redis_url
) -> None:
    table = str(tmp_path / "gold")
    old = gold_frame(spark, 40, "search").drop("items_u32le")
    old_snapshot = write_gold(old, table, DS, "search")  # the table as an older release wrote it
    snapshot = write_gold(gold_frame(spark, 60, "home"), table, DS, "home")

    # files without items_u32le are encoded from item_ids
    done = publish(spark, redis_client, redis_url, old_snapshot, "search")

    columns = spark.read.format("delta").load(table).columns
    assert "items_u32le" in columns
    assert snapshot.users == 60
    assert done.result.status == "switched"
    assert RankingReader.from_url(redis_url, "rf").lookup(40, "search").items == [400, 401]


def test_a_remove_without_partition_values_counts_as_a_change() -> None:
    remove = '{"remove": {"path": "ds=2024-01-05/surface=home/p.parquet", "dataChange": true}}'
    compaction = (
        '{"remove": {"path": "x.parquet", "dataChange": false, '
        '"partitionValues": {"ds": "2024-01-05", "surface": "home"}}}'
    )
    partition = {"ds": "2024-01-05", "surface": "home"}
    assert parse_commit(5, [remove]).touches(partition)
    assert not parse_commit(6, [compaction]).touches(partition)


def test_a_commit_with_files_outside_the_partition_only_is_refused() -> None:
    add = (
        '{"add": {"path": "p.parquet", "partitionValues": {"col-1a2b": "2024-01-05"}, '
        '"dataChange": true, "stats": "{\\"numRecords\\": 4}"}}'
    )
    with pytest.raises(DeltaLogError, match="none in partition"):
        snapshot_of("/lake/gold", parse_commit(7, [add]), DS, "home")
