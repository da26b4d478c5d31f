"""User x item features, computed when a user meets a candidate: one function, two callers.

:func:`cross_features` is plain numpy over integer codes. Spark calls it through
:func:`cross_feature_batches` (``mapInArrow``) for the training set, batch scoring calls it in
the scorer's own pass (:func:`cross_feature_columns`), and the ranking service calls it
in-process with the codes of its feature version. Both feed it float32
inputs, so both get the same float32 outputs, bit for bit (``docs/feature-store.md``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from rankflow.features.registry import AFFINITY_DIMENSIONS, CROSS_FEATURES

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from rankflow.features.batch import FeatureFrames

ONE_SIZE = "one_size"
Codes = npt.NDArray[np.int64]  # -1 = missing
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Affinity:
    """One dimension's affinity maps of several users as flat entries (owner, value code, share)."""

    owner: Codes
    code: Codes
    share: Floats


@dataclass(frozen=True)
class UserSide:
    """What the cross features need of each user: affinities, declared size, price band."""

    affinity: Mapping[str, Affinity]
    declared_size: Codes
    log_price_mean: Floats


@dataclass(frozen=True)
class ItemSide:
    """What the cross features need of each candidate row: attribute codes and price."""

    codes: Mapping[str, Codes]
    price: Floats


def affinity_of(user_of_row: Codes, value: Codes, affinity: Affinity) -> Floats:
    """Each row's user's share of the row's value (0 if the value or the entry is absent)."""
    width = int(max(value.max(initial=0), affinity.code.max(initial=0))) + 1
    entries = affinity.owner * width + affinity.code
    order = np.argsort(entries, kind="stable")
    entries = entries[order]
    wanted = user_of_row * width + value
    position = np.minimum(np.searchsorted(entries, wanted), max(len(entries) - 1, 0))
    out = np.zeros(len(value), dtype=np.float32)
    if len(entries):
        hit = (value >= 0) & (entries[position] == wanted)
        out[hit] = affinity.share[order][position[hit]]
    return out


def size_fit(item_size: Codes, declared_size: Codes, one_size: int) -> Floats:
    """1 for the user's size or a one-size item, 0 for another size, NaN when a size is unknown.

    SQL's three-valued logic, as the features were first defined: one-size fits even an unknown
    user; otherwise both sizes must be known.
    """
    fits_anyone = (item_size >= 0) & (one_size >= 0) & (item_size == one_size)
    both_known = (item_size >= 0) & (declared_size >= 0)
    equal = (item_size == declared_size).astype(np.float32)
    return np.where(fits_anyone, 1.0, np.where(both_known, equal, np.nan)).astype(np.float32)


def price_distance(price: Floats, log_price_mean: Floats) -> Floats:
    """``|log(price) - mean log price|`` from float32 inputs (NaN: price missing or <= 0)."""
    price64 = price.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.where(price64 > 0, np.log(np.where(price64 > 0, price64, 1.0)), np.nan)
    distance: Floats = np.abs(logged - log_price_mean.astype(np.float64)).astype(np.float32)
    return distance


def cross_features(
    user_of_row: Codes,
    items: ItemSide,
    users: UserSide,
    seen: Floats,
    clicked: Floats,
    one_size: int,
) -> dict[str, Floats]:
    """The user x item features of every row, as float32 arrays in registry order.

    Args:
        user_of_row: the position in ``users`` of each row's user.
        items: the row's item attribute codes and price.
        users: the users' affinities, declared sizes and price bands.
        seen: times the item was shown to the user before (0 if never).
        clicked: times the user clicked it before (0 if never).
        one_size: the code of the ``one_size`` size (-1 if no item has it).
    """
    out = {
        f"aff_{d}": affinity_of(user_of_row, items.codes[d], users.affinity[d])
        for d in AFFINITY_DIMENSIONS
    }
    out["size_fit"] = size_fit(items.codes["size"], users.declared_size[user_of_row], one_size)
    out["price_distance"] = price_distance(items.price, users.log_price_mean[user_of_row])
    out["seen_before"] = seen.astype(np.float32)
    out["clicked_before"] = clicked.astype(np.float32)
    return {name: out[name] for name in CROSS_FEATURES}


