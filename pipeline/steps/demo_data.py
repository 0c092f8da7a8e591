"""The demo data steps: synthetic vital signs or card transactions as daily landing partitions."""

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


def generate_transactions(
    start: dt.date = dt.date(2026, 2, 2),
    days: int = 9,
    accounts: int = 3_000,
    labeled_from: dt.date = dt.date(2026, 2, 6),
    seed: int = 7,
    settings: Settings | None = None,
    incidents_per_1000_accounts: float = 20.0,
) -> list[str]:
    """Write the synthetic card-transactions demo data as daily landing partitions."""
    from pipeline.data.transactions_demo import TransactionsScenario
    from pipeline.data.transactions_demo import generate_transactions as payments

    settings = Settings.resolve(settings)
    scenario = TransactionsScenario(
        n_accounts=accounts,
        start=start,
        n_days=days,
        labeled_from=labeled_from,
        seed=seed,
        incidents_per_1000_accounts=incidents_per_1000_accounts,
    )
    written = []
    for day, frame in payments(scenario).items():
        target = settings.partition("landing", "transactions", day) / "part-0.parquet"
        written.append(str(io.write_parquet_atomic(frame, target)))
    return written
