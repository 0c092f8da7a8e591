"""Daily scoring: validate the day's batch, then score it with the ``@production`` model.

The partition is the run's data interval start, so a backfill of a past day scores that day;
the ``date`` Param overrides it for manual and asset-triggered runs (which have no interval).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException
from airflow.timetables.interval import CronDataIntervalTimetable

IO_RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=20), "retry_exponential_backoff": True}


def partition_date(params: dict, data_interval_start: datetime | None) -> str:
    """The day to score: the ``date`` Param when given, else the data interval's start."""
    if params.get("date"):
        return params["date"]
    if data_interval_start is None:
        raise AirflowFailException("this run has no data interval: pass the 'date' Param")
    return data_interval_start.strftime("%Y-%m-%d")


@dag(
    dag_id="tsad_score",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["tsad", "scoring"],
    doc_md=__doc__,
    params={
        "dataset": Param("vitals", type="string", pattern="^[a-z0-9][a-z0-9_-]{0,63}$"),
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="YYYY-MM-DD; default: the run's data interval start",
        ),
    },
)
def tsad_score():
    @task(**IO_RETRIES)
    def validate(params: dict | None = None, data_interval_start=None) -> str:
        from pipeline import steps

        day = partition_date(params, data_interval_start)
        try:
            steps.validate(params["dataset"], day)
        except steps.BatchRejected as exc:
            raise AirflowFailException(str(exc)) from exc
        return day

    @task(**IO_RETRIES)
    def score(day: str, params: dict | None = None) -> str:
        from pipeline import steps

        return steps.score(params["dataset"], day)

    score(validate())


tsad_score()
