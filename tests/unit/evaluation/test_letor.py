"""The SVMlight / LETOR ranking-file reader and its folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankflow.evaluation.letor import (
    LETOR_FOLDS,
    LetorFormatError,
    fold_split,
    read_letor,
    read_partitions,
)

ROWS = """\
2 qid:10 1:0.5 3:1.0 #docid = A
0 qid:10 1:0.1 2:0.2 3:0.0 #docid = B
1 qid:7 2:0.9 #docid = C
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_rows_are_read_densely_with_missing_features_as_zero(tmp_path: Path) -> None:
    data = read_letor(_write(tmp_path, "S1.txt", ROWS))
    assert data.features.shape == (3, 3)
    np.testing.assert_allclose(data.features[0], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(data.features[2], [0.0, 0.9, 0.0])
    assert list(data.labels) == [2.0, 0.0, 1.0]
    assert list(data.qids) == [10, 10, 7]
    assert list(data.groups) == [2, 1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 1:0.5", "expected '<label> qid:<id>"),
        ("x qid:1 1:0.5", "could not convert"),
        ("-1 qid:1 1:0.5", "non-negative"),
        ("1 qid:1 0:0.5", "indices start at 1"),
        ("1 qid:1 1:abc", "could not convert"),
    ],
)
def test_a_malformed_line_is_refused_with_its_file_and_number(
    tmp_path: Path, line: str, message: str
) -> None:
    path = _write(tmp_path, "bad.txt", ROWS + line + "\n")
    with pytest.raises(LetorFormatError, match=message) as error:
        read_letor(path)
    assert "bad.txt:4" in str(error.value)


def test_rows_of_a_query_must_be_contiguous(tmp_path: Path) -> None:
    path = _write(tmp_path, "split.txt", ROWS + "0 qid:10 1:0.3\n")
    with pytest.raises(LetorFormatError, match="not contiguous"):
        read_letor(path)


def test_folds_rotate_partitions_and_renumber_queries_in_order(tmp_path: Path) -> None:
    for i in range(1, 6):
        # partition Si holds queries 100*i and 100*i - 50 (descending ids: unsorted on purpose)
        _write(tmp_path, f"S{i}.txt", f"1 qid:{100 * i} 1:{i}\n0 qid:{100 * i - 50} 2:{i}\n")
    partitions = read_partitions(tmp_path)
    train, validation, test = fold_split(partitions, "Fold2")
    assert LETOR_FOLDS["Fold2"] == (("S2", "S3", "S4"), "S5", "S1")
    assert list(train.qids) == [0, 1, 2, 3, 4, 5]
    assert list(train.features[::2, 0]) == [2.0, 3.0, 4.0]
    assert validation.features[0, 0] == 5.0
    assert test.features[0, 0] == 1.0
    assert train.n_queries == 6
    assert test.n_queries == 2


def test_a_missing_partition_names_the_files_and_the_option(tmp_path: Path) -> None:
    _write(tmp_path, "S1.txt", ROWS)
    with pytest.raises(FileNotFoundError, match=r"S2\.txt, S3\.txt, S4\.txt, S5\.txt.*--data"):
        read_partitions(tmp_path)
