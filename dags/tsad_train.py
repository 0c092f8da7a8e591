"""Retraining: ingest, validate, prepare, train, calibrate, select, evaluate, register, promote.

One training DAG per dataset spec with a run config (see :mod:`pipeline.schedules`):
``tsad_train`` for ``vitals``, ``tsad_train_<name>`` for every other, on the spec's
``training.schedule`` (weekly by default), its ``run_config`` Param defaulting to the
dataset's. It also runs when one of the dataset's scored days drifts (an event on the
dataset's drift Asset, Airflow's combined asset-or-time schedule), for the dataset the event
names; ``TSAD_RETRAIN_ON_DRIFT=false`` where the DAG processor parses this file leaves it on its
schedule only.

Training and calibration are mapped over the run's candidate detectors (dynamic task mapping:
one ``train`` and one ``calibrate`` task instance per candidate; one of each when the run
config lists none); ``select`` keeps the best on the validation days, and only that one is
evaluated on the test days, registered and sent through the promotion gate.

Only wiring lives here; every task calls one function of ``pipeline.steps`` (imported inside the
task so parsing this file stays fast and free of torch, pandas and mlflow). A failed task
e-mails the dataset's owners through Airflow's SMTP notifier (``smtp_default``) and posts to
its Slack channel through the Slack webhook notifier (``slack_default``).

Training runs in the ``gpu`` pool (its slots, ``TSAD_GPU_POOL_SLOTS``, are set where Airflow's
database is initialised) and on the ``gpu`` queue: the pool caps concurrent training tasks
(candidates and DAG runs alike), the queue picks the workers. Every task has an
``execution_timeout`` and the run a ``dagrun_timeout``, so a hung step fails and frees its
slot instead of holding it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

from pipeline.choices import CALIBRATION_METHODS, DETECTOR_NAMES, NAME_PATTERN
from pipeline.schedules import DRIFT_ASSET, DatasetSchedule, dataset_schedules

RETRAIN_ON_DRIFT = "TSAD_RETRAIN_ON_DRIFT"
SLACK = "slack_default"


def schedule(plan: DatasetSchedule):
    """The dataset's training schedule (its spec's ``training.schedule``), and every drift
    event of its scoring unless ``TSAD_RETRAIN_ON_DRIFT`` is false.

    Read when the file is parsed: set it where the DAG processor runs.
    """
    timetable = CronTriggerTimetable(plan.train_schedule, timezone="UTC")
    off = os.environ.get(RETRAIN_ON_DRIFT, "true").strip().lower() in {"false", "0", "no", "off"}
    drift = Asset(name=plan.drift_asset, uri=plan.drift_uri)
    return timetable if off else AssetOrTimeSchedule(timetable=timetable, assets=[drift])


def run_params(params: dict | None, triggering_asset_events) -> dict:
    """The run's Params; a run triggered by drift trains the dataset the event names."""
    from pipeline import steps

    drifts = [
        dict(event.extra or {})
        for asset, events in (triggering_asset_events or {}).items()
        if asset.name.startswith(DRIFT_ASSET)
        for event in events
    ]
    return steps.retraining_params(params, drifts)


def settings_from_connections(context) -> None:
    """Before each task: MLflow and object-store settings from the ``mlflow_default`` and
    ``aws_default`` connections where they are configured (else the environment's stay)."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from pipeline.connection_settings import export_connections

    export_connections(Connection.get, AirflowNotFoundException)


def on_task_failure(context) -> None:
    """A failed training task tells the owners of the dataset it trains for."""
    from html import escape

    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from pipeline import digest, steps
    from pipeline.slack import slack_text

    params = run_params(context["params"], context.get("triggering_asset_events"))
    dataset = steps.run_config_from_params(params).dataset
    owners, error = steps.owners(dataset), context.get("exception")
    message = digest.compose_alert(
        f"training task {context['ti'].task_id} failed",
        dataset,
        None,
        f"{type(error).__name__}: {error}",
    )
    if owners:
        html = f"<pre>{escape(message.body)}</pre>"
        SmtpNotifier(to=owners, subject=message.subject, html_content=html).notify(context)
    if steps.slack_channel(dataset) and slack_configured():
        SlackWebhookNotifier(slack_webhook_conn_id=SLACK, text=slack_text(message)).notify(context)


def slack_configured() -> bool:
    """Whether Airflow knows the ``slack_default`` connection: without it, Slack is off."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        Connection.get(SLACK)
    except AirflowNotFoundException:
        return False
    return True


IO_RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=20), "retry_exponential_backoff": True}
SHORT = {"execution_timeout": timedelta(minutes=30)}
COMPUTE = {"execution_timeout": timedelta(hours=2)}
TRAINING = {"execution_timeout": timedelta(hours=8)}
NAMED = {"map_index_template": "{{ candidate }}"}


def name_in_grid(candidate: str) -> None:
    """Show a mapped task instance by its candidate's name (``NAMED``) instead of its index."""
    get_current_context()["candidate"] = candidate  # type: ignore[typeddict-unknown-key]


