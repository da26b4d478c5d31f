"""What monitoring measures each night, in Spark: drift, scores, list health, publishing."""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.sql import functions as F

from rankflow.config import Settings
from rankflow.days import day
from rankflow.evaluation.lists import gini, list_health_spark
from rankflow.features.registry import MODEL_FEATURES
from rankflow.lake.tables import read_features, read_partition, read_ranked, read_table
from rankflow.monitoring.rules import (
    Figure,
    finite,
    jensen_shannon,
    psi,
)
from rankflow.store.client import redis_client

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

OFFLINE_METRICS = ("ndcg@10", "ipw_ndcg@10", "truth_ndcg@10")


def user_sample(frame: DataFrame, percent: float, seed: int) -> DataFrame:
    """Keep the rows of a fixed hash sample of users (the same users whatever the day)."""
    bucket = F.pmod(F.xxhash64(F.col("user_id"), F.lit(seed)), F.lit(10_000))
    return frame.where(bucket < F.lit(round(percent * 100)))


def quantile_edges(frame: DataFrame, columns: list[str], bins: int) -> dict[str, list[float]]:
    """Return each column's inner bin edges: the reference's deciles (or ``bins``-iles), deduped."""
    probabilities = [i / bins for i in range(1, bins)]
    quantiles = frame.approxQuantile(columns, probabilities, 0.001)
    return {name: sorted(set(q)) for name, q in zip(columns, quantiles, strict=True)}


def bin_index(column: str, edges: list[float]) -> Column:
    """Bin of a value: 0..len(edges) by the edges it exceeds, len(edges) + 1 for null / NaN."""
    value = F.col(column)
    index = sum((F.when(value > edge, 1).otherwise(0) for edge in edges), F.lit(0))
    return F.when(value.isNull() | F.isnan(value), len(edges) + 1).otherwise(index)


