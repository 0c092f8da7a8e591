"""Candidate detectors of one run: each trained and calibrated apart, one chosen on validation.

No detector wins on every dataset, so a run config may list ``candidates``. Each gets a run
folder of its own under the run (:meth:`~pipeline.steps.run_dir.RunDir.add_candidate`), so the
training DAG maps ``train`` and ``calibrate`` over them as it would run a single detector, and
``tsad train`` loops over them. :func:`select` then compares their metrics on the labeled
validation days and adopts the winner: its model, threshold and loss history become the run's,
and the run's config names its detector. The test days play no part in the choice; only the
winner is evaluated on them, once. Without candidates the run is its own single candidate and
nothing is chosen.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import selection
from pipeline.data import storage
from pipeline.steps.run_dir import RunDir
from pipeline.steps.training import detector_params


@storage.on_run_folder
def candidate_runs(run_dir: str) -> list[str]:
    """The folders to train and calibrate: one per candidate, or the run itself."""
    run = RunDir(Path(run_dir))
    config = run.config()
    if not config.candidates:
        return [run_dir]
    folders = []
    for candidate in config.candidates:
        own = config.model_copy(
            update={
                "detector": candidate.detector,
                "detector_params": candidate.params,
                "candidates": [],
            }
        )
        folders.append(str(run.add_candidate(str(candidate.name), own).path))
    return folders


def candidate_name(run_dir: str) -> str:
    """A folder's name among the candidates, or the detector of a run without any.

    What a mapped task instance is called in Airflow's grid, instead of its index.
    """
    run = RunDir(Path(run_dir))
    return run.path.name if run.path.parent.name == RunDir.CANDIDATES else run.config().detector


@storage.on_run_folder
def select(run_dir: str, calibrated: Sequence[str]) -> str:
    """Choose the candidate with the best validation metric and make it the run's detector.

    ``calibrated`` are the folders the calibration step returned; every candidate of the run
    must be among them. The choice and every candidate's validation metrics are written to
    the run's ``selection.json`` (registration logs them). Ties, and validation days without
    any anomaly, fall back to the order of the list (:func:`pipeline.selection.choose`).
    """
    run = RunDir(Path(run_dir))
    config = run.config()
    if not config.candidates:
        return run_dir
    names = [str(candidate.name) for candidate in config.candidates]
    missing = {str(run.candidate(name).path) for name in names} - {str(Path(c)) for c in calibrated}
    if missing:
        raise ValueError(f"candidates not calibrated: {', '.join(sorted(missing))}")
    records = {name: _record(run.candidate(name)) for name in names}
    metric = config.selection_metric
    winner = selection.choose(
        {name: record["validation"].get(metric, math.nan) for name, record in records.items()}
    )
    _adopt(run, run.candidate(winner))
    run.selection_file.write_text(
        json.dumps({"metric": metric, "winner": winner, "candidates": records}, indent=2)
    )
    return run_dir


def _record(candidate: RunDir) -> dict[str, Any]:
    """What the choice saw of one candidate: its detector, settings and validation metrics."""
    config = candidate.config()
    metrics = candidate.validation_metrics_file
    return {
        "detector": config.detector,
        "params": detector_params(config),
        "validation": json.loads(metrics.read_text()) if metrics.is_file() else {},
    }


def _adopt(run: RunDir, winner: RunDir) -> None:
    """Make the winner's model, threshold, reports and loss history the run's own."""
    for theirs, ours in ((winner.bundle, run.bundle), (winner.evaluation, run.evaluation)):
        shutil.rmtree(ours, ignore_errors=True)
        if theirs.is_dir():  # no evaluation folder where the validation days have no label
            shutil.copytree(theirs, ours)
    run.history_file.unlink(missing_ok=True)
    if winner.history_file.is_file():
        shutil.copy2(winner.history_file, run.history_file)
    chosen = winner.config()
    config = run.config().model_copy(
        update={"detector": chosen.detector, "detector_params": chosen.detector_params}
    )
    run.config_file.write_text(config.model_dump_json(indent=2))
