"""LambdaMART training with XGBoost: training window, matrices, debiasing variants, the fit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from rankflow.features.registry import MODEL_FEATURES, STREAM_FEATURES

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import xgboost as xgb


@dataclass(frozen=True)
class TrainingWindow:
    """Days used for fitting, early stopping and held-out evaluation, all before scoring."""

    train_start: date
    train_end: date
    validation_start: date
    validation_end: date
    test_day: date


def training_window(ds: date, config: dict[str, Any]) -> TrainingWindow:
    """Split the days before and including ``ds`` in time: train, then validation, then test."""
    validation_days = int(config["validation_days"])
    validation_end = ds - timedelta(days=1)
    validation_start = validation_end - timedelta(days=validation_days - 1)
    train_end = validation_start - timedelta(days=1)
    return TrainingWindow(
        train_start=train_end - timedelta(days=int(config["train_days"]) - 1),
        train_end=train_end,
        validation_start=validation_start,
        validation_end=validation_end,
        test_day=ds,
    )


def sort_by_query(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort rows so each query group is contiguous (XGBoost's ranking requirement)."""
    return frame.sort_values(["ds", "qid", "position"], kind="stable").reset_index(drop=True)


def group_sizes(qids: pd.Series) -> np.ndarray:
    """Return the size of each contiguous query group, in order."""
    import numpy as np

    values = qids.to_numpy()
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return np.diff(np.r_[starts, len(values)])


def ranking_matrix(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    feature_names: list[str] | None = None,
) -> xgb.DMatrix:
    """Build a ranking DMatrix from dense features, labels and contiguous query-group sizes."""
    import xgboost as xgb

    matrix = xgb.DMatrix(features, label=labels, feature_names=feature_names)
    matrix.set_group(groups)
    return matrix


DEBIASING = ("none", "lambdarank_unbiased", "position_feature")
GROUP_HASH_BUCKETS = 1 << 20  # a sample of query groups keeps the hash buckets below a cut
POSITION_FEATURE = "shown_position"


def model_features(debiasing: str, stream: bool = False) -> list[str]:
    """The feature columns of a model trained with a debiasing variant, in order.

    ``position_feature`` adds the position the item was shown at: the model explains the
    position's share of the clicks with it, and every prediction fixes it to one value, so the
    ranking comes from the other features alone. ``stream`` adds the stream features
    (``training.stream_features``).
    """
    if debiasing not in DEBIASING:
        raise ValueError(f"training.debiasing must be one of {DEBIASING}, got {debiasing!r}")
    features = [*MODEL_FEATURES, *(STREAM_FEATURES if stream else ())]
    return [*features, POSITION_FEATURE] if debiasing == "position_feature" else features


def uses_stream_features(config: Mapping[str, Any]) -> bool:
    """Whether a training config fits the stream features too (a lineage from before: no)."""
    return bool(config.get("stream_features", False))


def stale_stream_share(config: Mapping[str, Any]) -> float:
    """The share of training query groups fitted with their stream features missing.

    A stale updater makes the ranking service send the stream features as missing (NaN); a
    model that never saw them missing would send such rows down an arbitrary branch. Blanking
    them in a fixed hash sample of groups teaches it what to do then: rank by the rest.
    """
    share = float(config.get("stream_stale_share", 0.0)) if uses_stream_features(config) else 0.0
    if not 0.0 <= share < 1.0:
        raise ValueError(f"training.stream_stale_share must be in [0, 1), got {share}")
    return share


def stale_groups(qids: pd.Series, share: float) -> np.ndarray:
    """Mark the rows of a fixed hash sample of about ``share`` of the query groups."""
    import numpy as np
    import pandas as pd

    if share <= 0.0:
        return np.zeros(len(qids), np.bool_)
    hashes = pd.util.hash_array(qids.to_numpy(dtype=object))
    marked: np.ndarray = hashes % GROUP_HASH_BUCKETS < int(share * GROUP_HASH_BUCKETS)
    return marked


