"""The in-process item snapshot of a feature version: an Arrow file, loaded into numpy arrays.

The file holds one row per item of the feature version, sorted by id: the item vector in
registry order (float32), the codes of the attributes the on-demand features read (-1 =
missing) and whether the item was sold by the end of the day. Its schema metadata names the
feature version, the schema hash, the vocabulary of the codes and the listing context (the
catalogue's rates and median prices a live listing's features are computed from).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rankflow.features.listings import ListingContext

if TYPE_CHECKING:
    import pyarrow as pa

    from rankflow.quality.live import Listing

SNAPSHOT_FILE = "items.arrow"


@dataclass(frozen=True)
class ItemSnapshot:
    """The items of one feature version, as the ranking service holds them in memory."""

    version: str
    schema_hash: str
    item_ids: npt.NDArray[np.int64]  # ascending
    vectors: npt.NDArray[np.float32]  # items x item features
    codes: dict[str, npt.NDArray[np.int64]]
    is_sold: npt.NDArray[np.bool_]
    vocabulary: list[str]
    feature_names: list[str]
    context: ListingContext | None = None  # None: a snapshot from before live listings

    def positions(self, item_ids: npt.NDArray[np.int64]) -> tuple[np.ndarray, np.ndarray]:
        """Each id's row in the snapshot and whether it is known there."""
        at = np.minimum(np.searchsorted(self.item_ids, item_ids), max(len(self.item_ids) - 1, 0))
        known = (self.item_ids[at] == item_ids) if len(self.item_ids) else at < 0
        return at, known

    def code(self, value: str) -> int:
        """The vocabulary code of a value (-1 if the version never saw it)."""
        return int(self.codes_of([value])[0])

    @cached_property
    def _sorted_vocabulary(self) -> np.ndarray:
        return np.asarray(self.vocabulary, dtype=object)

    def codes_of(self, values: Sequence[str | None]) -> npt.NDArray[np.int64]:
        """The vocabulary codes of values (-1: missing, or a value the version never saw)."""
        vocabulary = self._sorted_vocabulary
        given = np.array([v is not None for v in values], bool)
        if not len(vocabulary) or not given.any():
            return np.full(len(values), -1, np.int64)
        wanted = np.array([v if v is not None else "" for v in values], dtype=object)
        at = np.minimum(np.searchsorted(vocabulary, wanted), len(vocabulary) - 1)
        found = given & (vocabulary[at] == wanted)
        return np.where(found, at, -1).astype(np.int64)


Listed = tuple[ItemSnapshot, ...]  # live listings a snapshot lacks: sorted tables, newest last


def with_listings(listed: Listed, snapshot: ItemSnapshot, listings: Sequence[Listing]) -> Listed:
    """The live listings ``snapshot`` lacks, with ``listings`` added: tables shaped like it.

    Each listing's vector is what training gives a listing its feature day lacks
    (:func:`rankflow.features.listings.listing_vectors`, from the snapshot's context); its
    attributes are coded with the snapshot's vocabulary, extended by the values only live
    listings brought (each table's ``vocabulary``: the snapshot's, then those, in arrival order),
    so a new brand equals itself and nothing else, as the strings do offline. A listing already
    held is kept as it was first read (an item is listed once). New listings make a new small
    table, merged with the one before while it is at least half that one's size (the
    logarithmic method): adding a few listings to many copies only the few, and a lookup
    searches O(log n) tables.
    """
    from rankflow.features.listings import listing_vectors

    if snapshot.context is None:
        return listed
    ids = np.array([listing.item_id for listing in listings], np.int64)
    _, first = np.unique(ids, return_index=True)
    new = np.zeros(len(ids), bool)
    new[first] = True
    for table in (snapshot, *listed):
        new &= ~table.positions(ids)[1]
    if not new.any():
        return listed
    added = [listings[int(i)] for i in np.flatnonzero(new)]
    vocabulary = list(listed[-1].vocabulary if listed else snapshot.vocabulary)
    codes = {
        name: extended_codes(snapshot, vocabulary, [getattr(one, name) for one in added])
        for name in snapshot.codes
    }
    vectors = listing_vectors(added, snapshot.context, snapshot.feature_names)
    levels = (*listed, listing_table(snapshot, ids[new], vectors, codes, vocabulary))
    while len(levels) > 1 and 2 * len(levels[-1].item_ids) >= len(levels[-2].item_ids):
        older, newer = levels[-2], levels[-1]
        merged = listing_table(
            snapshot,
            np.concatenate([older.item_ids, newer.item_ids]),
            np.concatenate([older.vectors, newer.vectors]),
            {n: np.concatenate([older.codes[n], newer.codes[n]]) for n in older.codes},
            newer.vocabulary,
        )
        levels = (*levels[:-2], merged)
    return levels


