"""The demo data step: synthetic vital signs written as daily landing partitions."""

from __future__ import annotations

import datetime as dt

from pipeline.config import Settings
from pipeline.data import io, storage


def generate(
    start: dt.date = dt.date(2026, 1, 1),
    days: int = 9,
    patients: int = 8,
    labeled_from: dt.date = dt.date(2026, 1, 5),
    seed: int = 7,
    settings: Settings | None = None,
) -> list[str]:
    """Write the synthetic vital-signs demo data as daily landing partitions."""
    from pipeline.data.synthetic import VitalsScenario, generate_vitals

    settings = Settings.resolve(settings)
    scenario = VitalsScenario(
        n_patients=patients, start=start, n_days=days, labeled_from=labeled_from, seed=seed
    )
    written = []
    for day, frame in generate_vitals(scenario).items():
        landing = settings.partition("landing", "vitals", day)
        with storage.publish(settings, landing) as staged:
            io.write_parquet_atomic(frame, staged / "part-0.parquet")
        written.append(str(landing / "part-0.parquet"))
    return written