def variant_params(config: dict[str, Any], debiasing: str) -> dict[str, Any]:
    """The training config of a debiasing variant.

    ``lambdarank_unbiased`` is XGBoost's unbiased LambdaMART: it estimates the position bias
    while fitting and reweights the pairs; it reads positions from the row order of each query
    group, which is the shown order (rows are sorted by position).
    """
    model_features(debiasing)
    params = {k: v for k, v in config["params"].items() if k != "lambdarank_unbiased"}
    if debiasing == "lambdarank_unbiased":
        params["lambdarank_unbiased"] = True
    return {**config, "debiasing": debiasing, "params": params}


def frame_matrix(
    frame: pd.DataFrame, debiasing: str = "none", stream: bool = False, stale_share: float = 0.0
) -> xgb.DMatrix:
    """Build the ranking DMatrix of training rows sorted by query group and shown position.

    With ``stale_share`` the stream features of that share of the query groups are missing
    (:func:`stale_stream_share`).
    """
    import numpy as np

    features = model_features(debiasing, stream)
    values = (
        frame.assign(**{POSITION_FEATURE: frame["position"]})
        if (POSITION_FEATURE in features)
        else frame
    )
    matrix = values[features].to_numpy(dtype="float32")
    stale = stale_groups(frame["qid"], stale_share)
    if stale.any():
        columns = np.array([features.index(name) for name in STREAM_FEATURES])
        matrix[np.ix_(stale, columns)] = np.nan
    return ranking_matrix(
        matrix, frame["label"].to_numpy(dtype="float32"), group_sizes(frame["qid"]), features
    )


def model_inputs(booster: xgb.Booster, frame: pd.DataFrame, position: float = 1.0) -> np.ndarray:
    """The feature matrix a model predicts from, in its own feature order.

    A model trained with the shown position as a feature gets it fixed to ``position`` (the top
    slot): scores then rank items as if each were shown first.
    """
    names = booster.feature_names or list(MODEL_FEATURES)
    if POSITION_FEATURE in names:
        frame = frame.assign(**{POSITION_FEATURE: position})
    matrix: np.ndarray = frame[names].to_numpy(dtype="float32")
    return matrix