def extended_codes(
    snapshot: ItemSnapshot, vocabulary: list[str], values: Sequence[str | None]
) -> npt.NDArray[np.int64]:
    """Codes of values: the snapshot's, else a value's place in ``vocabulary``'s tail (grown)."""
    codes = snapshot.codes_of(values)
    known = len(snapshot.vocabulary)
    tail = {value: known + k for k, value in enumerate(vocabulary[known:])}
    for row in np.flatnonzero(codes < 0):
        value = values[int(row)]
        if value is None:
            continue  # missing stays missing
        if value not in tail:
            tail[value] = len(vocabulary)
            vocabulary.append(value)
        codes[row] = tail[value]
    return codes


def listing_table(
    snapshot: ItemSnapshot,
    item_ids: npt.NDArray[np.int64],
    vectors: npt.NDArray[np.float32],
    codes: dict[str, npt.NDArray[np.int64]],
    vocabulary: list[str],
) -> ItemSnapshot:
    """Live listings' rows as a table of ``snapshot``'s version, sorted by id (none sold)."""
    order = np.argsort(item_ids, kind="stable")
    return ItemSnapshot(
        version=snapshot.version,
        schema_hash=snapshot.schema_hash,
        item_ids=item_ids[order],
        vectors=vectors[order],
        codes={name: values[order] for name, values in codes.items()},
        is_sold=np.zeros(len(order), bool),
        vocabulary=vocabulary,
        feature_names=snapshot.feature_names,
        context=snapshot.context,
    )


def snapshot_table(
    items: pa.Table,
    feature_names: list[str],
    attributes: list[str],
    vocabulary: list[str],
    version: str,
    schema_hash: str,
    source: dict[str, Any] | None = None,
    context: ListingContext | None = None,
) -> pa.Table:
    """Build the snapshot's table from the item feature rows (sorted, float32, coded).

    ``source`` (the features day and the Delta versions read) lets the skew check rebuild the
    version's values offline long after Redis expired it; ``context`` lets the service give
    live listings the features training gives them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    ordered = items.sort_by("item_id")
    vocab = pa.array(vocabulary, pa.string())
    columns = {"item_id": ordered.column("item_id").cast(pa.int64())}
    for name in feature_names:
        columns[name] = pc.fill_null(ordered.column(name).cast(pa.float64()), np.nan).cast(
            pa.float32()
        )
    for name in attributes:
        codes = pc.fill_null(pc.index_in(ordered.column(name), vocab), -1)
        columns[f"{name}_code"] = codes.cast(pa.int32())
    columns["is_sold"] = pc.fill_null(ordered.column("is_sold"), False)
    metadata = {
        "rankflow.feature_version": version,
        "rankflow.schema_hash": schema_hash,
        "rankflow.vocabulary": json.dumps(vocabulary),
        "rankflow.features": json.dumps(feature_names),
        "rankflow.attributes": json.dumps(attributes),
        "rankflow.source": json.dumps(source or {}),
    }
    if context is not None:
        metadata["rankflow.listing_context"] = context.to_json()
    return pa.table(columns).replace_schema_metadata(metadata)


def write_snapshot(table: pa.Table, location: str) -> int:
    """Write the snapshot file (written aside, then renamed where the filesystem allows)."""
    import pyarrow as pa

    from rankflow.lake.delta_log import arrow_filesystem

    fs, path = arrow_filesystem(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    temporary = f"{path}.tmp"
    with fs.open_output_stream(temporary) as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    fs.move(temporary, path)
    return int(fs.get_file_info(path).size or 0)


def snapshot_source(location: str) -> dict[str, Any]:
    """Where a feature version's values came from (its snapshot's ``rankflow.source``)."""
    import pyarrow as pa

    from rankflow.lake.delta_log import arrow_filesystem

    fs, path = arrow_filesystem(location)
    with fs.open_input_file(path) as source:
        metadata = pa.ipc.open_file(source).schema.metadata or {}
    found: dict[str, Any] = json.loads(metadata.get(b"rankflow.source", b"{}"))
    return found


def load_snapshot(location: str) -> ItemSnapshot:
    """Load a snapshot file into memory (memory-mapped where local)."""
    import pyarrow as pa

    from rankflow.lake.delta_log import arrow_filesystem

    fs, path = arrow_filesystem(location)
    with fs.open_input_file(path) as source:
        table = pa.ipc.open_file(source).read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    names = json.loads(meta["rankflow.features"])
    attributes = json.loads(meta["rankflow.attributes"])
    vectors = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        vectors[:, j] = table.column(name).to_numpy()
    return ItemSnapshot(
        version=meta["rankflow.feature_version"],
        schema_hash=meta["rankflow.schema_hash"],
        item_ids=np.asarray(table.column("item_id").to_numpy(), dtype=np.int64),
        vectors=vectors,
        codes={a: table.column(f"{a}_code").to_numpy().astype(np.int64) for a in attributes},
        is_sold=np.asarray(table.column("is_sold").to_numpy(zero_copy_only=False), dtype=bool),
        vocabulary=json.loads(meta["rankflow.vocabulary"]),
        feature_names=names,
        context=(
            ListingContext.from_json(meta["rankflow.listing_context"])
            if "rankflow.listing_context" in meta
            else None
        ),
    )
