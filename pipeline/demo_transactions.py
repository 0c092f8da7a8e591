"""`tsad demo --dataset transactions`: the payments user's whole loop, through Airflow.

Generates nine days of card payments, breaks the last one on purpose (a refund export with
negative amounts and reused ids is appended), runs ``tsad_train_transactions`` (the run config's
candidates, the default detector and PCA, side by side) and ``tsad_score_transactions`` (the
dataset's own DAGs, see :mod:`pipeline.schedules`) for every scoring day after the test day,
then prints the registered model, each candidate's test-day figures with the fraud
incidents it found per kind, and each scored day.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pandas as pd

from pipeline import steps
from pipeline.config import DatasetSpec, RunConfig, Settings
from pipeline.data.transactions_demo import ENTITY_COLUMN, FRAUD_KIND
from pipeline.demo import summarise
from pipeline.orchestration import init_airflow, parse_dags, run_dag
from pipeline.schedules import scoring_dag_id, training_dag_id

DATASET = "transactions"
DAYS = 9
ACCOUNTS = 3_000
ONE_DAY = dt.timedelta(days=1)
FIGURES = ("vus_pr", "auc_pr", "f1", "precision", "recall", "event_f1", "episode_f1")


def _break_last_day(settings: Settings, day: dt.date) -> None:
    """Append refunds exported as negative amounts, under ids already used: the bad batch."""
    path = settings.partition("landing", DATASET, day) / "part-0.parquet"
    frame = pd.read_parquet(path)
    refunds = frame.head(25).assign(amount=lambda rows: -rows["amount"])
    pd.concat([frame, refunds], ignore_index=True).to_parquet(path, index=False)


def candidate_figures(settings: Settings, config: RunConfig) -> dict[str, dict]:
    """Each candidate of the latest run on the test day: its metrics and incidents per kind.

    The candidates were chosen between on the validation day; the test day is scored here
    for the figures only, at each candidate's own calibrated threshold.
    """
    from pipeline.fraud_figures import incidents_found
    from pipeline.scoring import WORKER_DEVICE, ModelBundle

    runs = sorted((settings.home / "runs" / DATASET).iterdir(), key=lambda p: p.stat().st_mtime)
    spec = DatasetSpec.load(DATASET)
    events = pd.concat(
        pd.read_parquet(settings.partition("landing", DATASET, day)) for day in config.test.dates()
    )
    figures = {}
    for folder in sorted((runs[-1] / steps.RunDir.CANDIDATES).iterdir()):
        run = steps.RunDir(Path(steps.evaluate(str(folder))))
        bundle = ModelBundle.load(run.bundle, device=WORKER_DEVICE)
        split = run.load_split("test")
        scores = bundle.detector.score(split.segments)
        alarmed = split.frame(scores)[bundle.calibrator.predict(scores)]
        kinds = incidents_found(events, alarmed, spec.frequency, ENTITY_COLUMN, FRAUD_KIND)
        figures[folder.name] = {"metrics": run.metrics(), "kinds": kinds}
    return figures


def _print_figures(figures: dict[str, dict]) -> None:
    print("\n=== test day, per candidate (chosen on the validation day) ===")
    for name, figure in figures.items():
        metrics = figure["metrics"]
        print(f"{name:>16}: " + ", ".join(f"{k}={metrics[k]:.3f}" for k in FIGURES if k in metrics))
        for row in figure["kinds"].itertuples(index=False):
            print(f"{'':>18}{row.kind:<17} found {row.found:>3} of {row.incidents:>3}")


def run(epochs: int | None = None, accounts: int | None = None) -> None:
    """Generate payments, train and score through Airflow, print the figures."""
    settings = Settings.from_env()
    config = steps.run_config_from_params({"run_config": DATASET})
    last = config.train.start + (DAYS - 1) * ONE_DAY
    # The test day is scored for the figures alone (candidate_figures): each scoring DAG run
    # costs a process start and a landing check, so only the days after it go through Airflow.
    first = config.test.end + ONE_DAY
    scored = [first + offset * ONE_DAY for offset in range((last - first).days + 1)]
    started = time.monotonic()
    print(f"[demo] TSAD_HOME={settings.home}")
    steps.generate_transactions(
        start=config.train.start,
        days=DAYS,
        accounts=accounts or ACCOUNTS,
        labeled_from=config.validation.start,
    )
    _break_last_day(settings, last)
    print(f"[demo] wrote {DAYS} days of card payments; {last} holds bad refunds on purpose")
    init_airflow(settings)
    parse_dags(settings)
    train, score = training_dag_id(DATASET), scoring_dag_id(DATASET)
    print(f"[demo] {train}: validate -> prepare (aggregate) -> train x2 -> select -> register")
    conf = {"epochs": epochs} if epochs else {}
    if run_dag(train, settings, conf=conf) != "success":
        raise RuntimeError(f"{train} failed: see the task logs under {settings.home}/airflow")
    for day in scored:
        state = run_dag(score, settings, logical_date=(day + ONE_DAY).isoformat())
        print(f"[demo] {score} {day}: {state}")
    summarise(settings, config, scored, DATASET, alarm_unit="alarm hours")
    _print_figures(candidate_figures(settings, config))
    alarms = settings.partition("scores", DATASET, scored[0]) / "alarm_events.parquet"
    if alarms.is_file():
        linked = pd.read_parquet(alarms)
        print(
            f"\n[demo] {scored[0]}: {len(linked)} alarmed account-hours point to "
            f"{int(linked['event_ids'].map(len).sum())} payments ({alarms})"
        )
    print(json.dumps({"finished_in_s": round(time.monotonic() - started)}))