def arrow_model_inputs(
    booster: xgb.Booster,
    batch: pa.RecordBatch,
    computed: Mapping[str, np.ndarray],
    position: float = 1.0,
) -> np.ndarray:
    """:func:`model_inputs` of an Arrow batch, the features in ``computed`` taken from there.

    Columns are read as doubles (nulls become NaN) and stored as float32, as Spark's cast and
    :func:`model_inputs` do, so both give the same matrix bit for bit.
    """
    import numpy as np
    import pyarrow as pa

    names = booster.feature_names or list(MODEL_FEATURES)
    matrix = np.empty((batch.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        if name == POSITION_FEATURE:
            matrix[:, j] = position
        elif name in computed:
            matrix[:, j] = computed[name]
        else:
            column = batch.column(name).cast(pa.float64())
            matrix[:, j] = column.to_numpy(zero_copy_only=False)
    return matrix


@dataclass(frozen=True)
class FittedRanker:
    """A booster cut at its best validation iteration, with the validation curve."""

    booster: xgb.Booster
    best_iteration: int
    best_score: float
    validation_curve: list[float]


def early_stopping(config: Mapping[str, Any]) -> Any:
    """XGBoost's early stopping on the validation set, from ``training.min_boost_rounds`` on.

    One validation day is a noisy judge: its NDCG@10 can spike in the first rounds (a model of
    two trees, scoring most candidates of a page alike) and stop training there. The best
    iteration is chosen among rounds ``min_boost_rounds`` and later; patience is
    ``early_stopping_rounds`` from there. A lineage from before the setting used 0 (none).
    """
    from xgboost.callback import EarlyStopping

    class EarlyStoppingAfter(EarlyStopping):  # type: ignore[misc]
        """Early stopping that neither judges nor stops before ``min_rounds`` rounds."""

        def __init__(self, min_rounds: int, **options: Any) -> None:
            super().__init__(**options)
            self.min_rounds = min_rounds

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            if epoch + 1 < self.min_rounds:
                return False
            return bool(super().after_iteration(model, epoch, evals_log))

    return EarlyStoppingAfter(
        min(int(config.get("min_boost_rounds", 0)), int(config["num_boost_round"])),
        rounds=int(config["early_stopping_rounds"]),
        metric_name=str(config["params"]["eval_metric"]),
        data_name="validation",
        maximize=True,
    )


def fit_ranker(train: xgb.DMatrix, validation: xgb.DMatrix, config: dict[str, Any]) -> FittedRanker:
    """Fit LambdaMART, early-stopped on the validation groups, keeping only the best trees.

    ``xgb.train`` returns every tree it grew, up to ``early_stopping_rounds`` past the best
    iteration (:func:`early_stopping`); the model is sliced so that scoring, serving and the
    gate all see the same one.
    """
    import xgboost as xgb

    params = {**config["params"], "seed": int(config["seed"])}
    history: dict[str, Any] = {}
    booster = xgb.train(
        params,
        train,
        num_boost_round=int(config["num_boost_round"]),
        evals=[(validation, "validation")],
        callbacks=[early_stopping(config)],
        evals_result=history,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    curve = [float(v) for v in history["validation"][str(params["eval_metric"])]]
    return FittedRanker(booster[: best + 1], best, curve[best], curve)


def fit_variant(
    train: pd.DataFrame, validation: pd.DataFrame, config: dict[str, Any], debiasing: str
) -> FittedRanker:
    """Fit one debiasing variant of the configured ranker on training rows."""
    variant = variant_params(config, debiasing)
    stream = uses_stream_features(config)
    return fit_ranker(
        frame_matrix(train, debiasing, stream, stale_stream_share(config)),
        frame_matrix(validation, debiasing, stream),
        variant,
    )


class TrainingData(Protocol):
    """The rows of a training window as an engine holds them, and how it fits a ranker on them."""

    @property
    def train_rows(self) -> int:
        """Rows fitted on."""
        ...

    @property
    def validation_rows(self) -> int:
        """Rows early stopping watches."""
        ...

    @property
    def engine(self) -> dict[str, Any]:
        """The engine and what fixes its result (the lineage records it)."""
        ...

    def fit(self, config: dict[str, Any], debiasing: str) -> FittedRanker:
        """Fit one debiasing variant of the configured ranker."""
        ...

    def groups_sample(self, max_rows: int) -> TrainingData:
        """About ``max_rows`` training rows in whole query groups (itself when it has fewer)."""
        ...

    def release(self) -> None:
        """Free what the rows hold (an executor cache)."""
        ...


@dataclass(frozen=True)
class LocalRows:
    """Training and validation rows collected to this process (the ``local`` engine)."""

    train: pd.DataFrame
    validation: pd.DataFrame

    @property
    def train_rows(self) -> int:
        """Rows fitted on."""
        return len(self.train)

    @property
    def validation_rows(self) -> int:
        """Rows early stopping watches."""
        return len(self.validation)

    @property
    def engine(self) -> dict[str, Any]:
        """The local engine: one process, ``params.nthread`` threads."""
        return {"engine": "local"}

    def fit(self, config: dict[str, Any], debiasing: str) -> FittedRanker:
        """Fit one debiasing variant with ``xgb.train`` in this process."""
        return fit_variant(self.train, self.validation, config, debiasing)

    def groups_sample(self, max_rows: int) -> LocalRows:
        """About ``max_rows`` training rows in whole query groups, the validation rows whole.

        A group is kept when the hash of its ``(ds, qid)`` falls below a cut, so a rerun keeps
        the same groups and the rows stay in query order.
        """
        import pandas as pd

        if len(self.train) <= max_rows:
            return self
        hashes = pd.util.hash_pandas_object(self.train[["ds", "qid"]], index=False).to_numpy()
        cut = GROUP_HASH_BUCKETS * max_rows // len(self.train)
        kept = self.train[hashes % GROUP_HASH_BUCKETS < cut].reset_index(drop=True)
        return LocalRows(kept, self.validation)

    def release(self) -> None:
        """Nothing to free: the frames go with the object."""


def model_bytes(booster: xgb.Booster) -> bytes:
    """The model as XGBoost JSON bytes: what MLflow stores, scoring loads and lineage hashes."""
    return bytes(booster.save_raw(raw_format="json"))


def booster_from_bytes(raw: bytes, nthread: int = 1) -> xgb.Booster:
    """Load an XGBoost JSON model from bytes (used once per executor process)."""
    import xgboost as xgb

    booster = xgb.Booster(params={"nthread": nthread})
    booster.load_model(bytearray(raw))
    return booster
