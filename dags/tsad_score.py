"""Daily scoring: wait for the day, ingest it, validate it, score it, deliver it, flag drift.

One scoring DAG per dataset spec (``configs/datasets/*.yaml``, see :mod:`pipeline.schedules`):
``tsad_score`` for ``vitals``, ``tsad_score_<name>`` for every other, each on its spec's
``scoring.schedule``, its ``dataset`` Param defaulting to its own dataset.

``wait_for_day`` looks for the day (its landing partition, or rows in the dataset's SQL
source) until the spec's ``landing.wait`` after the day's end, then fails as "not landed by"
(nothing is quarantined). ``ingest`` snapshots a SQL source's day into the landing tree (a
no-op for datasets whose producers land files), ``deliver`` fills the spec's sink tables.

The partition is the run's data interval start, so a backfill of a past day scores that day;
the ``date`` Param overrides it for manual and asset-triggered runs (which have no interval).
The day is scored as entity shards (the spec's ``scoring.shards``, or the ``shards`` Param):
``score`` is mapped over them (one task instance per shard, on whichever worker the executor
picks, retried alone when it fails), each committing its part; ``finalize`` then commits the
day once every shard is there: the scores (every alarm with its top features),
``summary.json`` and the daily ``report.html``, the same as one task scoring the whole day.
When the day drifted beyond the dataset's ``monitoring.drift_level``, ``signal_drift`` emits an
event on the dataset's drift Asset (``tsad_drift`` for ``vitals``, ``tsad_drift_<name>`` for the
others; extra: dataset, date, model version, drifted features); the dataset's training DAG runs
on it. Otherwise the task is skipped and no event is emitted.

The dataset's owners (``notifications.owners`` in its spec) are e-mailed through Airflow's SMTP
notifier and the ``smtp_default`` connection, and its Slack channel
(``notifications.slack_channel``) gets the same through the Slack webhook notifier and the
``slack_default`` connection: a failed task or a quarantined day, a drifted day, and, after
each scored day, the digest of its top alarm episodes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, PokeReturnValue, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.timetables.interval import CronDataIntervalTimetable

from pipeline.choices import NAME_PATTERN
from pipeline.schedules import DatasetSchedule, dataset_schedules

IO_RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=20), "retry_exponential_backoff": True}
# A day is scored in bounded memory and well within these; a hung task fails instead of waiting.
SHORT = {"execution_timeout": timedelta(minutes=10)}
COMPUTE = {"execution_timeout": timedelta(hours=2)}
SMTP_CONNECTION = "smtp_default"
SLACK_CONNECTION = "slack_default"
# The longest wait for a day a dataset spec may ask for (landing.wait), and a backstop to it.
MAX_WAIT = timedelta(hours=12)


def partition_date(params: dict, data_interval_start: datetime | None) -> str:
    """The day to score: the ``date`` Param when given, else the data interval's start."""
    if params.get("date"):
        return params["date"]
    if data_interval_start is None:
        raise AirflowFailException("this run has no data interval: pass the 'date' Param")
    return data_interval_start.strftime("%Y-%m-%d")


def connection_urls(dataset: str) -> dict[str, str]:
    """SQLAlchemy URLs of the dataset's source (``"source"``) and sinks (by table) whose spec
    names an Airflow connection; the others read theirs from their ``url_env`` variable."""
    from airflow.sdk import Connection

    from pipeline.config import DatasetSpec
    from pipeline.data.sources import sqlalchemy_url

    spec = DatasetSpec.load(dataset)
    named = {sink.table: sink.connection for sink in spec.sinks}
    named["source"] = spec.source.connection if spec.source else None
    return {
        role: sqlalchemy_url(Connection.get(conn_id).get_uri())
        for role, conn_id in named.items()
        if conn_id
    }


