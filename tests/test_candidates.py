"""Candidate detectors of one run: named in the config, chosen on validation days only, each
logged to MLflow as a child run of the registered training run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline import evaluation, selection, steps, tracking
from pipeline.config import RunConfig, Settings
from pipeline.scoring import ModelBundle
from pipeline.steps.run_dir import RunDir

DAY = dt.date(2026, 1, 1)
CANDIDATES = [
    {"detector": "pca", "params": {"window": 8}},
    {"detector": "iforest", "params": {"window": 8, "n_estimators": 40}},
]


def day(offset: int) -> dt.date:
    return DAY + dt.timedelta(days=offset)


def run_config(**changes) -> RunConfig:
    base = {
        "dataset": "vitals",
        "train": {"start": day(0), "end": day(1)},
        "validation": {"start": day(2), "end": day(2)},
        "test": {"start": day(3), "end": day(3)},
        "device": "cpu",
        "candidates": CANDIDATES,
    }
    return RunConfig.model_validate(base | changes)


def test_candidates_are_named_by_detector_and_numbered_when_repeated():
    config = run_config(candidates=[{"detector": "pca"}, {"detector": "iforest"}, *CANDIDATES])
    assert [c.name for c in config.candidates] == ["pca-1", "iforest-1", "pca-2", "iforest-2"]
    with pytest.raises(ValidationError, match="unique"):
        run_config(
            candidates=[{"detector": "pca", "name": "a"}, {"detector": "ocsvm", "name": "a"}]
        )
    with pytest.raises(ValidationError, match="candidate name"):
        run_config(candidates=[{"detector": "pca", "name": "../escape"}])
    with pytest.raises(ValidationError):
        run_config(candidates=[{"detector": "no_such_detector"}])


def test_naming_one_detector_trains_it_alone():
    params = {"run_config": "vitals_candidates", "detector": "dense_ae"}
    assert steps.run_config_from_params(params).candidates == []
    assert len(steps.run_config_from_params({"run_config": "vitals_candidates"}).candidates) == 2


def test_a_run_without_candidates_is_its_own_single_candidate(tsad_home: Settings):
    run = RunDir.create(tsad_home, run_config(candidates=[]))
    assert steps.candidate_runs(str(run.path)) == [str(run.path)]
    assert steps.select(str(run.path), [str(run.path)]) == str(run.path)
    assert not run.selection_file.exists() and not (run.path / "candidates").exists()


def scores_of(candidate: RunDir, split: str) -> np.ndarray:
    detector = ModelBundle.load_detector(candidate.bundle, device="cpu")
    return detector.score(candidate.load_split(split).segments)


def relabel_test_days_for(run: RunDir, favoured: RunDir) -> None:
    """Label as anomalies exactly the test rows ``favoured`` scores highest: on the test days
    it becomes the best candidate, whatever the validation days say."""
    scores = scores_of(favoured, "test")
    with np.load(run.prepared("test")) as stored:
        arrays = dict(stored)
    arrays["labels"] = (scores >= np.quantile(scores, 0.99)).astype(np.int8)
    np.savez(run.prepared("test"), **arrays)


@pytest.fixture(scope="module")
def chosen(module_home: Settings):
    """Two candidates trained; the test days relabeled so the validation loser wins there;
    then calibrated, chosen, evaluated and registered as ``tsad train`` does."""
    settings = module_home
    steps.generate(start=DAY, days=4, patients=3, labeled_from=day(2), settings=settings)
    config = run_config()
    steps.validate_days("vitals", steps.run_days(config), settings)
    run_dir = steps.prepare(config, settings)
    folders = [steps.train(folder) for folder in steps.candidate_runs(run_dir)]
    run = RunDir(Path(run_dir))
    on_validation = {
        Path(folder).name: selection.validation_metric(
            run.load_split("validation").labels, scores_of(RunDir(Path(folder)), "validation")
        )
        for folder in folders
    }
    winner = selection.choose(on_validation)
    loser = next(name for name in on_validation if name != winner)
    relabel_test_days_for(run, run.candidate(loser))
    calibrated = [steps.calibrate(folder) for folder in folders]
    steps.evaluate(steps.select(run_dir, calibrated))
    registered = steps.register(run_dir, settings)
    return settings, run, winner, loser, registered


def test_the_choice_uses_validation_days_only(chosen):
    """The test days favour the candidate that lost on validation; it still loses."""
    _, run, winner, loser, _ = chosen
    on_test = {
        name: evaluation.vus_pr(
            run.load_split("test").labels, scores_of(run.candidate(name), "test")
        )
        for name in (winner, loser)
    }
    assert on_test[loser] > on_test[winner]  # a choice that saw test labels would pick the loser
    choice = json.loads(run.selection_file.read_text())
    assert choice["winner"] == winner and choice["metric"] == "vus_pr"
    scores = {name: record["validation"]["vus_pr"] for name, record in choice["candidates"].items()}
    assert scores[winner] >= scores[loser]
    assert run.config().detector == winner
    assert json.loads(run.metrics_file.read_text())["vus_pr"] == pytest.approx(on_test[winner])


def test_the_winner_becomes_the_runs_model_with_its_own_threshold(chosen):
    _, run, winner, *_ = chosen
    assert ModelBundle.load_detector(run.bundle, device="cpu").name == winner
    theirs = json.loads((run.candidate(winner).bundle / "calibration.json").read_text())
    assert json.loads((run.bundle / "calibration.json").read_text()) == theirs


def test_every_candidate_is_a_child_run_with_its_validation_metrics(chosen):
    settings, run, winner, loser, registered = chosen
    client = tracking.connect(settings)
    parent = client.get_run(registered["run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{registered['run_id']}'",
    )
    by_name = {child.info.run_name: child for child in children}
    assert set(by_name) == {winner, loser}
    choice = json.loads(run.selection_file.read_text())
    for name, child in by_name.items():
        assert child.data.tags["winner"] == str(name == winner).lower()
        assert child.data.params["detector"] == name
        logged = child.data.metrics["validation.vus_pr"]
        assert logged == pytest.approx(choice["candidates"][name]["validation"]["vus_pr"])
    assert parent.data.tags["selection.winner"] == winner
    version = client.get_model_version(registered["name"], registered["version"])
    assert version.tags["selection.winner"] == winner
    assert version.tags["detector"] == winner
    assert {f"validation.{name}.vus_pr" for name in (winner, loser)} <= set(version.tags)
