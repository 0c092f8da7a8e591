"""The pipeline's steps, shared by the Airflow DAGs and the command line.

Each step reads and writes by path (returned as a string so it can travel through XCom) and is
a thin composition of the modules below it: a DAG task or a CLI command calls exactly one step.
Dates arrive here already parsed (:func:`pipeline.config.parse_date` runs once, at the CLI or in
the DAG task). One module per DAG concern:

- :mod:`~pipeline.steps.ingest`: a day snapshotted from its source, or waited for;
- :mod:`~pipeline.steps.validation`: a landed day checked, or quarantined;
- :mod:`~pipeline.steps.training`: prepare, train, calibrate and evaluate a run folder
  (:mod:`~pipeline.steps.run_dir` names its files);
- :mod:`~pipeline.steps.candidates`: a run's candidate detectors, and the one chosen;
- :mod:`~pipeline.steps.registration`: register a run, promote a version;
- :mod:`~pipeline.steps.scoring`: score a day with the production model, read its drift;
- :mod:`~pipeline.steps.delivery`: a scored day written to its dataset's sink tables;
- :mod:`~pipeline.steps.notification`: a scored day's digest for the owners, composed or sent;
- :mod:`~pipeline.steps.series`: an event dataset's days aggregated into bucket series;
- :mod:`~pipeline.steps.evidence`: a scored event day's alarms linked to their events;
- :mod:`~pipeline.steps.demo_data`: the synthetic demo days.
"""

from pipeline.daily import ALARMS_FILE, DAILY_REPORT_FILE, SCORES_FILE, SUMMARY_FILE
from pipeline.steps.candidates import candidate_name, candidate_runs, select
from pipeline.steps.delivery import deliver
from pipeline.steps.demo_data import generate, generate_transactions
from pipeline.steps.ingest import NotLanded, has_landed, ingest
from pipeline.steps.notification import day_digest, notify, owners, slack_channel
from pipeline.steps.registration import (
    PromotionResult,
    promote_challenger,
    promote_version,
    register,
)
from pipeline.steps.run_dir import RunDir
from pipeline.steps.scoring import (
    drift_status,
    finalize,
    score,
    score_shard,
    score_sharded,
    shard_partition,
)
from pipeline.steps.training import (
    TrainingDataRejected,
    calibrate,
    detector_params,
    evaluate,
    prepare,
    retraining_params,
    run_config_from_params,
    run_days,
    train,
)
from pipeline.steps.validation import (
    REPORT_FILE,
    BatchRejected,
    is_validated,
    load_day,
    validate,
    validate_days,
    validated_landing,
)

__all__ = [
    "ALARMS_FILE",
    "DAILY_REPORT_FILE",
    "REPORT_FILE",
    "SCORES_FILE",
    "SUMMARY_FILE",
    "BatchRejected",
    "NotLanded",
    "PromotionResult",
    "RunDir",
    "TrainingDataRejected",
    "calibrate",
    "candidate_name",
    "candidate_runs",
    "day_digest",
    "deliver",
    "detector_params",
    "drift_status",
    "evaluate",
    "finalize",
    "generate",
    "generate_transactions",
    "has_landed",
    "ingest",
    "is_validated",
    "load_day",
    "notify",
    "owners",
    "prepare",
    "promote_challenger",
    "promote_version",
    "register",
    "retraining_params",
    "run_config_from_params",
    "run_days",
    "score",
    "score_shard",
    "score_sharded",
    "select",
    "shard_partition",
    "slack_channel",
    "train",
    "validate",
    "validate_days",
    "validated_landing",
]