def binned_counts(frame: DataFrame, edges: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Count the rows of each bin of every column in one pass (one small row per bin)."""
    pairs = F.explode(
        F.array(
            *[
                F.struct(F.lit(name).alias("column"), bin_index(name, cuts).alias("bin"))
                for name, cuts in edges.items()
            ]
        )
    ).alias("pair")
    rows = frame.select(pairs).groupBy("pair.column", "pair.bin").count().collect()
    counts = {name: np.zeros(len(cuts) + 2) for name, cuts in edges.items()}
    for row in rows:
        counts[row["column"]][int(row["bin"])] = row["count"]
    return counts


def drift_figures(
    reference: DataFrame, current: DataFrame, columns: list[str], bins: int, group: str
) -> list[Figure]:
    """``<group>_psi`` and ``<group>_js`` of each column (the subject), on the reference's bins."""
    edges = quantile_edges(reference, columns, bins)
    before, after = binned_counts(reference, edges), binned_counts(current, edges)
    figures = []
    for name in columns:
        figures.append(Figure(group, f"{group}_psi", psi(before[name], after[name]), name))
        figures.append(
            Figure(group, f"{group}_js", jensen_shannon(before[name], after[name]), name)
        )
    return figures


def feature_drift(
    spark: SparkSession, settings: Settings, ds: date, model_version: str
) -> list[Figure]:
    """Drift of every model input: the serving model's training window vs the scoring day.

    Both sides are the same population, logged impressions with the features they were shown
    with (the training set), so that what differs is time, not the selection: impressions
    favour what the old ranker showed, candidates do not, and comparing those would always
    read as drift.
    """
    from rankflow.features.registry import feature_vector
    from rankflow.model.registry import load_lineage

    config = settings.pipeline["monitoring"]
    window = load_lineage(settings, model_version)["window"]
    percent, seed = float(config["drift_sample_percent"]), int(config["sample_seed"])
    rows = read_table(spark, settings, "silver/training_set")

    def sample(start: str, end: str) -> DataFrame:
        days = F.col("ds").between(F.lit(start).cast("date"), F.lit(end).cast("date"))
        return user_sample(rows.where(days), percent, seed).select(*feature_vector())

    reference = sample(window["train_start"], window["train_end"])
    current = sample(ds.isoformat(), ds.isoformat())
    bins = int(config["bins"])
    return drift_figures(reference, current, list(MODEL_FEATURES), bins, "feature")


def previous_gold_day(spark: SparkSession, settings: Settings, ds: date, surface: str) -> Any:
    """Return the latest day before ``ds`` with gold lists of ``surface``, or None."""
    row = (
        read_table(spark, settings, "gold/rankings")
        .where((F.col("surface") == surface) & (F.col("ds") < day(ds)))
        .agg(F.max("ds").alias("ds"))
        .first()
    )
    return None if row is None else row["ds"]


def score_figures(
    spark: SparkSession, settings: Settings, ds: date, surface: str, model_version: str
) -> list[Figure]:
    """Score level of the day's lists, and its drift from the previous day scored by the same model.

    Ranking scores have no fixed scale, so a new model's scores are not compared with the old
    one's: the drift figure is left out the day the model changes.
    """

    def scores(day: date) -> DataFrame:
        ranked = read_ranked(spark, settings, day, surface)
        exploded = ranked.select("model_version", F.explode("scores").alias("score"))
        return exploded.select(
            F.col("model_version").cast("string").alias("model_version"),
            F.col("score").cast("double").alias("score"),
        )

    today = scores(ds)
    summary = today.agg(
        F.avg("score").alias("mean"), F.expr("percentile_approx(score, 0.5)")
    ).first()
    figures = [
        Figure("score", "score_mean", finite(summary[0] if summary else None)),
        Figure("score", "score_median", finite(summary[1] if summary else None)),
    ]
    previous = previous_gold_day(spark, settings, ds, surface)
    if previous is not None:
        before = scores(previous)
        versions = {r[0] for r in before.select("model_version").distinct().collect()}
        if versions == {model_version}:
            bins = int(settings.pipeline["monitoring"]["bins"])
            figures += drift_figures(before, today, ["score"], bins, "score")
    return figures


def list_health(
    spark: SparkSession, settings: Settings, ds: date, surface: str, top_k: int
) -> list[Figure]:
    """Coverage, empty lists, catalogue coverage, diversity and seller concentration.

    The catalogue, diversity and top-seller figures are the gate's :func:`list_health_spark`
    over the served lists (diversity at the gate's depth); the Gini counts every seller with a
    live item, including those without a slot.
    """
    depth = int(settings.pipeline["evaluation"]["overlap_depth"])
    ranked = read_ranked(spark, settings, ds, surface).select("user_id", "item_ids")
    items = read_features(spark, settings, ds).items.select(
        "item_id", "category", "seller_id", F.col("item_price").alias("price"), "is_sold"
    )
    eligible = read_partition(spark, settings, "silver/candidates", ds).select("user_id").distinct()
    counts = ranked.agg(
        F.count("*").alias("lists"),
        F.sum(F.when(F.size("item_ids") == 0, 1).otherwise(0)).alias("empty"),
        F.sum(F.when(F.size("item_ids") < top_k, 1).otherwise(0)).alias("short"),
    ).first()
    n_lists, empty, short = (
        int(counts[k] or 0) if counts else 0 for k in ("lists", "empty", "short")
    )
    users_with_list = ranked.where(F.size("item_ids") > 0).join(eligible, "user_id").count()
    entries = (
        ranked.select("user_id", F.posexplode("item_ids").alias("position", "item_id"))
        .join(F.broadcast(items.drop("is_sold")), "item_id", "left")
        .withColumn("rank", F.col("position") + 1)
    )
    live_items = items.where(~F.col("is_sold"))
    top_percent = float(settings.pipeline["evaluation"]["guardrails"]["top_seller_percent"])
    health = list_health_spark(entries, live_items.count(), top_percent, depth)
    slots = (
        live_items.select("seller_id")
        .distinct()
        .join(
            entries.where(F.col("rank") <= depth).groupBy("seller_id").agg(F.count("*").alias("n")),
            "seller_id",
            "left",
        )
        .fillna(0, ["n"])
        .select("n")
        .collect()
    )
    eligible_users = eligible.count()
    return [
        Figure("lists", "lists", float(n_lists)),
        Figure(
            "lists",
            "list_coverage",
            users_with_list / eligible_users if eligible_users else math.nan,
        ),
        Figure("lists", "empty_lists", float(empty)),
        Figure("lists", "short_list_share", short / n_lists if n_lists else math.nan),
        Figure("lists", "catalog_coverage", health["catalog_coverage"] or math.nan),
        Figure("lists", f"distinct_categories@{depth}", health["distinct_categories"]),
        Figure("lists", f"distinct_sellers@{depth}", health["distinct_sellers"]),
        Figure("lists", f"seller_exposure_gini@{depth}", gini(np.array([r[0] for r in slots]))),
        Figure("lists", f"top_seller_share@{depth}", health["top_seller_share"]),
    ]


def publish_figures(settings: Settings, ds: date, surface: str) -> list[Figure]:
    """What the night's publications wrote: users, bytes and durations in Redis and S3."""
    from rankflow.runs import read_run_record

    published = read_run_record(settings, ds, f"publish-redis-{surface}")
    exported = read_run_record(settings, ds, f"publish-s3-{surface}")
    with redis_client(settings.redis.url) as client:
        memory, keys = client.info("memory"), client.dbsize()
    return [
        Figure("publish", "published_users", float(published["users"])),
        Figure("publish", "redis_value_bytes", float(published["value_bytes"])),
        Figure("publish", "redis_bytes_per_user", float(published["bytes_per_user"])),
        Figure("publish", "redis_used_memory_bytes", float(memory["used_memory"])),
        Figure("publish", "redis_keys", float(keys)),
        Figure("publish", "redis_publish_seconds", finite(published.get("seconds"))),
        Figure("publish", "s3_users", float(exported["users"])),
        Figure("publish", "s3_bytes", float(exported["bytes"])),
        Figure("publish", "s3_publish_seconds", finite(exported.get("seconds"))),
    ]


def served_recall(spark: SparkSession, settings: Settings, ds: date, surface: str) -> list[Figure]:
    """Recall of the lists served during ``ds`` (published the night before) on its actions.

    Over the users who had a personal list and acted on items during ``ds`` (any event with a
    label gain), the mean share of those items their list held (``served_recall``), and that
    their candidates held (``candidate_recall``: the ceiling any ranking of them can reach).
    Nothing before the first night with a list of the day before.
    """
    served_day = ds - timedelta(days=1)
    lists = read_ranked(spark, settings, served_day, surface).where(F.size("item_ids") > 0)
    listed = lists.select("user_id", F.explode("item_ids").alias("item_id"))
    candidates = read_partition(spark, settings, "silver/candidates", served_day)
    return recall_figures(
        acted_items(spark, settings, ds), lists.select("user_id"), listed, candidates
    )


def acted_items(spark: SparkSession, settings: Settings, ds: date) -> DataFrame:
    """The distinct (user, item) pairs of ``ds``'s events that earn a label gain."""
    gains = list(settings.pipeline["labels"]["gains"])
    events = read_partition(spark, settings, "bronze/events", ds)
    return events.where(F.col("event_type").isin(*gains)).select("user_id", "item_id").distinct()


def recall_figures(
    acted: DataFrame, users: DataFrame, listed: DataFrame, candidates: DataFrame
) -> list[Figure]:
    """Mean per-user share of the ``acted`` items in ``listed`` and in ``candidates``."""
    per_user = (
        acted.join(users, "user_id", "inner")
        .join(listed.withColumn("in_list", F.lit(1)), ["user_id", "item_id"], "left")
        .join(
            candidates.select("user_id", "item_id").withColumn("in_candidates", F.lit(1)),
            ["user_id", "item_id"],
            "left",
        )
        .groupBy("user_id")
        .agg(
            (F.count("in_list") / F.count("*")).alias("served"),
            (F.count("in_candidates") / F.count("*")).alias("candidates"),
        )
    )
    totals = per_user.agg(F.count("*").alias("users"), F.avg("served"), F.avg("candidates")).first()
    if totals is None or not totals["users"]:
        return []
    return [
        Figure("lists", "served_recall", float(totals[1])),
        Figure("lists", "candidate_recall", float(totals[2])),
        Figure("lists", "recall_users", float(totals["users"])),
    ]


def sold_served_figures(
    repair: dict[str, Any] | None, version: str | None, served_after: int, share_after: float
) -> list[Figure]:
    """Sold items in the served lists: the share before the night's repair and the residual.

    The share before is what the repair removed of the lists it found (removed / (removed +
    entries served after it)); it is only measured when the latest repair ran on ``version``,
    the version the night published. The residual is what is still served after the repair.
    """
    figures = [
        Figure("lists", "served_sold_share", share_after),
        Figure("lists", "served_entries", float(served_after)),
    ]
    if repair is None or version is None or repair.get("version") != version:
        return figures
    removed = int(repair["entries_removed"])
    before = removed / (removed + served_after) if removed + served_after else 0.0
    return [
        Figure("lists", "served_sold_share_before_repair", before),
        Figure("lists", "sold_entries_removed", float(removed)),
        *figures,
    ]


def offline_figures(settings: Settings, ds: date) -> list[Figure]:
    """Held-out metrics of the serving model and the baselines (on nights that trained)."""
    import json

    from rankflow.runs import run_record_path

    path = run_record_path(settings, ds, "evaluation")
    if not path.exists():
        return []
    evaluation = json.loads(path.read_text())
    table: dict[str, dict[str, float]] = evaluation["table"]
    serving = "challenger" if evaluation["gate"]["promote"] else "champion"
    subjects = {name: row for name, row in table.items() if name not in ("challenger", "champion")}
    if serving in table:
        subjects["champion"] = table[serving]
    figures = [
        Figure("offline", metric, float(row[metric]), subject)
        for subject, row in subjects.items()
        for metric in OFFLINE_METRICS
        if row.get(metric) is not None
    ]
    gate_metric = str(settings.pipeline["evaluation"]["gate_metric"])
    champion, popularity = subjects.get("champion", {}), subjects.get("popularity", {})
    if champion.get(gate_metric) and popularity.get(gate_metric):
        lift = float(champion[gate_metric]) / float(popularity[gate_metric]) - 1
        figures.append(Figure("offline", "champion_lift_over_popularity", lift))
    return figures


def skew_figures(settings: Settings, ds: date) -> list[Figure]:
    """The skew check's figures (none on a night it did not run or nothing was served)."""
    import json

    from rankflow.runs import run_record_path

    path = run_record_path(settings, ds, "skew-check")
    if not path.exists():
        return []
    report = json.loads(path.read_text())
    figures = [
        Figure("serving", "serving_model_refusals", float(len(report.get("model_refusals", [])))),
        Figure("skew", "skew_answers_replayed", float(report["replayed"])),
        Figure("skew", "skew_unreplayable_answers", float(report["unreplayable"])),
    ]
    if report["answers"]:
        share = report["fallbacks"] / report["answers"]
        figures.append(Figure("serving", "serving_fallback_share", share))
    for metric in ("score_parity", "topk_parity"):
        if report[metric] is not None:
            figures.append(Figure("skew", f"skew_{metric}", float(report[metric])))
    figures += [
        Figure("skew", f"skew_{metric}", float(value), feature)
        for feature, rates in sorted(report["features"].items())
        for metric, value in rates.items()
        if metric != "rows"
    ]
    return figures


def relative_change(figures: list[Figure], past: list[dict[str, Any]], metric: str) -> list[Figure]:
    """Change of a figure against its value on the latest earlier day (none on the first day)."""
    today = next((f.value for f in figures if f.metric == metric), None)
    earlier = sorted((r for r in past if r["metric"] == metric), key=lambda r: r["ds"])
    if today is None or not earlier or not earlier[-1]["value"]:
        return []
    return [Figure("publish", f"{metric}_change", today / float(earlier[-1]["value"]) - 1)]