# --------------------------------------------------------------------------- the Spark caller

MAP_COLUMNS = tuple(f"{d}_affinity" for d in AFFINITY_DIMENSIONS)
ITEM_ATTRIBUTES = list(AFFINITY_DIMENSIONS)  # the item strings the on-demand function reads
# counts keep the integer type the lake's tables have always had (float32 would be the same)
COUNT_FEATURES = ("seen_before", "clicked_before")
# the joined columns the cross features are computed from (besides the user and as_of keys)
CROSS_INPUTS = (*MAP_COLUMNS, *ITEM_ATTRIBUTES, "declared_size", "user_log_price_mean",
                "item_price", *COUNT_FEATURES)  # fmt: skip


def _floats(column: pa.Array, fill: float = np.nan) -> Floats:
    """An Arrow numeric column as float32 (nulls become ``fill``)."""
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(column.cast("double"), fill).to_numpy(), dtype=np.float32)


def map_entries(affinity: pa.Array) -> tuple[pa.StructArray, npt.NDArray[np.int64]]:
    """The ``key, value`` entries of a map column (non-null maps only) and each map's size."""
    import pyarrow as pa
    import pyarrow.compute as pc

    entry = pa.struct([("key", affinity.type.key_type), ("value", affinity.type.item_type)])
    lists = affinity.cast(pa.list_(entry))
    sizes = np.asarray(pc.fill_null(pc.list_value_length(lists), 0).to_numpy(), dtype=np.int64)
    return lists.flatten(), sizes


def user_runs(batch: pa.RecordBatch) -> tuple[Codes, Codes]:
    """Where each run of rows of one user (and ``as_of``, when present) starts, and each row's run.

    Joined rows arrive grouped by user (the join sorts by it), so the user side -- affinity maps,
    declared size, price band -- is read once a run instead of once a row. Rows not grouped
    are still right: each row is then its own run.
    """
    keys = ["as_of", "user_id"] if "as_of" in batch.schema.names else ["user_id"]
    new_run = np.zeros(batch.num_rows, dtype=bool)
    if batch.num_rows:
        new_run[0] = True
    for name in keys:
        values = batch.column(name).to_numpy(zero_copy_only=False)
        new_run[1:] |= values[1:] != values[:-1]
    starts = np.flatnonzero(new_run)
    return starts, np.cumsum(new_run, dtype=np.int64) - 1


