"""The delivery step: a scored day sent to the tables its dataset's spec lists as sinks.

Runs after scoring, from the committed scores partition (the source of truth), so a failed
delivery is retried, or rerun later, without scoring again.
"""

from __future__ import annotations

import datetime as dt

from pipeline.config import ConfigError, DatasetSpec, Settings
from pipeline.daily import SCORES_FILE
from pipeline.data import sinks, storage
from pipeline.steps.ingest import connection_url


def deliver(
    dataset: str,
    day: dt.date,
    settings: Settings | None = None,
    urls: dict[str, str] | None = None,
) -> dict[str, int]:
    """Replace the day's rows in every sink table; rows written per table (none: no sinks).

    ``urls`` maps a table to its URL when an Airflow connection supplies it.
    """
    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(dataset)
    if not spec.sinks:
        return {}
    scores = storage.fetch(settings, settings.partition("scores", dataset, day)) / SCORES_FILE
    if not scores.is_file():
        raise ConfigError(f"{dataset} {day} has no scores to deliver: score the day first")
    given = urls or {}
    return {
        sink.table: sinks.write_day(
            connection_url(sink, given.get(sink.table)), sink, dataset, day, scores
        )
        for sink in spec.sinks
    }
