"""``tsad demo`` as a user runs it, trimmed to one epoch on two patients and eight days:
generation, the broken day, ``tsad_train`` and ``tsad_score`` through Airflow, and the printed
summary."""

from __future__ import annotations

import os
import re

import pytest
from cli_runner import tsad

from pipeline import tracking
from pipeline.config import RunConfig, Settings
from pipeline.demo import BROKEN_COLUMN, scoring_days

pytestmark = pytest.mark.slow

CONFIG = RunConfig.load("vitals")
DAYS = 8
SCORING_DAYS = scoring_days(CONFIG, DAYS)


def test_the_trimmed_demo_trains_promotes_scores_and_quarantines(tsad_home: Settings) -> None:
    trimmed = ("--epochs", "1", "--patients", "2", "--days", str(DAYS))
    demo = tsad("demo", *trimmed, env=os.environ | {"PYTHONPATH": "."})

    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "registered model : tsad-vitals version 1 (alias @production)" in demo.stdout
    assert re.search(r"test-day metrics : vus_pr=\d\.\d{3}, auc_pr=\d\.\d{3}", demo.stdout)
    assert len(SCORING_DAYS) == 2
    for day in SCORING_DAYS[:-1]:
        assert re.search(rf"{day}\s+2880 rows", demo.stdout), f"{day} not scored"
        assert (tsad_home.partition("scores", "vitals", day) / "scores.parquet").is_file()
    broken = SCORING_DAYS[-1]
    assert re.search(rf"{broken}  quarantined: .*{BROKEN_COLUMN}", demo.stdout)
    assert not tsad_home.partition("scores", "vitals", broken).exists()
    production = tracking.load_production_model(tsad_home, "vitals")
    assert production.bundle.detector.name == CONFIG.detector


def test_a_demo_too_short_to_score_a_day_is_refused_before_it_writes(tsad_home: Settings) -> None:
    refused = tsad("demo", "--days", "7", env=os.environ | {"PYTHONPATH": "."})

    assert refused.returncode != 0
    assert "at least 8 days" in refused.stderr
    assert not tsad_home.home.exists()
