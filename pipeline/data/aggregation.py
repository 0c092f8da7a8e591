"""Events to a regular per-entity series: a day's payments become per-account buckets.

A bucket's aggregates are combined exactly from partial ones, so a day is streamed batch by
batch (:func:`pipeline.data.io.read_batches`) and never held whole: each batch is grouped by
entity and bucket into partial counts, sums, maxima, first and last times and label maxima
(pandas grouping on the Arrow-read batch), and partials are merged the same way once enough
have gathered. A mean is a merged sum over a merged count; a distinct count merges the
deduplicated (entity, bucket, value) triples. What is held is one row per non-empty bucket,
however many events fill it.

The result is the canonical frame: every bucket of the day (the bucket belongs to the day it
starts in; buckets divide the day exactly) for every entity seen that day, one float column per
aggregate, and ``label`` when the events carry labels (a bucket is anomalous when any of its
events is). Beside it, each batch yields its events' (entity, bucket, event id) rows, so an
alarm on a bucket can name the payments inside it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import (
    ENTITY,
    LABEL,
    TIMESTAMP,
    DatasetSpec,
    EventsSpec,
    parse_duration,
)
from pipeline.spec_parts import AggregateSpec

EVENT_ID = "event_id"
_COUNT = "n"
_FIRST, _LAST = "first_ns", "last_ns"
_KEYS = [ENTITY, TIMESTAMP]
# Partial rows gathered before they are merged: bounds memory at a few tens of MB.
PENDING_ROWS = 1_000_000
# Events aggregated together: a larger day is first split by entity into shards of about this
# size, so the buckets held at once (every bucket of a shard's entities, empty ones included)
# and the series built at once do not grow with the day.
EVENTS_PER_SHARD = 50_000
SPILL_ROWS = 65_536


class EventAggregator:
    """Accumulates a day's events batch by batch; :meth:`result` is the day's bucketed series."""

    def __init__(self, spec: DatasetSpec, day: dt.date) -> None:
        if spec.events is None:
            raise ValueError(f"dataset {spec.name!r} describes no event source")
        self._spec, self._events = spec, spec.events
        self._width = pd.Timedelta(parse_duration(spec.events.bucket, "bucket")).value
        self._start = pd.Timestamp(day, tz="UTC").value
        self._labeled: bool | None = None
        self._partials: list[pd.DataFrame] = []
        self._pending = 0
        self._distinct: dict[str, list[pd.DataFrame]] = {
            aggregate.name: [] for aggregate in self._of_kind("distinct")
        }

    def _of_kind(self, *kinds: str) -> list[AggregateSpec]:
        return [aggregate for aggregate in self._events.aggregates if aggregate.kind in kinds]

    def add(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Add one batch of raw events (source columns); returns its events' bucket keys.

        The returned rows (``entity``, ``timestamp`` bucket start, ``event_id``) locate each
        event in the series.
        """
        if self._labeled is None:
            self._labeled = bool(self._spec.label_column) and self._spec.label_column in batch
        entity_column = self._spec.entity_source
        entities = (
            batch[entity_column].astype(str).to_numpy()
            if entity_column
            else np.full(len(batch), self._spec.default_entity, dtype=object)
        )
        times = _epoch_ns(batch[TIMESTAMP])
        keyed = pd.DataFrame(
            {ENTITY: entities, TIMESTAMP: times - (times - self._start) % self._width}
        )
        for aggregate in self._of_kind("distinct"):
            triples = keyed.assign(value=batch[aggregate.field].astype(str).to_numpy())
            self._distinct[aggregate.name].append(triples.drop_duplicates())
        self._add_partials(keyed, batch, times)
        index = keyed.assign(**{EVENT_ID: batch[self._events.event_id].astype(str).to_numpy()})
        index[TIMESTAMP] = _as_utc(index[TIMESTAMP].to_numpy())
        return index

    def _add_partials(self, keyed: pd.DataFrame, batch: pd.DataFrame, times: np.ndarray) -> None:
        columns: dict[str, np.ndarray] = {_COUNT: np.ones(len(batch))}
        for aggregate in self._of_kind("sum", "mean"):
            columns[f"sum:{aggregate.field}"] = batch[aggregate.field].to_numpy(dtype="float64")
        for aggregate in self._of_kind("max"):
            columns[f"max:{aggregate.field}"] = batch[aggregate.field].to_numpy(dtype="float64")
        for aggregate in self._of_kind("share"):
            hits = batch[aggregate.field].astype(str).to_numpy() == aggregate.value
            columns[f"hits:{aggregate.name}"] = hits.astype("float64")
        if self._of_kind("time_since_previous"):
            # Held from the day's start, so that float64 keeps every nanosecond exactly.
            columns[_FIRST] = columns[_LAST] = times - self._start
        if self._labeled:
            columns[LABEL] = batch[self._spec.label_column].to_numpy(dtype="float64")
        partial = _merge(keyed.assign(**columns))
        self._partials.append(partial)
        self._pending += len(partial)
        if self._pending > PENDING_ROWS:
            self._compact()

    def _compact(self) -> None:
        self._partials = [_merge(pd.concat(self._partials, ignore_index=True))]
        self._pending = len(self._partials[0])
        for name, parts in self._distinct.items():
            self._distinct[name] = [pd.concat(parts, ignore_index=True).drop_duplicates()]

    @property
    def has_events(self) -> bool:
        return bool(self._partials)

    def result(self) -> pd.DataFrame:
        """The day's canonical series: every bucket of the day for every entity seen."""
        if not self._partials:
            raise ValueError("no events were added: a day needs at least one")
        self._compact()
        state = self._partials[0]
        entities = np.sort(state[ENTITY].unique())
        buckets = self._start + self._width * np.arange(pd.Timedelta(days=1).value // self._width)
        grid = pd.MultiIndex.from_product([entities, buckets], names=_KEYS)
        state = state.set_index(_KEYS).reindex(grid)
        count = state[_COUNT].fillna(0.0)
        series = pd.DataFrame(
            {TIMESTAMP: _as_utc(grid.get_level_values(TIMESTAMP).to_numpy())}, index=grid
        )
        series[ENTITY] = grid.get_level_values(ENTITY).astype(str)
        for aggregate in self._events.aggregates:
            values = self._values(aggregate, state, count, grid)
            series[aggregate.name] = np.log1p(values) if aggregate.transform == "log1p" else values
        if self._labeled:
            series[LABEL] = state[LABEL].fillna(0.0).astype("int8")
        return series.reset_index(drop=True)

    def _values(
        self, aggregate: AggregateSpec, state: pd.DataFrame, count: pd.Series, grid: pd.MultiIndex
    ) -> np.ndarray:
        """One aggregate over the grid; empty buckets get its fill."""
        empty, fill = count.to_numpy() == 0, aggregate.empty_value
        match aggregate.kind:
            case "count":
                values = count.to_numpy()
            case "sum":
                values = state[f"sum:{aggregate.field}"].to_numpy()
            case "mean":
                values = state[f"sum:{aggregate.field}"].to_numpy() / np.where(empty, 1, count)
            case "max":
                values = state[f"max:{aggregate.field}"].to_numpy()
            case "share":
                values = state[f"hits:{aggregate.name}"].to_numpy() / np.where(empty, 1, count)
            case "distinct":
                triples = self._distinct[aggregate.name][0]
                values = triples.groupby(_KEYS).size().reindex(grid).to_numpy(dtype="float64")
                empty = np.isnan(values)
            case "time_since_previous":
                values = _seconds_since_previous(state)
                empty = np.isnan(values)
                values = np.minimum(values, fill)
        return np.where(empty, fill, values).astype("float64")


def _seconds_since_previous(state: pd.DataFrame) -> np.ndarray:
    """Seconds from the entity's latest event before each bucket to the bucket's first event.

    NaN where the bucket is empty or holds the entity's first event of the day.
    """
    entity = state.index.get_level_values(ENTITY)
    earlier_last = state[_LAST].groupby(entity).ffill().groupby(entity).shift(1)
    return ((state[_FIRST] - earlier_last) / 1e9).to_numpy(dtype="float64")


def _merge(partials: pd.DataFrame) -> pd.DataFrame:
    """Partial rows of the same (entity, bucket) merged into one: exact for every aggregate."""
    how = {
        column: (column, _merge_rule(column)) for column in partials.columns if column not in _KEYS
    }
    return partials.groupby(_KEYS, sort=False).agg(**how).reset_index()


def _merge_rule(column: str) -> str:
    if column == _FIRST:
        return "min"
    if column in (_LAST, LABEL) or column.startswith("max:"):
        return "max"
    return "sum"


def _epoch_ns(timestamps: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) of a timestamp column, parsed if it is text."""
    parsed = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True, format="ISO8601"))
    return parsed.as_unit("ns").asi8


def _as_utc(epoch_ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(epoch_ns.astype("datetime64[ns]")).tz_localize("UTC")


def aggregate_events(
    batches: Iterable[pd.DataFrame], spec: DatasetSpec, day: dt.date
) -> pd.DataFrame:
    """The bucketed series of a day's event batches (the event locations are dropped)."""
    aggregator = EventAggregator(spec, day)
    for batch in batches:
        aggregator.add(batch)
    return aggregator.result()


def shards_for(events: int) -> int:
    """How many entity shards a day of ``events`` is aggregated in."""
    return max(1, math.ceil(events / EVENTS_PER_SHARD))


def aggregate_day(
    batches: Iterable[pd.DataFrame],
    spec: DatasetSpec,
    day: dt.date,
    shards: int,
    spill: Path,
    locate: Callable[[pd.DataFrame], None],
) -> Iterator[pd.DataFrame]:
    """The day's series, one entity shard at a time; each event's bucket key goes to ``locate``.

    With one shard the batches are aggregated as they come. With more, a first pass writes
    each batch's rows to their entity's shard file under ``spill`` and a second aggregates
    the shards one by one: every entity lies in one shard, so each yielded frame is the
    whole series of its entities, and memory follows a shard, not the day.
    """
    if shards == 1:
        sources: Iterable[Iterable[pd.DataFrame]] = [batches]
    else:
        sources = (_read_spilled(path) for path in _spill_by_entity(batches, spec, shards, spill))
    for source in sources:
        aggregator = EventAggregator(spec, day)
        for batch in source:
            locate(aggregator.add(batch))
        if aggregator.has_events:
            yield aggregator.result()


def _spill_by_entity(
    batches: Iterable[pd.DataFrame], spec: DatasetSpec, shards: int, spill: Path
) -> list[Path]:
    """Write every batch's rows to the shard file of their entity; returns the files written."""
    paths = [spill / f"shard-{number}.parquet" for number in range(shards)]
    writers: dict[int, pq.ParquetWriter] = {}
    schema: pa.Schema | None = None
    try:
        for batch in batches:
            table = pa.Table.from_pandas(batch, preserve_index=False)
            schema = schema or table.schema
            table = table.cast(schema)
            entities = (
                batch[spec.entity_source].astype(str).to_numpy(dtype=object)
                if spec.entity_source
                else np.full(len(batch), spec.default_entity, dtype=object)
            )
            shard = pd.util.hash_array(entities) % shards
            for number in np.unique(shard):
                if number not in writers:
                    writers[number] = pq.ParquetWriter(paths[number], schema)
                writers[number].write_table(table.filter(pa.array(shard == number)))
    finally:
        for writer in writers.values():
            writer.close()
    return [paths[number] for number in sorted(writers)]


def _read_spilled(path: Path) -> Iterator[pd.DataFrame]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=SPILL_ROWS):
        yield batch.to_pandas()


def event_columns(spec: DatasetSpec) -> list[str]:
    """Source columns aggregation reads: timestamp, entity, event id, fields, label."""
    events: EventsSpec | None = spec.events
    if events is None:
        raise ValueError(f"dataset {spec.name!r} describes no event source")
    entity = [spec.entity_source] if spec.entity_source else []
    label = [spec.label_column] if spec.label_column else []
    return [TIMESTAMP, *entity, events.event_id, *events.fields, *label]
