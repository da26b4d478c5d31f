"""LETOR / SVMlight ranking files (``<label> qid:<q> 1:<v> ... #comment``) and their folds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

# LETOR 4.0's five folds as (train, validation, test) partitions of S1..S5 (MQ2007/MQ2008)
LETOR_FOLDS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "Fold1": (("S1", "S2", "S3"), "S4", "S5"),
    "Fold2": (("S2", "S3", "S4"), "S5", "S1"),
    "Fold3": (("S3", "S4", "S5"), "S1", "S2"),
    "Fold4": (("S4", "S5", "S1"), "S2", "S3"),
    "Fold5": (("S5", "S1", "S2"), "S3", "S4"),
}


class LetorFormatError(ValueError):
    """A line of an SVMlight ranking file cannot be read."""


@dataclass(frozen=True)
class RankingData:
    """Rows of query groups: dense features, graded labels, query ids, contiguous per query."""

    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.float32]
    qids: npt.NDArray[np.int64]

    @property
    def groups(self) -> npt.NDArray[np.int64]:
        """Size of each contiguous query group, in order (XGBoost's ``group``)."""
        starts = np.flatnonzero(np.r_[True, self.qids[1:] != self.qids[:-1]])
        sizes: npt.NDArray[np.int64] = np.diff(np.r_[starts, len(self.qids)]).astype(np.int64)
        return sizes

    @property
    def n_queries(self) -> int:
        """Number of query groups."""
        return len(self.groups)


def parse_line(line: str, number: int, source: str) -> tuple[float, int, dict[int, float]]:
    """Parse one ``label qid:q i:v ...`` line; the error names the file and line number."""
    body = line.split("#", 1)[0].split()
    where = f"{source}:{number}"
    if len(body) < 2 or not body[1].startswith("qid:"):
        raise LetorFormatError(f"{where}: expected '<label> qid:<id> <index>:<value> ...'")
    try:
        label = float(body[0])
        qid = int(body[1][4:])
        values = {int(k): float(v) for k, v in (token.split(":", 1) for token in body[2:])}
    except ValueError as error:
        raise LetorFormatError(f"{where}: {error}") from error
    if not np.isfinite(label) or label < 0:
        raise LetorFormatError(f"{where}: label must be a non-negative number, got {body[0]}")
    if any(index < 1 for index in values):
        raise LetorFormatError(f"{where}: feature indices start at 1")
    return label, qid, values


def read_letor(path: Path, n_features: int | None = None) -> RankingData:
    """Read an SVMlight ranking file; rows of a query must be contiguous (LETOR's layout)."""
    labels: list[float] = []
    qids: list[int] = []
    rows: list[dict[int, float]] = []
    with open(path, encoding="ascii") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            label, qid, values = parse_line(line, number, str(path))
            labels.append(label)
            qids.append(qid)
            rows.append(values)
    if not rows:
        raise LetorFormatError(f"{path}: no rows")
    width = n_features or max(max(row, default=0) for row in rows)
    features = np.zeros((len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
        for index, value in row.items():
            if index > width:
                raise LetorFormatError(f"{path}: feature {index} beyond the {width} expected")
            features[i, index - 1] = value
    qid_array = np.asarray(qids, dtype=np.int64)
    starts = np.r_[True, qid_array[1:] != qid_array[:-1]]
    if len(np.unique(qid_array)) != int(starts.sum()):
        raise LetorFormatError(f"{path}: the rows of a query are not contiguous")
    return RankingData(features, np.asarray(labels, dtype=np.float32), qid_array)


def concatenate(parts: Sequence[RankingData]) -> RankingData:
    """Join partitions, renumbering queries 0..n-1 in order (XGBoost wants sorted qids)."""
    running: list[npt.NDArray[np.int64]] = []
    offset = 0
    for part in parts:
        running.append(np.repeat(np.arange(offset, offset + part.n_queries), part.groups))
        offset += part.n_queries
    return RankingData(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate(running).astype(np.int64),
    )


def read_partitions(
    folder: Path, names: Sequence[str] = ("S1", "S2", "S3", "S4", "S5")
) -> dict[str, RankingData]:
    """Read the partitions ``S1.txt`` .. ``S5.txt`` of a LETOR 4.0 data set, with one width."""
    missing = [name for name in names if not (folder / f"{name}.txt").exists()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(f'{m}.txt' for m in missing)}: point --data at the "
            "folder holding LETOR 4.0's S1.txt .. S5.txt"
        )
    parts = {name: read_letor(folder / f"{name}.txt") for name in names}
    width = max(part.features.shape[1] for part in parts.values())
    return {
        name: part
        if part.features.shape[1] == width
        else read_letor(folder / f"{name}.txt", n_features=width)
        for name, part in parts.items()
    }


def fold_split(
    partitions: dict[str, RankingData], fold: str
) -> tuple[RankingData, RankingData, RankingData]:
    """Return the (train, validation, test) data of a LETOR fold."""
    train, validation, test = LETOR_FOLDS[fold]
    return (
        concatenate([partitions[name] for name in train]),
        concatenate([partitions[validation]]),
        concatenate([partitions[test]]),
    )
