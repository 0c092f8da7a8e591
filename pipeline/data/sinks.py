"""A scored day written to a SQL table: one transaction that replaces the (dataset, day).

The table has the scores file's columns plus ``dataset`` and ``day`` (list columns, the top
features and their contributions, as comma-separated text). The day's previous rows are
deleted and the new ones inserted in one transaction, so a rerun, or a retry after the
database went away mid-day, leaves exactly one copy. The scores partition stays the source of
truth: the table can always be refilled from it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import SinkSpec
from pipeline.data.sources import masked, scrubbed

ATTEMPTS = 3
ROWS_PER_INSERT = 10_000


class SinkFailed(RuntimeError):
    """The sink's table could not be written after its retries (its URL's password masked)."""


def _rows(scores: Path, sink: SinkSpec) -> Iterator[pd.DataFrame]:
    """The day's rows for the table, streamed from the scores file a batch at a time."""
    for batch in pq.ParquetFile(scores).iter_batches(batch_size=ROWS_PER_INSERT):
        if sink.rows == "alarms":
            batch = batch.filter(pc.equal(batch["is_anomaly"], True))
        if batch.num_rows:
            frame = batch.to_pandas()
            for column in ("top_features", "contributions"):
                if column in frame:
                    frame[column] = frame[column].map(
                        lambda items: None if items is None else ",".join(map(str, items))
                    )
            yield frame


def _replace_day(url: str, sink: SinkSpec, dataset: str, day: dt.date, scores: Path) -> int:
    from sqlalchemy import Column, Date, MetaData, String, Table, create_engine, delete

    engine = create_engine(url, pool_pre_ping=True)
    try:
        with engine.begin() as connection:  # one transaction: delete the day, insert it again
            table = Table(
                sink.table, MetaData(), Column("dataset", String(64)), Column("day", Date)
            )
            if engine.dialect.has_table(connection, sink.table):
                connection.execute(
                    delete(table).where(table.c.dataset == dataset, table.c.day == day)
                )
            written = 0
            for frame in _rows(scores, sink):
                frame.insert(0, "day", day)
                frame.insert(0, "dataset", dataset)
                frame.to_sql(sink.table, connection, if_exists="append", index=False)
                written += len(frame)
            return written
    finally:
        engine.dispose()


def write_day(url: str, sink: SinkSpec, dataset: str, day: dt.date, scores: Path) -> int:
    """Replace the day's rows in the sink's table; the number of rows written.

    A failure is retried (the transaction rolled back each time); the last one raises
    :class:`SinkFailed` naming the table and the masked URL.
    """
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(1, ATTEMPTS):
        try:
            return _replace_day(url, sink, dataset, day, scores)
        except SQLAlchemyError:
            time.sleep(2**attempt)
    try:
        return _replace_day(url, sink, dataset, day, scores)
    except SQLAlchemyError as exc:
        reason = scrubbed(str(exc), url).splitlines()[0]
        raise SinkFailed(
            f"sink table {sink.table} on {masked(url)}: {dataset} {day} not written "
            f"after {ATTEMPTS} attempts: {reason}"
        ) from None