def batch_inputs(batch: pa.RecordBatch) -> tuple[Codes, ItemSide, UserSide, Floats, Floats, int]:
    """Read one joined batch (a row = a user x item pair) into the function's inputs.

    Strings become codes of one vocabulary local to the batch (only equality matters); the
    users are the batch's runs of one user (:func:`user_runs`), the first output each row's run.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    starts, user_of_row = user_runs(batch)
    first_rows = pa.array(starts)
    maps = [batch.column(name).take(first_rows) for name in MAP_COLUMNS]
    flat, sizes = zip(*[map_entries(m) for m in maps], strict=True)
    strings = [batch.column(d) for d in AFFINITY_DIMENSIONS]
    strings += [batch.column("declared_size").take(first_rows), pa.array([ONE_SIZE])]
    strings += [f.field("key") for f in flat]
    pieces = [s.cast(pa.string()) for s in strings]
    encoded = pc.dictionary_encode(pa.concat_arrays(pieces)).indices
    codes = np.asarray(pc.fill_null(encoded, -1).to_numpy(), dtype=np.int64)
    bounds = np.cumsum([0, *[len(p) for p in pieces]])
    part = [codes[a:b] for a, b in itertools.pairwise(bounds)]
    dims = len(AFFINITY_DIMENSIONS)
    affinity = {}
    for i, dim in enumerate(AFFINITY_DIMENSIONS):
        owner = np.repeat(np.arange(len(starts), dtype=np.int64), sizes[i])
        affinity[dim] = Affinity(owner, part[dims + 2 + i], _floats(flat[i].field("value")))
    price_band = _floats(batch.column("user_log_price_mean").take(first_rows))
    users = UserSide(affinity, part[dims], price_band)
    items = ItemSide(dict(zip(AFFINITY_DIMENSIONS, part[:dims], strict=True)),
                     _floats(batch.column("item_price")))  # fmt: skip
    seen = _floats(batch.column("seen_before"), 0.0)
    clicked = _floats(batch.column("clicked_before"), 0.0)
    return user_of_row, items, users, seen, clicked, int(part[dims + 1][0])


def cross_feature_columns(batch: pa.RecordBatch) -> dict[str, Floats]:
    """The user x item features of one joined batch, as float32 arrays in registry order."""
    return cross_features(*batch_inputs(batch))


def cross_feature_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` function: add the cross features, drop the affinity maps."""
    import pyarrow as pa

    for batch in batches:
        computed = cross_feature_columns(batch)
        kept = [n for n in batch.schema.names if n not in MAP_COLUMNS and n not in computed]
        columns = [batch.column(n) for n in kept]
        columns += [
            pa.array(computed[n].astype(np.int64 if n in COUNT_FEATURES else np.float64))
            for n in CROSS_FEATURES
        ]
        yield pa.RecordBatch.from_arrays(columns, names=[*kept, *CROSS_FEATURES])


def with_cross_features(pairs: DataFrame, features: FeatureFrames) -> DataFrame:
    """Join features to ``as_of, user_id, item_id`` pairs and add the user x item features.

    The features are float32 values carried as doubles (exact) and counts as longs, the
    types the lake's tables have always had.
    """
    joined = (
        pairs.join(features.items, on=["as_of", "item_id"], how="left")
        .join(features.users, on=["as_of", "user_id"], how="left")
        .join(features.seen, on=["as_of", "user_id", "item_id"], how="left")
    )
    return add_cross_features(joined)


def join_features_by_user(pairs: DataFrame, features: FeatureFrames, partitions: int) -> DataFrame:
    """Join features to pairs with few distinct items, placing the rows by user.

    Every row of a user lands in one of ``partitions`` partitions (hashed by ``user_id``), so a
    per-user reducer needs no shuffle of the wide rows. Only narrow rows move: the pairs meet
    their seen flags, are repartitioned by user (a ``repartition``, which adaptive execution
    never splits or merges), meet the user features there (only the user side is shuffled), and
    the item features of the pairs' items (candidates share a few thousand) are broadcast. The
    rows keep the affinity maps: :func:`cross_feature_columns` turns them into features.
    """
    from pyspark.sql import functions as F

    items = features.items.join(pairs.select("item_id").distinct(), "item_id", "left_semi")
    return (
        pairs.join(features.seen, on=["as_of", "user_id", "item_id"], how="left")
        .repartition(partitions, "user_id")
        .join(features.users, on=["as_of", "user_id"], how="left")
        .join(F.broadcast(items), on=["as_of", "item_id"], how="left")
    )


def add_cross_features(joined: DataFrame) -> DataFrame:
    """Add the user x item features to joined rows (``mapInArrow``), dropping the maps."""
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    kept = [f for f in joined.schema.fields if f.name not in MAP_COLUMNS + tuple(CROSS_FEATURES)]
    types = {n: LongType() if n in COUNT_FEATURES else DoubleType() for n in CROSS_FEATURES}
    schema = StructType([*kept, *[StructField(n, types[n]) for n in CROSS_FEATURES]])
    return joined.mapInArrow(cross_feature_batches, schema)
