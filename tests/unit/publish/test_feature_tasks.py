"""The pieces of the materialisation's Spark tasks that need no Spark: dealing work, vocabulary."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rankflow.publish.feature_files import WriteUnit, deal_units, file_vocabulary
from rankflow.publish.tasks import deal


def test_the_largest_files_are_dealt_first_to_the_least_loaded_task() -> None:
    sizes = [90, 10, 80, 10, 10, 5]
    tasks = deal(sizes, 2, size=lambda s: s)
    assert sorted(map(sorted, tasks)) == [[5, 10, 90], [10, 10, 80]]
    assert deal(sizes, 8, size=lambda s: s) == [[90], [80], [10], [10], [10], [5]]
    assert deal([], 2, size=lambda s: s) == []


def test_a_file_vocabulary_holds_its_strings_and_map_keys_without_nulls(tmp_path: Path) -> None:
    affinity = pa.array(
        [[("tops", 0.5), ("shoes", 0.5)], None, [("bags", 1.0)]],
        pa.map_(pa.string(), pa.float64()),
    )
    table = pa.table({"declared_size": pa.array(["M", None, "M"]), "category_affinity": affinity})
    pq.write_table(table, tmp_path / "users.parquet", row_group_size=2)
    found = file_vocabulary(str(tmp_path / "users.parquet"), ("declared_size", "category_affinity"))
    assert sorted(found.to_pylist()) == ["M", "bags", "shoes", "tops"]


def test_units_are_dealt_by_their_cost_not_their_bytes() -> None:
    # three large seen files and the small but dear user files of a 500k-user day: by bytes,
    # one task got two seen files and the other every user unit
    users = [WriteUnit(f"u-{i}", "u", f"users-{i}", 260_000) for i in range(2)]
    pairs = (7_000_000, 7_000_000, 4_700_000)
    seen = [WriteUnit(f"h-{i}", "h", f"seen-{i}", n) for i, n in enumerate(pairs)]
    items = [WriteUnit("i-0", "i", "items-0", 285_000)]
    tasks = deal_units([*users, *seen, *items], 2)
    loads = [sum(unit.cost for unit in task) for task in tasks]
    assert max(loads) / min(loads) < 1.15
    assert sorted(len(task) for task in tasks) == [3, 3]
    assert WriteUnit("u-0", "u", "x", 1000).cost > WriteUnit("h-0", "h", "x", 20_000).cost
