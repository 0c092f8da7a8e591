"""A small synthetic ward with a registered, promoted model: the fixture of registry tests.

Six days of three patients: days 0-1 train, day 2 calibrates, day 3 tests, days 4-5 are left
for scoring. A module of its own (not a conftest fixture) so tests in any folder import it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from pipeline import steps
from pipeline.config import RunConfig, Settings

FIRST_DAY = dt.date(2026, 1, 1)


def day(offset: int) -> dt.date:
    return FIRST_DAY + dt.timedelta(days=offset)


@dataclass(frozen=True)
class Ward:
    settings: Settings
    run_dir: Path
    registered: dict
    promotion: steps.PromotionResult


def small_run(**changes) -> RunConfig:
    """The shipped vitals run config on the ward's days, a few epochs on the CPU; ``changes``
    override any field."""
    shipped = RunConfig.load("vitals").model_dump(
        include={"window", "batch_size", "detector_params"}
    )
    days = {
        "dataset": "vitals",
        "train": {"start": day(0), "end": day(1)},
        "validation": {"start": day(2), "end": day(2)},
        "test": {"start": day(3), "end": day(3)},
        "epochs": 3,
        "device": "cpu",
    }
    return RunConfig.model_validate(shipped | days | changes)


def trained_ward(settings: Settings, patients: int = 3, **run_changes) -> Ward:
    """Generate the ward, train one model on it, register it and let the gate promote it;
    ``run_changes`` override fields of :func:`small_run`."""
    steps.generate(
        start=FIRST_DAY, days=6, patients=patients, labeled_from=day(2), settings=settings
    )
    config = small_run(**run_changes)
    steps.validate_days("vitals", steps.run_days(config), settings)
    run_dir = steps.prepare(config, settings)
    steps.evaluate(steps.calibrate(steps.train(run_dir)))
    registered = steps.register(run_dir, settings)
    promotion = steps.promote_challenger("vitals", settings=settings)
    return Ward(settings, Path(run_dir), registered, promotion)
