"""The promotion ledger: an append-only Delta table of gate decisions, alias moves, publications.

It answers "which model produced the list user X saw at time T" by replaying the publications and
rollbacks of a surface up to T.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from rankflow.config import Settings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

LEDGER_TABLE = "ops/promotion_ledger"
# events that change what readers of a surface are served
SERVING_EVENTS = ("publish_redis", "rollback")
EVENTS = (
    "gate",
    "promote",
    "evaluate_backfill",
    "manual_promote",
    "rollback",
    "publish_redis",
    "publish_s3",
)


@dataclass(frozen=True)
class LedgerEvent:
    """One ledger row; ``event_id`` is derived, so a retried task records its event once."""

    event: str
    event_time: datetime
    ds: date | None = None
    surface: str | None = None
    model_version: str | None = None
    previous_champion: str | None = None
    gate_promote: bool | None = None
    gate_reason: str | None = None
    gate_json: str | None = None
    airflow_run_id: str | None = None
    redis_version: str | None = None
    gold_version: int | None = None
    s3_prefix: str | None = None
    actor: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        """Refuse unknown event kinds (the ledger's vocabulary is closed)."""
        if self.event not in EVENTS:
            raise ValueError(f"unknown ledger event {self.event!r}; one of {EVENTS}")

    @property
    def event_id(self) -> str:
        """Stable id of the event: the same task retried for the same run yields the same id.

        Manual events (no Airflow run) include their time, so two rollbacks are two events.
        """
        key = [
            self.event,
            self.surface,
            self.ds,
            self.model_version,
            self.redis_version,
            self.s3_prefix,
            self.airflow_run_id,
        ]
        if self.airflow_run_id is None:
            key.append(self.event_time.isoformat())
        return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:24]

    def as_row(self) -> dict[str, Any]:
        """The row written to Delta."""
        return {"event_id": self.event_id, **asdict(self)}


SPARK_SCHEMA = (
    "event_id string, event string, event_time timestamp, ds date, surface string, "
    "model_version string, previous_champion string, gate_promote boolean, gate_reason string, "
    "gate_json string, airflow_run_id string, redis_version string, gold_version long, "
    "s3_prefix string, "
    "actor string, reason string"
)
COLUMNS = ["event_id", *[f.name for f in fields(LedgerEvent)]]


def now() -> datetime:
    """The current UTC time (ledger times are UTC)."""
    return datetime.now(UTC)


APPEND_ATTEMPTS = 8  # concurrent appends retried: each retry sees the rows the winner wrote


def create_ledger(spark: SparkSession, path: str) -> None:
    """Create the empty append-only ledger unless it exists (safe when two tasks race to it)."""
    from rankflow.lake.tables import delta_path

    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {delta_path(path)} ({SPARK_SCHEMA}) USING delta "
        "TBLPROPERTIES ('delta.appendOnly' = 'true')"
    )


def merge_new(spark: SparkSession, path: str, frame: Any) -> int:
    """Insert the frame's events whose id the ledger lacks, in one Delta transaction."""
    from rankflow.lake.tables import delta_path

    view = f"ledger_events_{uuid.uuid4().hex}"
    frame.createOrReplaceTempView(view)
    try:
        # a column added by a later release joins the table (schema evolution, insert-only)
        metrics = spark.sql(
            f"MERGE WITH SCHEMA EVOLUTION INTO {delta_path(path)} AS ledger USING {view} AS new "
            "ON ledger.event_id = new.event_id WHEN NOT MATCHED THEN INSERT *"
        ).first()
    finally:
        spark.catalog.dropTempView(view)
    return int(metrics["num_inserted_rows"]) if metrics is not None else 0


def is_concurrent_commit(error: Exception) -> bool:
    """Tell whether Delta refused a commit because another one won the race (worth a retry).

    The refusal names either its Java class (``io.delta.exceptions.ConcurrentAppendException``,
    ``ProtocolChangedException``, ``MetadataChangedException``) or only its error condition
    (``[DELTA_CONCURRENT_APPEND.WITHOUT_HINT]``, ``DELTA_PROTOCOL_CHANGED``,
    ``DELTA_METADATA_CHANGED``), depending on the path it took to Python: match both spellings.
    """
    text = str(error).upper().replace("_", "")
    return any(name in text for name in ("CONCURRENT", "PROTOCOLCHANGED", "METADATACHANGED"))


