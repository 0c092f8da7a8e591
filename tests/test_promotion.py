"""The promotion gate on a real MLflow registry: both models scored on the same test days.

Two real detectors (PCA and Isolation Forest, fast to train) are trained once on a small ward;
each test registers them in its own MLflow store, so the registry starts empty every time. The
numbers the gate records are checked against each run's own evaluation on the same test day.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import evaluation, promotion, steps, tracking
from pipeline.choices import PROMOTION_METRICS
from pipeline.config import ConfigError, RunConfig, Settings, project_root
from pipeline.scoring import ModelBundle

DAY = dt.date(2026, 3, 1)
SPEC_FILE = Path("configs") / "datasets" / "vitals.yaml"


def day(offset: int) -> dt.date:
    return DAY + dt.timedelta(days=offset)


@dataclass(frozen=True)
class TrainedRun:
    run_dir: str
    metrics: dict[str, float]


def train_run(settings: Settings, detector: str, **changes) -> TrainedRun:
    config = RunConfig.model_validate(
        {
            "dataset": "vitals",
            "detector": detector,
            "train": {"start": day(0), "end": day(1)},
            "validation": {"start": day(2), "end": day(2)},
            "test": {"start": day(3), "end": day(3)},
            "window": 16,
            "device": "cpu",
        }
        | changes
    )
    run_dir = steps.prepare(config, settings)
    steps.evaluate(steps.calibrate(steps.train(run_dir)))
    metrics = json.loads((Path(run_dir) / "evaluation" / "metrics.json").read_text())
    return TrainedRun(run_dir, metrics)


@pytest.fixture(scope="module")
def trained(module_home: Settings, tmp_path_factory: pytest.TempPathFactory):
    """Four days of a three-patient ward and five trained (not yet registered) runs."""
    settings = module_home
    steps.generate(start=DAY, days=4, patients=3, labeled_from=day(2), settings=settings)
    steps.validate_days("vitals", [day(i) for i in range(4)], settings)
    runs = {
        "pca": train_run(settings, "pca"),
        "iforest": train_run(settings, "iforest"),
        "iforest_tested_on_day_2": train_run(
            settings,
            "iforest",
            validation={"start": day(3), "end": day(3)},
            test={"start": day(2), "end": day(2)},
        ),
        "pca_gated_on_auc_pr": train_run(settings, "pca", promotion_metric="auc_pr"),
    }
    # The same dataset before a sixth feature was added to its spec.
    project = tmp_path_factory.mktemp("older_project")
    shutil.copytree(project_root() / "configs", project / "configs")
    spec = yaml.safe_load((project / SPEC_FILE).read_text())
    spec["features"] = spec["features"][:-1]
    (project / SPEC_FILE).write_text(yaml.safe_dump(spec))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TSAD_PROJECT_ROOT", str(project))
        runs["five_features"] = train_run(settings, "pca")
    return settings, runs


@pytest.fixture
def registry(trained, tmp_path: Path):
    """The trained runs with an empty MLflow store of this test's own."""
    settings, runs = trained
    store = tmp_path / "mlflow"
    own = settings.model_copy(
        update={
            "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
            "registry_uri": f"sqlite:///{store / 'mlflow.db'}",
            "artifact_root": (store / "artifacts").as_uri(),
        }
    )
    return own, runs


def register(settings: Settings, run: TrainedRun) -> str:
    return str(steps.register(run.run_dir, settings)["version"])


def version_tags(settings: Settings, version: str) -> dict[str, str]:
    client = tracking.connect(settings)
    return client.get_model_version(settings.model_name("vitals"), version).tags


def better_and_worse(runs: dict[str, TrainedRun], metric: str) -> tuple[TrainedRun, TrainedRun]:
    first, second = runs["pca"], runs["iforest"]
    assert first.metrics[metric] != pytest.approx(second.metrics[metric], rel=1e-3)
    return (first, second) if first.metrics[metric] > second.metrics[metric] else (second, first)


def test_the_first_model_is_promoted_and_its_number_recorded(registry):
    settings, runs = registry
    version = register(settings, runs["pca"])
    decision = steps.promote_challenger("vitals", settings=settings)
    assert decision.promoted and decision.reason == "no production version yet"
    assert tracking.alias_version(settings, "vitals", "production") == version
    tags = version_tags(settings, version)
    assert tags["gate.decision"] == "promoted"
    assert tags["gate.metric"] == "vus_pr"
    assert float(tags["gate.challenger"]) == pytest.approx(runs["pca"].metrics["vus_pr"], 1e-5)
    assert tags["gate.production"] == tags["gate.production_version"] == "none"
    assert tags["gate.test_days"] == f"{day(3)}..{day(3)}"


def test_promoting_without_a_challenger_fails_and_a_second_promotion_changes_nothing(registry):
    settings, runs = registry
    with pytest.raises(tracking.ModelNotFoundError, match="no @challenger version"):
        steps.promote_challenger("vitals", settings=settings)
    version = register(settings, runs["pca"])
    assert steps.promote_challenger("vitals", settings=settings).promoted
    again = steps.promote_challenger("vitals", settings=settings)
    assert again == steps.PromotionResult(
        promoted=False, version=version, previous=version, reason="already in production"
    )