def configured(connection: str) -> bool:
    """Whether Airflow knows a connection: without ``smtp_default`` mail is off, without
    ``slack_default`` Slack."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        Connection.get(connection)
    except AirflowNotFoundException:
        return False
    return True


def notify_owners(dataset: str, subject: str, body: str, context) -> bool:
    """E-mail the dataset's owners through the SMTP notifier, and post to its Slack channel
    through the Slack webhook notifier.

    Each goes out only where the dataset names its recipients (``notifications.owners``,
    ``notifications.slack_channel``) and the connection is configured; False when nothing was
    sent (a deployment without mail or Slack scores all the same).
    """
    from html import escape

    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from pipeline import digest, steps
    from pipeline.slack import slack_text

    sent = False
    owners = steps.owners(dataset)
    if owners and configured(SMTP_CONNECTION):
        html = f"<pre>{escape(body)}</pre>"
        SmtpNotifier(to=owners, subject=subject, html_content=html).notify(context)
        sent = True
    if steps.slack_channel(dataset) and configured(SLACK_CONNECTION):
        text = slack_text(digest.Message(subject, body))
        SlackWebhookNotifier(slack_webhook_conn_id=SLACK_CONNECTION, text=text).notify(context)
        sent = True
    return sent


def settings_from_connections(context) -> None:
    """Before each task: MLflow and object-store settings from the ``mlflow_default`` and
    ``aws_default`` connections where they are configured (else the environment's stay)."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from pipeline.connection_settings import export_connections

    export_connections(Connection.get, AirflowNotFoundException)


def on_task_failure(context) -> None:
    """A failed task tells the owners; a day rejected by validation was quarantined."""
    from pipeline import digest

    ti, error = context["ti"], context.get("exception")
    quarantined = ti.task_id in ("ingest", "validate") and isinstance(error, AirflowFailException)
    params = context["params"]
    message = digest.compose_alert(
        "quarantined" if quarantined else f"task {ti.task_id} failed",
        params["dataset"],
        params.get("date") or str(context.get("data_interval_start") or "")[:10] or None,
        f"{type(error).__name__}: {error}\nLog: {getattr(ti, 'log_url', '')}",
    )
    notify_owners(params["dataset"], message.subject, message.body, context)


def landed_day():
    """Wait for the day, then snapshot it from its source: the ``ingest`` task's output (the day).

    The sensor is rescheduled between looks (no worker slot held); the spec's
    ``landing.wait`` sets the deadline, past which it fails as "not landed by ..." (its own
    timeout is only a backstop).
    """

    @task.sensor(
        poke_interval=300,
        timeout=MAX_WAIT.total_seconds(),
        mode="reschedule",
        **IO_RETRIES,
        **SHORT,
    )
    def wait_for_day(params: dict | None = None, data_interval_start=None) -> PokeReturnValue:
        from pipeline import steps
        from pipeline.config import parse_date

        assert params is not None  # Airflow passes every run its Params
        day = partition_date(params, data_interval_start)
        url = connection_urls(params["dataset"]).get("source")
        try:
            landed = steps.has_landed(params["dataset"], parse_date(day), url=url)
        except steps.NotLanded as exc:
            raise AirflowFailException(str(exc)) from exc
        return PokeReturnValue(is_done=landed, xcom_value=day)

    @task(**IO_RETRIES, **COMPUTE)
    def ingest(day: str, params: dict | None = None) -> str:
        from pipeline import steps
        from pipeline.config import parse_date

        assert params is not None  # Airflow passes every run its Params
        url = connection_urls(params["dataset"]).get("source")
        try:
            steps.ingest(params["dataset"], parse_date(day), url=url)
        except steps.BatchRejected as exc:
            raise AirflowFailException(str(exc)) from exc
        return day

    return ingest(wait_for_day())


def sharded_score(day):
    """Score the day as its shards (mapped: one task instance each), then commit it.

    Returns the ``finalize`` task's output, the day's scores file, which every later task reads.
    A failed shard is retried alone; the day is committed once, by ``finalize``.
    """

    @task(**IO_RETRIES, **SHORT)
    def plan_shards(day: str, params: dict | None = None) -> list[str]:
        """The day's shards as ``K/N``: the ``shards`` Param, else the spec's count."""
        from pipeline.config import DatasetSpec

        assert params is not None  # Airflow passes every run its Params
        count = params.get("shards") or DatasetSpec.load(params["dataset"]).scoring.shards
        return [f"{index}/{count}" for index in range(count)]

    @task(map_index_template="{{ shard }}", **IO_RETRIES, **COMPUTE)
    def score(day: str, shard: str, params: dict | None = None) -> str:
        """One shard of the day (retried alone when it fails); its part is committed apart."""
        from pipeline import steps
        from pipeline.config import parse_date
        from pipeline.sharding import Shard

        assert params is not None  # Airflow passes every run its Params
        get_current_context()["shard"] = f"shard {shard}"  # type: ignore[typeddict-unknown-key]
        return steps.score_shard(params["dataset"], parse_date(day), Shard.parse(shard))

    @task(**IO_RETRIES, **COMPUTE)
    def finalize(day: str, parts: list[str], params: dict | None = None) -> str:
        """Commit the day once every shard's part is there: what the later tasks read."""
        from pipeline import steps
        from pipeline.config import parse_date

        assert params is not None  # Airflow passes every run its Params
        return steps.finalize(params["dataset"], parse_date(day), len(list(parts)))

    parts = score.partial(day=day).expand(shard=plan_shards(day))
    return finalize(day, parts)


def scored_day_outputs(scores, drift):
    """Fill the sinks, signal drift on the dataset's ``drift`` Asset, send the digest."""

    @task(**IO_RETRIES, **SHORT)
    def deliver(scores_path: str, params: dict | None = None) -> dict[str, int]:
        from pipeline import steps
        from pipeline.config import parse_date

        assert params is not None  # Airflow passes every run its Params
        day = parse_date(steps.drift_status(scores_path)["date"])
        return steps.deliver(params["dataset"], day, urls=connection_urls(params["dataset"]))

    @task(outlets=[drift], **IO_RETRIES, **SHORT)
    def signal_drift(scores_path: str, *, outlet_events=None) -> dict:
        from pipeline import digest, steps

        status = steps.drift_status(scores_path)
        if not status["drifted"]:
            raise AirflowSkipException(f"{status['dataset']} {status['date']}: no drift")
        outlet_events[drift].extra = status
        notice = digest.compose_alert(
            "drifted",
            status["dataset"],
            status["date"],
            f"Drifted features: {', '.join(status['drifted_features']) or 'none'}; "
            f"score PSI {status['score_psi']}. Retraining may be due.",
        )
        notify_owners(status["dataset"], notice.subject, notice.body, get_current_context())
        return status

    @task(**IO_RETRIES, **SHORT)
    def send_digest(scores_path: str, params: dict | None = None) -> str:
        from pipeline import steps
        from pipeline.config import parse_date

        assert params is not None  # Airflow passes every run its Params
        status = steps.drift_status(scores_path)
        message = steps.day_digest(status["dataset"], parse_date(status["date"]))
        if not notify_owners(
            status["dataset"], message.subject, message.body, get_current_context()
        ):
            raise AirflowSkipException(
                f"{status['dataset']}: no owners or Slack channel with a configured "
                f"{SMTP_CONNECTION} or {SLACK_CONNECTION} connection to notify"
            )
        return message.subject

    deliver(scores)
    signal_drift(scores)
    send_digest(scores)


def scoring_dag(plan: DatasetSchedule):
    """The scoring DAG of one dataset: its schedule, its shard count (the ``shards`` Param)."""
    drift = Asset(name=plan.drift_asset, uri=plan.drift_uri)  # the dataset's training listens

    @dag(
        dag_id=plan.score_dag_id,
        schedule=CronDataIntervalTimetable(plan.score_schedule, timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=4,
        dagrun_timeout=MAX_WAIT + timedelta(hours=6),
        tags=["tsad", "scoring", plan.dataset],
        doc_md=__doc__,
        default_args={
            "on_execute_callback": settings_from_connections,
            "on_failure_callback": on_task_failure,
        },
        params={
            "dataset": Param(plan.dataset, type="string", pattern=NAME_PATTERN),
            "date": Param(
                None,
                type=["null", "string"],
                format="date",
                description="YYYY-MM-DD; default: the run's data interval start",
            ),
            "shards": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                maximum=1024,
                description=f"entity shards, one task each; default: the spec's ({plan.shards})",
            ),
        },
    )
    def tsad_score():
        @task(**IO_RETRIES, **COMPUTE)
        def validate(day: str, params: dict | None = None) -> str:
            from pipeline import steps
            from pipeline.config import parse_date

            assert params is not None  # Airflow passes every run its Params
            try:
                steps.validate(params["dataset"], parse_date(day))
            except steps.BatchRejected as exc:
                raise AirflowFailException(str(exc)) from exc
            return day

        scored_day_outputs(sharded_score(validate(landed_day())), drift)

    return tsad_score()


for _plan in dataset_schedules():
    scoring_dag(_plan)
