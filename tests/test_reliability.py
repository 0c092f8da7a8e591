"""Bad input, crashes and outages on a real home: the cases of ``make reliability``, fewer kills.

The full run (20 random kills, every case) is ``make reliability``; here each fault runs once
or a few times, and every crash point of :mod:`pipeline.crash_points` is killed for real.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from benchmarks import crash_points, reliability
from benchmarks.reliability import CASES, Lab, build_lab
from pipeline import steps, tracking
from pipeline.config import Settings
from pipeline.scoring import ModelBundle, ModelMismatchError

pytestmark = pytest.mark.slow

# Cases the suite proves elsewhere: random kills by the kills at every crash point below, and
# the last case, which needs every other case to have run first.
SHOWN_ELSEWHERE = ("SIGKILL", "other days")


@pytest.fixture(scope="module")
def lab(module_home: Settings) -> Lab:
    return build_lab(module_home, kills=0)  # no random kills: see the crash points


@pytest.mark.parametrize(
    "case", [c for c in CASES if not c.name.startswith(SHOWN_ELSEWHERE)], ids=lambda c: c.name
)
def test_case_is_handled_without_losing_data(lab: Lab, case: reliability.Case) -> None:
    outcome = case.run(lab)
    assert outcome.passed, outcome.observed
    assert outcome.lost == 0


def test_kills_inside_each_scoring_write_leave_nothing_or_the_previous_day(lab: Lab) -> None:
    """Killed at every point over the previous output, and on a day never scored in its last
    write, the partition holds the previous output or nothing; a rerun is byte-identical."""
    points = list(crash_points.scoring_points(f"date={reliability.REFERENCE_DAY.isoformat()}"))
    results = crash_points.kill_scoring(lab, points, ["commit:summary.json"])
    assert [result.point for result in results] == points
    assert all(result.passed for result in results), [result.cells() for result in results]
    assert [result.kills for result in results] == [1, 1, 1, 1, 2, 1, 1]


def test_training_killed_mid_epoch_and_inside_its_writes_resumes_to_the_same_model(
    lab: Lab,
) -> None:
    """Real SIGKILLs mid-epoch, in the checkpoint write and in the detector's; the resumed run
    ends with the undisturbed run's detector, byte for byte. (Replacing a detector is the same
    folder swap as replacing a scored day, killed in the test above.)"""
    config = reliability.run_config(reliability.START, epochs=3, device="cpu")
    prepared = Path(steps.prepare(config, lab.settings))
    training = crash_points.TrainingLab.build(lab, prepared)
    results = crash_points.kill_training(training, replacing=False)
    assert [result.point for result in results] == ["epoch:2", "commit:last.pt", "staged:detector"]
    assert all(result.passed for result in results), [result.cells() for result in results]


def test_a_kill_at_the_s3_commit_leaves_the_day_whole_and_the_rerun_completes(
    lab: Lab,
) -> None:
    """``tsad score`` with the data tree on an S3 server (127.0.0.1), killed right after the
    commit, before the old attempt is deleted (every other step: ``make reliability``, and the
    protocol alone in tests/data/test_storage.py): a reader finds the complete day byte for
    byte; the rerun ends byte-identical with one attempt and no lease left."""
    points = ["s3-manifest:scores"]
    results = crash_points.kill_s3(lab, points)
    assert [result.point for result in results] == points
    assert all(result.passed for result in results), [result.cells() for result in results]


def test_a_model_at_another_step_or_with_a_window_longer_than_a_day_is_refused(lab: Lab) -> None:
    bundle = tracking.load_production_model(lab.settings, reliability.DATASET).bundle
    hourly = bundle.spec.model_copy(update={"frequency": "1h"})
    with pytest.raises(ModelMismatchError, match="trained on '1min' steps"):
        bundle.check_compatible(hourly)
    hourly_model = ModelBundle(hourly, bundle.scaler, bundle.detector, bundle.calibrator)
    with pytest.raises(ModelMismatchError, match="window of 32 steps exceeds the 24 steps"):
        hourly_model.check_compatible(hourly)


def test_the_registered_model_holds_no_pickle(lab: Lab) -> None:
    artifacts = lab.settings.home / "mlflow" / "artifacts"
    [mlmodel] = artifacts.rglob("MLmodel")
    flavor = yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert flavor["model_code_path"].endswith("packaged_model.py")
    stored = [path.name for path in mlmodel.parent.rglob("*") if path.is_file()]
    assert "entities.json" in stored
    assert not [name for name in stored if name.endswith((".pkl", ".pickle", ".cloudpickle"))]


def test_other_days_are_unaffected(lab: Lab) -> None:
    assert lab.untouched and dt.date(2026, 1, 5) in lab.untouched
    outcome = reliability._other_days_unaffected(lab)
    assert outcome.passed, outcome.observed