@pytest.mark.parametrize("challenger_is_better", [True, False], ids=["better", "worse"])
def test_the_challenger_is_promoted_only_when_at_least_as_good(registry, challenger_is_better):
    settings, runs = registry
    better, worse = better_and_worse(runs, "vus_pr")
    first, second = (worse, better) if challenger_is_better else (better, worse)
    incumbent = register(settings, first)
    steps.promote_challenger("vitals", settings=settings)
    challenger = register(settings, second)
    decision = steps.promote_challenger("vitals", settings=settings)
    assert decision.promoted is challenger_is_better and decision.previous == incumbent
    serving = challenger if challenger_is_better else incumbent
    assert tracking.alias_version(settings, "vitals", "production") == serving
    assert tracking.alias_version(settings, "vitals", "challenger") == challenger
    tags = version_tags(settings, challenger)
    assert tags["gate.decision"] == ("promoted" if challenger_is_better else "rejected")
    assert tags["gate.production_version"] == incumbent
    assert f"production version {incumbent}'s" in tags["gate.reason"]
    # Both models were scored on the challenger run's test day, which is also the incumbent's.
    assert float(tags["gate.challenger"]) == pytest.approx(second.metrics["vus_pr"], 1e-5)
    assert float(tags["gate.production"]) == pytest.approx(first.metrics["vus_pr"], 1e-5)


def test_a_challenger_exactly_as_good_as_production_is_promoted(registry):
    """The gate's tie: at least as good serves (a retrain on the same data replaces its twin)."""
    settings, runs = registry
    incumbent = register(settings, runs["pca"])
    steps.promote_challenger("vitals", settings=settings)
    challenger = register(settings, runs["pca"])
    decision = steps.promote_challenger("vitals", settings=settings)
    assert decision.promoted and decision.previous == incumbent
    assert tracking.alias_version(settings, "vitals", "production") == challenger
    tags = version_tags(settings, challenger)
    assert tags["gate.decision"] == "promoted"
    assert tags["gate.challenger"] == tags["gate.production"]
    assert f">= production version {incumbent}'s" in tags["gate.reason"]


def test_production_is_scored_on_the_challengers_test_days_not_its_own(registry):
    settings, runs = registry
    incumbent = runs["iforest_tested_on_day_2"]  # the same forest as "iforest", other test day
    register(settings, incumbent)
    steps.promote_challenger("vitals", settings=settings)
    challenger = register(settings, runs["pca"])
    steps.promote_challenger("vitals", settings=settings)
    production_number = float(version_tags(settings, challenger)["gate.production"])
    assert production_number == pytest.approx(runs["iforest"].metrics["vus_pr"], 1e-5)
    assert production_number != pytest.approx(incumbent.metrics["vus_pr"], 1e-3)


def test_the_gate_metric_comes_from_the_command_or_the_run_config(registry):
    settings, runs = registry
    register(settings, runs["iforest"])
    steps.promote_challenger("vitals", settings=settings)
    by_command = register(settings, runs["pca"])
    decision = steps.promote_challenger("vitals", metric="auc_roc", settings=settings)
    tags = version_tags(settings, by_command)
    assert tags["gate.metric"] == decision.metric == "auc_roc"
    assert float(tags["gate.challenger"]) == pytest.approx(runs["pca"].metrics["auc_roc"], 1e-5)
    assert float(tags["gate.production"]) == pytest.approx(runs["iforest"].metrics["auc_roc"], 1e-5)
    assert decision.promoted == (
        runs["pca"].metrics["auc_roc"] >= runs["iforest"].metrics["auc_roc"]
    )
    by_config = register(settings, runs["pca_gated_on_auc_pr"])
    steps.promote_challenger("vitals", settings=settings)
    assert version_tags(settings, by_config)["gate.metric"] == "auc_pr"


def test_only_metrics_where_higher_is_better_can_gate(registry):
    settings, _ = registry
    with pytest.raises(ConfigError, match="unknown promotion metric 'n_points'"):
        steps.promote_challenger("vitals", metric="n_points", settings=settings)
    metrics = evaluation.evaluate(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.3]), 0.5)
    assert set(PROMOTION_METRICS) <= set(metrics)


def test_a_production_model_for_other_features_is_not_compared(registry):
    settings, runs = registry
    incumbent = register(settings, runs["five_features"])
    steps.promote_challenger("vitals", settings=settings)
    challenger = register(settings, runs["pca"])
    decision = steps.promote_challenger("vitals", settings=settings)
    assert not decision.promoted
    assert tracking.alias_version(settings, "vitals", "production") == incumbent
    tags = version_tags(settings, challenger)
    assert tags["gate.decision"] == "rejected"
    assert tags["gate.production"] == "none" and tags["gate.production_version"] == incumbent
    assert "cannot score the challenger's test data" in tags["gate.reason"]
    assert "temperature" in tags["gate.reason"]
    assert steps.promote_version("vitals", challenger, settings=settings).promoted
    assert tracking.alias_version(settings, "vitals", "production") == challenger
    assert version_tags(settings, challenger)["promotion"] == "manual"


def test_a_metric_undefined_on_the_test_data_rejects_rather_than_guesses(trained):
    settings, runs = trained
    challenger, production = (
        ModelBundle.load(Path(runs[name].run_dir) / "bundle") for name in ("pca", "iforest")
    )
    without_anomalies = steps.load_day(settings, challenger.spec, day(3)).assign(label=0)
    verdict = promotion.judge(challenger, production, "1", without_anomalies, "vus_pr")
    assert not verdict.promote
    assert verdict.reason == "vus_pr is undefined on the test data (does it hold both classes?)"
