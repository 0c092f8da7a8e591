"""Daily scoring: validate the day's batch, score it with the ``@production`` model, flag drift.

The partition is the run's data interval start, so a backfill of a past day scores that day;
the ``date`` Param overrides it for manual and asset-triggered runs (which have no interval).
Scoring writes the scores (every alarm with its top features), ``summary.json`` and the daily
``report.html``. When the day drifted beyond the dataset's ``monitoring.drift_level``,
``signal_drift`` emits an event on the ``tsad_drift`` Asset (extra: dataset, date, model
version, drifted features); a retraining DAG scheduled on that Asset runs on it. Otherwise the
task is skipped and no event is emitted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.timetables.interval import CronDataIntervalTimetable

from pipeline.choices import NAME_PATTERN

IO_RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=20), "retry_exponential_backoff": True}
# A day is scored in bounded memory and well within these; a hung task fails instead of waiting.
SHORT = {"execution_timeout": timedelta(minutes=10)}
COMPUTE = {"execution_timeout": timedelta(hours=2)}
DRIFT = Asset(name="tsad_drift", uri="tsad://drift")


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
    dagrun_timeout=timedelta(hours=6),
    tags=["tsad", "scoring"],
    doc_md=__doc__,
    params={
        "dataset": Param("vitals", type="string", pattern=NAME_PATTERN),
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="YYYY-MM-DD; default: the run's data interval start",
        ),
    },
)
def tsad_score():
    @task(**IO_RETRIES, **COMPUTE)
    def validate(params: dict | None = None, data_interval_start=None) -> str:
        from pipeline import steps
        from pipeline.config import parse_date

        assert params is not None  # Airflow passes every run its Params
        day = partition_date(params, data_interval_start)
        try:
            steps.validate(params["dataset"], parse_date(day))
        except steps.BatchRejected as exc:
            raise AirflowFailException(str(exc)) from exc
        return day

    @task(**IO_RETRIES, **COMPUTE)
    def score(day: str, params: dict | None = None) -> str:
        from pipeline import steps
        from pipeline.config import parse_date

        assert params is not None  # Airflow passes every run its Params
        return steps.score(params["dataset"], parse_date(day))

    @task(outlets=[DRIFT], **IO_RETRIES, **SHORT)
    def signal_drift(scores_path: str, *, outlet_events=None) -> dict:
        from pipeline import steps

        status = steps.drift_status(scores_path)
        if not status["drifted"]:
            raise AirflowSkipException(f"{status['dataset']} {status['date']}: no drift")
        outlet_events[DRIFT].extra = status
        return status

    signal_drift(score(validate()))


tsad_score()