def trained_and_chosen(run_dir):
    """Train and calibrate every candidate of the prepared run (mapped), then keep the best.

    Returns the ``select`` task's output: the run folder, now holding the winner.
    """

    @task(**IO_RETRIES, **SHORT)
    def candidates(run_dir: str) -> list[str]:
        from pipeline import steps

        return steps.candidate_runs(run_dir)

    @task(queue="gpu", pool="gpu", retries=1, retry_delay=timedelta(minutes=1), **NAMED, **TRAINING)
    def train(run_dir: str) -> str:
        from pipeline import steps

        name_in_grid(steps.candidate_name(run_dir))
        return steps.train(run_dir, resume=True)

    @task(**NAMED, **COMPUTE)
    def calibrate(run_dir: str) -> str:
        from pipeline import steps

        name_in_grid(steps.candidate_name(run_dir))
        return steps.calibrate(run_dir)

    @task(**IO_RETRIES, **SHORT)
    def select(run_dir: str, calibrated: list[str]) -> str:
        from pipeline import steps

        return steps.select(run_dir, list(calibrated))

    calibrated = calibrate.expand(run_dir=train.expand(run_dir=candidates(run_dir)))
    return select(run_dir, calibrated)


def validated_run_config():
    """Snapshot and validate every day of the run: the ``validate_days`` task's output, the
    run config (as JSON) the later tasks read."""

    @task(**IO_RETRIES, **COMPUTE)
    def ingest(params: dict | None = None, triggering_asset_events=None) -> str:
        """Snapshot every run day from the dataset's SQL source (a no-op without one)."""
        from airflow.sdk import Connection

        from pipeline import steps
        from pipeline.config import DatasetSpec
        from pipeline.data.sources import sqlalchemy_url

        config = steps.run_config_from_params(run_params(params, triggering_asset_events))
        source = DatasetSpec.load(config.dataset).source
        named = source.connection if source else None
        url = sqlalchemy_url(Connection.get(named).get_uri()) if named else None
        try:
            for day in steps.run_days(config):
                steps.ingest(config.dataset, day, url=url)
        except steps.BatchRejected as exc:
            raise AirflowFailException(str(exc)) from exc
        return config.model_dump_json()

    @task(**IO_RETRIES, **COMPUTE)
    def validate_days(config_json: str) -> str:
        from pipeline import steps
        from pipeline.config import RunConfig

        config = RunConfig.model_validate_json(config_json)
        try:
            steps.validate_days(config.dataset, steps.run_days(config))
        except steps.BatchRejected as exc:
            raise AirflowFailException(str(exc)) from exc
        return config.model_dump_json()

    return validate_days(ingest())


def training_dag(plan: DatasetSchedule):
    """The training DAG of one dataset: its schedule, its run config by default."""

    @dag(
        dag_id=plan.train_dag_id,
        schedule=schedule(plan),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=timedelta(hours=16),
        tags=["tsad", "training", plan.dataset],
        doc_md=__doc__,
        default_args={
            "on_execute_callback": settings_from_connections,
            "on_failure_callback": on_task_failure,
        },
        params={
            "run_config": Param(
                plan.run_config,
                type="string",
                pattern=NAME_PATTERN,
                description="configs/runs/<name>.yaml: the days and defaults",
            ),
            "dataset": Param(
                None,
                type=["null", "string"],
                pattern=NAME_PATTERN,
                description="override the run config's dataset",
            ),
            "detector": Param(
                None,
                type=["null", "string"],
                enum=[None, *DETECTOR_NAMES],
                description="override the run config's detector, and train it alone instead of "
                "the config's candidates (see `tsad detectors`)",
            ),
            "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=1000),
            "window": Param(None, type=["null", "integer"], minimum=2, maximum=4096),
            "calibration": Param(None, type=["null", "string"], enum=[None, *CALIBRATION_METHODS]),
        },
    )
    def tsad_train():
        @task(**IO_RETRIES, **COMPUTE)
        def prepare(config_json: str) -> str:
            from pipeline import steps
            from pipeline.config import RunConfig

            return steps.prepare(RunConfig.model_validate_json(config_json))

        @task(**COMPUTE)
        def evaluate(run_dir: str) -> str:
            from pipeline import steps

            return steps.evaluate(run_dir)

        @task(**IO_RETRIES, **SHORT)
        def register(run_dir: str) -> dict:
            from pipeline import steps

            return steps.register(run_dir)

        @task(**IO_RETRIES, **COMPUTE)
        def promote(version: dict, config_json: str) -> dict:
            from pipeline import steps
            from pipeline.config import RunConfig

            config = RunConfig.model_validate_json(config_json)
            return steps.promote_challenger(
                config.dataset, metric=config.promotion_metric
            ).to_dict()

        config_json = validated_run_config()
        promote(register(evaluate(trained_and_chosen(prepare(config_json)))), config_json)

    return tsad_train()


for _plan in dataset_schedules():
    if _plan.run_config is not None:
        training_dag(_plan)
