"""Hourly: items sold since the lists were built leave the lists readers get.

### rankflow sold-item repair

Items on a second-hand marketplace are unique and sell within hours. Every hour this DAG applies
all sales so far to the **current** Redis version of each surface: lists holding a sold item are
rewritten in place without it (no re-ranking, no new version; each key is replaced whole, so a
reader still gets one complete list of one version). The repair always recomputes the lists from
the gold files they were published from minus every sale up to now, so a retry or a rerun of an
older hour is safe (it never puts a sold item back).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from rankflow.config import SURFACES


@dag(
    dag_id="rankflow_sold_items",
    schedule="5 * * * *",
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=50),
    default_args={"owner": "ranking", "retries": 2, "retry_delay": timedelta(minutes=2)},
    doc_md=__doc__,
    tags=["rankflow"],
)
def rankflow_sold_items() -> None:
    """Repair each surface's current lists (see the module docstring)."""

    @task
    def repair(surface: str) -> dict:
        """Remove the items sold so far from ``surface``'s current lists; skip if none is live."""
        from airflow.sdk.exceptions import AirflowSkipException

        from rankflow.publish.repair import RepairError, repair_and_record
        from rankflow_connections import connected_settings

        try:
            return repair_and_record(connected_settings(), surface).as_dict()
        except RepairError as error:
            raise AirflowSkipException(str(error)) from error

    repair.expand(surface=list(SURFACES))


rankflow_sold_items()