def append_events(spark: SparkSession, settings: Settings, events: list[LedgerEvent]) -> int:
    """Append the events whose id is not in the ledger yet (a retry records nothing twice).

    One MERGE inserts what is new: Delta checks, at commit, that no concurrent transaction added
    rows the MERGE would have matched, so two tasks appending the same event at the same moment
    record it once (the loser retries and finds it). The table is created with
    ``delta.appendOnly = true``, so Delta itself refuses updates and deletes. Returns how many
    rows were appended.
    """
    path = settings.paths.table(LEDGER_TABLE)
    rows = [event.as_row() for event in events]
    frame = spark.createDataFrame([[row[c] for c in COLUMNS] for row in rows], SPARK_SCHEMA)
    attempt = 1
    while True:
        try:
            create_ledger(spark, path)
            return merge_new(spark, path, frame)
        except Exception as error:
            if attempt >= APPEND_ATTEMPTS or not is_concurrent_commit(error):
                raise
        time.sleep(random.uniform(0.05, 0.3) * attempt)  # jittered, so the racers part
        attempt += 1


def record_event(spark: SparkSession, settings: Settings, event: str, **values: Any) -> None:
    """Append one event to the promotion ledger (once, however often the task is retried)."""
    append_events(spark, settings, [LedgerEvent(event, now(), **values)])


def read_ledger(spark: SparkSession, settings: Settings) -> pd.DataFrame:
    """The whole ledger as pandas, oldest first (it grows by a few rows per night)."""
    import pandas as pd

    from rankflow.lake.tables import table_exists

    path = settings.paths.table(LEDGER_TABLE)
    if not table_exists(spark, path):
        return pd.DataFrame(columns=COLUMNS)
    frame: pd.DataFrame = spark.read.format("delta").load(path).toPandas()
    frame = frame.reindex(columns=COLUMNS)  # rows written before a column existed
    return frame.sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class ServedBy:
    """Which publication readers of a surface were served at a time, and its model."""

    surface: str
    at: datetime
    redis_version: str | None
    model_version: str | None
    ds: date | None
    airflow_run_id: str | None
    since: datetime | None
    gold_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the CLI)."""
        return {
            k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(self).items()
        }


def served_at(ledger: pd.DataFrame, surface: str, at: datetime) -> ServedBy:
    """Replay publications and rollbacks of ``surface`` up to ``at``: what readers saw then."""
    import pandas as pd

    rows = ledger[
        ledger["event"].isin(SERVING_EVENTS)
        & (ledger["surface"] == surface)
        & (pd.to_datetime(ledger["event_time"], utc=True) <= pd.Timestamp(at))
    ]
    if rows.empty:
        return ServedBy(surface, at, None, None, None, None, None)
    last = rows.iloc[-1]
    publication = ledger[
        (ledger["event"] == "publish_redis")
        & (ledger["surface"] == surface)
        & (ledger["redis_version"] == last["redis_version"])
    ]
    # a rollback serves an earlier publication again: its day, run and gold version
    origin = publication.iloc[0] if len(publication) else last
    gold = origin["gold_version"]
    return ServedBy(
        surface,
        at,
        last["redis_version"],
        last["model_version"],
        origin["ds"],
        origin["airflow_run_id"],
        pd.Timestamp(last["event_time"]).to_pydatetime(),
        None if pd.isna(gold) else int(gold),
    )


def list_of_user(
    spark: SparkSession, settings: Settings, served: ServedBy, user_id: int
) -> dict[str, Any]:
    """Say which list ``user_id`` got from a publication: its own, or the fallback list.

    The user's own list is read from gold at the Delta version that publication used.
    """
    from pyspark.sql import functions as F

    if served.ds is None or served.gold_version is None:
        return {"user_id": user_id, "list": None, "reason": "no publication recorded by then"}
    gold = (
        spark.read.format("delta")
        .option("versionAsOf", served.gold_version)
        .load(settings.paths.table("gold/rankings"))
        .where(
            (F.col("ds") == F.lit(str(served.ds)).cast("date"))
            & (F.col("surface") == served.surface)
            & (F.col("user_id") == user_id)
        )
        .select("model_version", "item_ids")
        .collect()
    )
    if not gold:
        return {"user_id": user_id, "list": "fallback", "model_version": None}
    return {
        "user_id": user_id,
        "list": "personal",
        "model_version": gold[0]["model_version"],
        "items": list(gold[0]["item_ids"])[:10],
    }
