"""Every five minutes: is the event stream keeping today's features fresh?

### rankflow stream watch

The stream updaters (`rankflow stream`) keep the fresh online state: this session's events,
today's item counters, live sales and listings. For each partition of the event log this DAG
reads when an updater last reached its end and the event-to-visible lags of its last minute of
events, and fails (one alert per channel) when a partition is behind `stream.alert_behind_seconds`
or its p99 lag is over `stream.alert_freshness_seconds`. The ranking service does not wait for
the alert: it treats stream features as missing once an updater is `stream.stale_after_seconds`
behind. A deployment whose updaters never ran is not checked. `rankflow.monitoring.freshness`
holds the logic; the Ranking page shows the same figures.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from rankflow.config import stream_watch_retry_delay
from rankflow_alerts import failure_callbacks


@dag(
    dag_id="rankflow_stream_watch",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=4),
    default_args={
        "owner": "ranking",
        "retries": 1,  # one more look later (a minute by default): a restart is not an incident
        "retry_delay": stream_watch_retry_delay(),
        **failure_callbacks(),
    },
    doc_md=__doc__,
    tags=["rankflow", "stream"],
)
def rankflow_stream_watch() -> None:
    """Check the stream's freshness (see the module docstring)."""

    @task(execution_timeout=timedelta(minutes=1))
    def check_freshness() -> dict:
        """Every partition caught up and fresh within its bounds, or fail naming each one."""
        from rankflow.monitoring.freshness import watch_stream
        from rankflow_connections import connected_settings

        return watch_stream(connected_settings())

    check_freshness()


rankflow_stream_watch()
