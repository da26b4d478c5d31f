"""`rankflow benchmark mq2008` on a small synthetic LETOR folder: protocol, conventions, output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rankflow.cli import main

FAST = """
benchmark:
  mq2008:
    seeds: 2
    num_boost_round: 60
    early_stopping_rounds: 10
    optimistic_rounds: 40
"""


@pytest.fixture(scope="module")
def letor_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five partitions of 30 queries whose first feature predicts the label; some queries empty."""
    folder = tmp_path_factory.mktemp("letor")
    rng = np.random.default_rng(7)
    for part in range(1, 6):
        lines = []
        for query in range(30):
            qid = 1000 * part + query
            relevance = rng.integers(0, 3, size=12) if query % 5 else np.zeros(12, dtype=int)
            for label in relevance:
                signal = label + rng.normal(0, 0.8)
                noise = rng.random(3)
                values = " ".join(f"{i + 1}:{v:.4f}" for i, v in enumerate([signal, *noise]))
                lines.append(f"{label} qid:{qid} {values} #docid = d{qid}")
        (folder / f"S{part}.txt").write_text("\n".join(lines) + "\n")
    return folder


def _run(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *extra: str
) -> dict:
    override = folder / "fast.yaml"
    override.write_text(FAST)
    monkeypatch.setenv("RANKFLOW_CONFIG", str(override))
    assert main(["benchmark", "mq2008", "--data", str(folder), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_has_five_rotating_folds_means_and_the_convention(
    letor_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _run(letor_folder, monkeypatch, capsys)
    assert result["convention"] == "one"
    assert [fold["test"] for fold in result["folds"]] == ["S5", "S1", "S2", "S3", "S4"]
    assert set(result["mean"]) == {"ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "map"}
    assert all(fold["test_queries_without_relevant"] == 6 for fold in result["folds"])
    assert all(len(fold["best_iterations"]) == 2 for fold in result["folds"])
    by_convention = result["mean_ndcg@10_by_convention"]
    # empty queries count 0 <= are left out <= count 1, and "one" is the reported mean
    assert by_convention["zero"] < by_convention["skip"] < by_convention["one"]
    assert result["mean"]["ndcg@10"] == pytest.approx(by_convention["one"])
    # the feature carries the label: the model must rank far better than chance
    assert by_convention["skip"] > 0.8
    assert result["optimistic"]["fold"] == "Fold1"
    assert result["optimistic"]["best_iteration"] < 40


def test_the_convention_option_changes_what_empty_queries_count(
    letor_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _run(letor_folder, monkeypatch, capsys, "--convention", "zero")
    assert result["convention"] == "zero"
    assert result["mean"]["ndcg@10"] == pytest.approx(result["mean_ndcg@10_by_convention"]["zero"])


def test_a_missing_data_folder_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["benchmark", "mq2008", "--data", str(tmp_path / "nowhere")]) == 2
    assert "S1.txt" in capsys.readouterr().err
