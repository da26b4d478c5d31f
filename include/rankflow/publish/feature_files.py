"""Spark tasks over the files of the features step's Delta commit: vocabulary and Redis writes.

The commit's files are named by the Delta log (``lake.tables.feature_files``) and read with
pyarrow on the executors, as the Redis publisher reads gold files: no row passes through the
JVM, and the seen pairs, written hash-partitioned by user, become histories file by file with
no shuffle. Work is dealt to one task per core by file size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rankflow.features.on_demand import ITEM_ATTRIBUTES, MAP_COLUMNS, map_entries
from rankflow.features.registry import ITEM_FEATURES, USER_FEATURES
from rankflow.publish.feature_values import (
    HISTORY_COLUMNS,
    RowTally,
    file_histories,
    user_values,
    vector_values,
)
from rankflow.publish.tasks import TaskFunction, deal, run_tasks
from rankflow.store.vectors import GROUPS

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from rankflow.lake.tables import DataFile

ACK_SCHEMA = "part string, entities long, bytes long, rows long"  # rows: read from the file

# the columns each key group's values are encoded from (a user's value: vector, then profile)
GROUP_COLUMNS = {
    GROUPS["item"]: ("item_id", *ITEM_FEATURES),
    GROUPS["user"]: ("user_id", *USER_FEATURES, "declared_size", *MAP_COLUMNS),
    GROUPS["history"]: HISTORY_COLUMNS,
}
GROUP_FACES = {GROUPS["item"]: "items", GROUPS["user"]: "users", GROUPS["history"]: "seen"}


# what writing one row of a group's file costs a task, in microseconds of wall time (encoding,
# sending, and waiting for Redis; `make bench-materialise`, 514,500 users, 2026-12-06; a user's
# value: a little under the 1.5 + 3.0 its vector and profile cost as two keys): dealing by
# these, not by file size, balances the tasks (a seen file is large but cheap per byte, a
# user's profile small and dear)
ROW_MICROSECONDS = {GROUPS["item"]: 2.3, GROUPS["user"]: 4.0}
HISTORY_PAIR_MICROSECONDS = 0.11


@dataclass(frozen=True)
class WriteUnit:
    """One file of the features commit encoded as one group: a Spark task's unit of work."""

    part: str  # ``<group>-<file index>``: what the writer acknowledges
    group: str
    location: str
    rows: int

    @property
    def cost(self) -> float:
        """The unit's estimated wall time in microseconds (rows by the group's cost per row)."""
        return self.rows * ROW_MICROSECONDS.get(self.group, HISTORY_PAIR_MICROSECONDS)


def write_units(files: dict[str, list[DataFile]]) -> list[WriteUnit]:
    """Every (key group, file) pair of the commit: item vectors, user values, histories."""
    return [
        WriteUnit(f"{group}-{i}", group, file.location, file.rows)
        for group, face in GROUP_FACES.items()
        for i, file in enumerate(files[face])
    ]


def deal_units(units: list[WriteUnit], slots: int) -> list[list[WriteUnit]]:
    """Write units dealt to ``slots`` tasks by their estimated cost."""
    return deal(units, slots, size=lambda unit: unit.cost)


def read_file_columns(
    location: str, columns: tuple[str, ...], batch_rows: int | None = 262_144
) -> Iterator[pa.RecordBatch]:
    """Yield ``columns`` of one Parquet data file in batches (``None``: one), read with pyarrow."""
    import pyarrow.parquet as pq

    from rankflow.lake.delta_log import arrow_filesystem

    fs, path = arrow_filesystem(location)
    with fs.open_input_file(path) as source, pq.ParquetFile(source) as parquet:
        if batch_rows is None:  # a whole file in one batch: a copy-free read of one row group
            yield from parquet.read(columns=list(columns)).combine_chunks().to_batches()
        else:
            yield from parquet.iter_batches(batch_size=batch_rows, columns=list(columns))


def encoded_values(unit: WriteUnit, vocab: pa.Array, tally: RowTally) -> Iterator[pa.RecordBatch]:
    """The ``user_id, value`` batches of a unit's file (``user_id`` is the item id for items)."""
    import pyarrow as pa

    if unit.group == GROUPS["history"]:  # a file holds whole users: read it whole
        yield from file_histories(read_file_columns(unit.location, HISTORY_COLUMNS, None), tally)
        return
    batches = read_file_columns(unit.location, GROUP_COLUMNS[unit.group])
    for batch in batches:
        tally.rows += batch.num_rows
        if unit.group == GROUPS["item"]:
            ids, values = batch.column("item_id"), vector_values(batch, ITEM_FEATURES)
        else:
            ids, values = batch.column("user_id"), user_values(batch, USER_FEATURES, vocab)
        yield pa.RecordBatch.from_arrays([ids, values], names=["user_id", "value"])


