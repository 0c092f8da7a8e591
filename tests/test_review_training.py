"""Reviews feed the next model: a reviewed day is calibrated and gated on, and each version
records the reviews it saw; a rescored day's report marks the episodes already reviewed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from ward import day, small_run

from pipeline import steps, tracking
from pipeline.config import Settings
from pipeline.scoring import ModelBundle
from pipeline.steps import reviews as review_step

REVIEWED = day(4)


def trained(settings: Settings) -> tuple[str, dict, steps.PromotionResult]:
    """One PCA run on the ward's days, prepared with whatever reviews exist, registered, gated."""
    config = small_run(detector="pca", detector_params={})
    steps.validate_days("vitals", steps.run_days(config), settings)
    run_dir = steps.evaluate(steps.calibrate(steps.train(steps.prepare(config, settings))))
    registered = steps.register(run_dir, settings)
    return run_dir, registered, steps.promote_challenger("vitals", settings=settings)


def threshold(run_dir: str) -> float:
    return ModelBundle.load_calibrator(steps.RunDir(Path(run_dir)).bundle).threshold_


def test_reviews_change_the_next_runs_calibration_and_are_recorded(tsad_home: Settings) -> None:
    settings = tsad_home
    steps.generate(start=day(0), days=6, patients=3, labeled_from=day(2), settings=settings)
    first_run, first, _ = trained(settings)
    out = settings.partition("scores", "vitals", REVIEWED)
    steps.score("vitals", REVIEWED, settings)
    listed = pd.read_parquet(out / steps.ALARMS_FILE)
    assert len(listed) >= 2
    # The reviewer calls the day's two strongest episodes false alarms.
    judged = listed["episode_id"].head(2).tolist()
    for episode in judged:
        review_step.review("vitals", REVIEWED, episode, "dismissed", by="ana", settings=settings)

    steps.score("vitals", REVIEWED, settings)  # rescored: its report marks the reviews
    report = (out / steps.DAILY_REPORT_FILE).read_text()
    assert report.count("<td>dismissed</td>") == len(judged)

    dismissed_run, dismissed, gate = trained(settings)
    # A second reviewer confirms both: the latest verdict stands for the next run.
    for episode in judged:
        review_step.review("vitals", REVIEWED, episode, "confirmed", by="ben", settings=settings)
    confirmed_run, *_ = trained(settings)
    before, after_dismissed, after_confirmed = map(
        threshold, (first_run, dismissed_run, confirmed_run)
    )
    print(
        f"best_f1 threshold: no reviews {before:.4f}, two episodes dismissed "
        f"{after_dismissed:.4f}, the same two confirmed {after_confirmed:.4f}"
    )
    assert len({before, after_dismissed, after_confirmed}) == 3

    recorded = steps.RunDir(Path(dismissed_run)).reviews()
    assert sorted(r["episode_id"] for r in recorded) == sorted(judged)
    assert {r["label"] for r in recorded} == {"dismissed"}
    client = tracking.connect(settings)
    tags = client.get_model_version(dismissed["name"], dismissed["version"]).tags
    assert (tags["reviews.count"], tags["reviews.dismissed"]) == ("2", "2")
    assert tags["reviews.days"] == tags["gate.reviewed_days"] == REVIEWED.isoformat()
    assert tags["gate.reviews"] == "2" and gate.version == str(dismissed["version"])
    earlier = client.get_model_version(first["name"], first["version"]).tags
    assert earlier["reviews.count"] == "0" and earlier["gate.reviewed_days"] == "none"
    logged = tracking.read_run_file(settings, dismissed["run_id"], steps.RunDir.REVIEWS_NAME)
    assert json.loads(logged) == recorded


@pytest.mark.parametrize("training_day", [day(0), day(3)])
def test_reviews_of_training_or_test_days_are_not_calibrated_on(
    tsad_home: Settings, training_day
) -> None:
    config = small_run(detector="pca", detector_params={})
    out = tsad_home.partition("scores", "vitals", training_day)
    found = pd.DataFrame(
        {
            "episode_id": ["e1"],
            "entity": ["p1"],
            "start": [pd.Timestamp(training_day, tz="UTC")],
            "end": [pd.Timestamp(training_day, tz="UTC") + pd.Timedelta(minutes=5)],
        }
    )
    out.mkdir(parents=True)
    found.to_parquet(out / steps.ALARMS_FILE)
    review_step.review("vitals", training_day, "e1", "confirmed", settings=tsad_home)
    assert len(review_step.standing(tsad_home, "vitals")) == 1
    assert review_step.for_calibration(tsad_home, config).empty
