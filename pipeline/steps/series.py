"""The aggregation step: a validated day of events becomes its bucketed series partition.

Prepare and score read an event dataset through here. ``<home>/data/series/<dataset>/date=D/``
holds the day's series in canonical columns (``part-0.parquet``), the bucket of every event
(``event_index/part-0.parquet``: entity, bucket start, event id; what lets an alarm name its
payments) and ``source.json``, the landing fingerprint it was built from: a day is aggregated
once and again only when its landing files change. The folder is staged and replaced whole,
under the partition's lock.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec, Settings
from pipeline.data import io
from pipeline.data.aggregation import EVENT_ID, EventAggregator, event_columns
from pipeline.steps.validation import is_validated, report_path, validated_landing

SERIES_FILE = "part-0.parquet"
EVENT_INDEX = Path("event_index") / "part-0.parquet"
SOURCE_FILE = "source.json"
EVENT_INDEX_SCHEMA = pa.schema(
    [
        pa.field(ENTITY, pa.string()),
        pa.field(TIMESTAMP, pa.timestamp("ns", tz="UTC")),
        pa.field(EVENT_ID, pa.string()),
    ]
)


def series_partition(settings: Settings, spec: DatasetSpec, day: dt.date) -> Path:
    """The day's series partition, aggregated from its validated events unless already built."""
    landing = validated_landing(settings, spec, day)
    fingerprint = json.loads(report_path(settings, spec.name, day).read_text())["fingerprint"]
    target = settings.partition("series", spec.name, day)
    with io.exclusive_partition(target):
        if _built_from(target) == fingerprint:
            return target
        with io.staged_directory(target) as staged:
            aggregator = EventAggregator(spec, day)
            index = staged / EVENT_INDEX
            index.parent.mkdir()
            with io.parquet_writer_atomic(index, EVENT_INDEX_SCHEMA) as append:
                for batch in io.read_batches(
                    landing, present_columns(landing, event_columns(spec))
                ):
                    append(aggregator.add(batch))
            io.write_parquet_atomic(aggregator.result(), staged / SERIES_FILE)
            io.write_text_atomic(json.dumps({"fingerprint": fingerprint}), staged / SOURCE_FILE)
    return target


def _built_from(target: Path) -> str | None:
    try:
        return json.loads((target / SOURCE_FILE).read_text())["fingerprint"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None


def present_columns(landing: Path, columns: list[str]) -> list[str]:
    """``columns`` the landed files hold: the label column is absent on unlabeled days."""
    first = io.partition_files(landing)[0]
    if first.suffix == ".parquet":
        names = set(pq.read_schema(first).names)
    else:
        names = set(pd.read_csv(first, nrows=0).columns)
    return [column for column in columns if column in names]


def load_series_day(settings: Settings, spec: DatasetSpec, day: dt.date) -> pd.DataFrame:
    """A validated day of events as its canonical bucketed series."""
    series = series_partition(settings, spec, day)
    return io.to_canonical(io.read_partition(series), spec.series_spec())


def series_inputs(
    settings: Settings, spec: DatasetSpec, day: dt.date
) -> tuple[Path, Path | None, DatasetSpec]:
    """What scoring reads of an event dataset: the day's series, the previous day's series as
    context when that day passed validation, and the spec the series are read with."""
    previous = day - dt.timedelta(days=1)
    context = (
        series_partition(settings, spec, previous)
        if is_validated(settings, spec.name, previous)
        else None
    )
    return series_partition(settings, spec, day), context, spec.series_spec()


def event_index(series: Path) -> Path:
    """The file locating each event of a series partition in its bucket."""
    return series / EVENT_INDEX