def make_feature_writer(
    redis_url: str,
    prefix: str,
    version: str,
    tasks: list[list[WriteUnit]],
    vocabulary: list[str],
    item_buckets: int,
    mset_batch: int,
) -> TaskFunction:
    """Build the ``mapInArrow`` task over ``range(len(tasks))``: write task ``id``'s units.

    Each unit is a file read with pyarrow (no rows pass through the JVM), encoded in bulk and
    written by :func:`~rankflow.store.writer.write_arrow` (a key per entity) or
    :func:`~rankflow.store.writer.write_buckets` (item vectors), acknowledged per unit; a
    retried task writes the same keys and acknowledges the same parts again.
    """

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        from rankflow.store.keys import FEATURES
        from rankflow.store.writer import write_arrow, write_buckets

        vocab = pa.array(vocabulary, pa.string())
        for batch in batches:
            for task in batch.column("id").to_pylist():
                for unit in tasks[task]:
                    tally = RowTally()
                    values = encoded_values(unit, vocab, tally)
                    if unit.group == GROUPS["item"]:
                        stats = write_buckets(
                            redis_url, prefix, FEATURES, version, values, item_buckets,
                            part=unit.part, group=unit.group,
                        )  # fmt: skip
                    else:
                        stats = write_arrow(
                            redis_url, prefix, FEATURES, version, values,
                            mset_batch=mset_batch, part=unit.part, group=unit.group,
                        )  # fmt: skip
                    yield pa.RecordBatch.from_pydict(
                        {
                            "part": [unit.part],
                            "entities": [stats.users],
                            "bytes": [stats.bytes],
                            "rows": [tally.rows],
                        }
                    )

    return write


def write_feature_files(
    spark: SparkSession,
    tasks: list[list[WriteUnit]],
    writer: TaskFunction,
) -> dict[str, tuple[int, int]]:
    """Run one Spark task per list of units; return part -> (entities, bytes).

    Raises:
        VersionCheckError: a file read back another number of rows than the Delta log records
            (or a unit did not report): nothing is switched.
    """
    from rankflow.store.errors import VersionCheckError

    recorded = {unit.part: unit.rows for task in tasks for unit in task}
    results = run_tasks(spark, tasks, writer, ACK_SCHEMA)
    read = {str(r["part"]): int(r["rows"]) for r in results}
    if read != recorded:
        wrong = [(p, read.get(p), n) for p, n in recorded.items() if read.get(p) != n]
        raise VersionCheckError(
            "feature files read back other row counts than the Delta log records "
            f"(part, read, recorded): {wrong[:3]}; not switching"
        )
    return {str(r["part"]): (int(r["entities"]), int(r["bytes"])) for r in results}


# --------------------------------------------------------------------------- vocabulary

# the strings profiles and the snapshot code by their index in the sorted vocabulary
VOCABULARY_COLUMNS = {"items": tuple(ITEM_ATTRIBUTES), "users": ("declared_size", *MAP_COLUMNS)}


def file_vocabulary(location: str, columns: tuple[str, ...]) -> pa.Array:
    """The distinct non-null strings of a file's ``columns`` (a map column's keys)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = [pa.array([], pa.string())]
    for batch in read_file_columns(location, columns):
        for column in batch.columns:
            if pa.types.is_map(column.type):
                column = map_entries(column)[0].field("key")
            found.append(pc.unique(column.cast(pa.string()).drop_null()))
    return pc.unique(pa.concat_arrays(found))


def make_vocabulary_reader(tasks: list[list[tuple[str, str, int]]]) -> TaskFunction:
    """Build the ``mapInArrow`` task over ``range(len(tasks))``: each file's distinct strings."""

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        for batch in batches:
            for task in batch.column("id").to_pylist():
                for face, location, _ in tasks[task]:
                    found = file_vocabulary(location, VOCABULARY_COLUMNS[face])
                    yield pa.RecordBatch.from_arrays([found], names=["value"])

    return read


def vocabulary(spark: SparkSession, files: dict[str, list[DataFile]], slots: int) -> list[str]:
    """Every attribute value items, affinities and declared sizes use, sorted (code = index)."""
    units = [(face, f.location, f.size) for face in VOCABULARY_COLUMNS for f in files[face]]
    tasks = deal(units, slots, size=lambda unit: unit[2])
    rows = run_tasks(spark, tasks, make_vocabulary_reader(tasks), "value string")
    return sorted({str(row[0]) for row in rows})
