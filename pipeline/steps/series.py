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
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ENTITY, LABEL, TIMESTAMP, DatasetSpec, Settings
from pipeline.data import io
from pipeline.data.aggregation import EVENT_ID, aggregate_day, event_columns, shards_for
from pipeline.steps.validation import is_validated, report_path, validated_landing

SERIES_FILE = "part-0.parquet"
EVENT_INDEX = Path("event_index") / "part-0.parquet"
SOURCE_FILE = "source.json"
CSV_BYTES_PER_EVENT = 64  # a payment's line of text, about
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
        if _built_from(target) != fingerprint:
            build_series(landing, spec, day, target, fingerprint)
    return target


def build_series(landing: Path, spec: DatasetSpec, day: dt.date, target: Path, source: str) -> Path:
    """Aggregate the events of ``landing`` into the series folder ``target`` (replaced whole).

    ``source`` names what was aggregated (the landing fingerprint); the caller has validated
    the events and holds ``target``'s lock.
    """
    columns = present_columns(landing, event_columns(spec))
    with (
        io.staged_directory(target) as staged,
        tempfile.TemporaryDirectory(prefix="tsad-events-") as spill,
    ):
        (staged / EVENT_INDEX).parent.mkdir()
        with (
            io.parquet_writer_atomic(staged / EVENT_INDEX, EVENT_INDEX_SCHEMA) as locate,
            io.parquet_writer_atomic(staged / SERIES_FILE, series_schema(spec, columns)) as add,
        ):
            for series in aggregate_day(
                io.read_batches(landing, columns),
                spec,
                day,
                shards_for(events_in(landing)),
                Path(spill),
                locate,
            ):
                add(series)
        io.write_text_atomic(json.dumps({"fingerprint": source}), staged / SOURCE_FILE)
    return target


def series_schema(spec: DatasetSpec, columns: list[str]) -> pa.Schema:
    """The series file's columns: canonical keys, one float per aggregate, the label if read."""
    fields = [
        pa.field(TIMESTAMP, pa.timestamp("ns", tz="UTC")),
        pa.field(ENTITY, pa.string()),
        *(pa.field(name, pa.float64()) for name in spec.feature_names),
    ]
    if spec.label_column and spec.label_column in columns:
        fields.append(pa.field(LABEL, pa.int8()))
    return pa.schema(fields)


def events_in(landing: Path) -> int:
    """The day's event count from Parquet footers (CSV: estimated from its size)."""
    total = 0
    for path in io.partition_files(landing):
        if path.suffix == ".parquet":
            total += pq.ParquetFile(path).metadata.num_rows
        else:
            total += path.stat().st_size // CSV_BYTES_PER_EVENT
    return total


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
