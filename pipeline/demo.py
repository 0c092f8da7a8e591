"""`tsad demo`: the whole loop, for real, on synthetic vital signs.

Generates ten days of bedside data for eight patients, breaks the last day on purpose (its
``spo2`` column is missing, as in a bad export), runs ``tsad_train`` and then ``tsad_score`` for
every scoring day through Airflow itself, and prints what happened: evaluation metrics, the
registered version and its alias, alarm minutes and episodes per day, and the quarantined day.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pandas as pd

from pipeline import steps
from pipeline.config import RunConfig, Settings
from pipeline.data import storage
from pipeline.orchestration import init_airflow, parse_dags, run_dag

DATASET = "vitals"
DAYS = 10
PATIENTS = 8
BROKEN_COLUMN = "spo2"
ONE_DAY = dt.timedelta(days=1)


def _break_last_day(settings: Settings, day: dt.date) -> None:
    """Rewrite one landing day without a feature column: the demo's bad batch."""
    landing = storage.fetch(settings, settings.partition("landing", DATASET, day))
    frame = pd.read_parquet(landing / "part-0.parquet").drop(columns=[BROKEN_COLUMN])
    with storage.publish(settings, landing) as staged:
        frame.to_parquet(staged / "part-0.parquet", index=False)


def scoring_days(config: RunConfig, days: int = DAYS) -> list[dt.date]:
    """The days after the run config's test day among ``days`` generated: scored by
    ``tsad_score``, the last one broken. At least two, or the demo would show one of them."""
    first = config.test.end + ONE_DAY
    last = config.train.start + (days - 1) * ONE_DAY
    if last <= first:
        needed = (first - config.train.start).days + 2
        raise ValueError(f"the demo needs at least {needed} days (one scored, one broken)")
    return [first + offset * ONE_DAY for offset in range((last - first).days + 1)]


def summarise(
    settings: Settings,
    config: RunConfig,
    days: list[dt.date],
    dataset: str = DATASET,
    alarm_unit: str = "alarm minutes",
) -> None:
    from pipeline import tracking

    client = tracking.connect(settings)
    name = settings.model_name(dataset)
    production = client.get_model_version_by_alias(name, tracking.PRODUCTION)
    metrics = {
        key.removeprefix("metric."): value
        for key, value in production.tags.items()
        if key.startswith("metric.")
    }
    print("\n=== tsad demo summary ===")
    print(f"registered model : {name} version {production.version} (alias @production)")
    print(
        f"threshold        : {production.tags.get('threshold')} "
        f"({production.tags.get('calibration_method')}, fitted on {config.validation.start})"
    )
    print(
        "test-day metrics : "
        + ", ".join(
            f"{key}={float(metrics[key]):.3f}"
            for key in (
                "vus_pr",
                "auc_pr",
                "auc_roc",
                "precision",
                "recall",
                "f1",
                "episode_precision",
                "episode_recall",
                "episode_f1",
            )
            if key in metrics
        )
    )
    print("scoring days     :")
    for day in days:
        summary = storage.fetch(settings, settings.partition("scores", dataset, day))
        summary /= steps.SUMMARY_FILE
        quarantine = storage.fetch(settings, settings.partition("quarantine", dataset, day))
        if summary.is_file():
            data = json.loads(summary.read_text())
            drift = data.get("drift") or {}
            drifted = ", ".join(drift.get("drifted_features", [])) or "scores"
            print(
                f"  {day}  {data['rows']:>6} rows  {data['anomalies']:>5} {alarm_unit} "
                f"({data['anomaly_rate']:.2%})  {data['episodes']:>3} episodes "
                f"({data['episodes_held_back']} held back)  model v{data['model_version']}"
                + (f"  DRIFT: {drifted}" if drift.get("drifted") else "")
            )
            print(f"              report: {summary.with_name(steps.DAILY_REPORT_FILE)}")
        elif quarantine.is_dir():
            report = json.loads((quarantine / "validation_report.json").read_text())
            print(f"  {day}  quarantined: {'; '.join(report['failures'])[:150]}")
    print(f"\nData tree        : {settings.data_root}")
    print(
        "Browse it        : make up  (Airflow http://localhost:8080, MLflow http://localhost:5000)"
    )


def run(epochs: int | None = None, patients: int | None = None, days: int | None = None) -> None:
    """Generate data, train through Airflow, score each day through Airflow, summarise.

    ``epochs``, ``patients`` and ``days`` trim the demo (a quick look, or a test); by default it
    trains the run config's epochs on eight patients and scores the four days after the test
    day.
    """
    settings = Settings.from_env()
    config = steps.run_config_from_params({"run_config": DATASET})
    generated = days or DAYS
    scored = scoring_days(config, generated)
    started = time.monotonic()
    print(f"[demo] TSAD_HOME={settings.home}")
    steps.generate(
        start=config.train.start,
        days=generated,
        patients=patients or PATIENTS,
        labeled_from=config.validation.start,
    )
    _break_last_day(settings, scored[-1])
    print(f"[demo] wrote {generated} days of vital signs; {scored[-1]} lacks '{BROKEN_COLUMN}'")
    init_airflow(settings)
    parse_dags(settings)
    print(
        "[demo] tsad_train: validate -> prepare -> train -> calibrate -> evaluate -> "
        "register -> promote ..."
    )
    conf = {"run_config": DATASET} | ({"epochs": epochs} if epochs else {})
    if run_dag("tsad_train", settings, conf=conf) != "success":
        raise RuntimeError(f"tsad_train failed: see the task logs under {settings.home}/airflow")
    for day in scored:
        # A manual run's data interval is the day that ends at its logical date, exactly as
        # the scheduler's run for `day` fires once that day is over.
        state = run_dag("tsad_score", settings, logical_date=(day + ONE_DAY).isoformat())
        print(f"[demo] tsad_score {day}: {state}")
    summarise(settings, config, scored)
    print(f"[demo] finished in {time.monotonic() - started:.0f} s")
