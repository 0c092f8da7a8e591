"""A day read from a SQL source, in batches, into a Parquet snapshot for the landing tree.

The query binds the day's bounds (``:start``, ``:end``: UTC midnight to midnight, end
excluded) and is read with a server-side cursor ``batch_rows`` rows at a time, each batch
appended to the snapshot: memory holds one batch, not the day. Credentials never leave this
module: every message names the source by its URL with the password masked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import SourceSpec


class SourceUnavailable(RuntimeError):
    """The source could not be reached: worth a retry, not a verdict on the day's data."""


class SourceQueryFailed(RuntimeError):
    """The source answered but its query failed: the day is rejected like a bad file."""


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``: safe for logs, reports and errors."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<a SQLAlchemy URL that does not parse>"


def sqlalchemy_url(uri: str) -> str:
    """An Airflow connection's URI as SQLAlchemy takes it (``postgres://`` is not a dialect)."""
    return (
        "postgresql://" + uri.removeprefix("postgres://") if uri.startswith("postgres://") else uri
    )


def scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's message) with the URL's password, if it appears, masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except ArgumentError:
        return text
    return text.replace(str(password), "***") if password else text


def day_bounds(day: dt.date) -> dict[str, dt.datetime]:
    """The bound parameters of a day's query: its first instant and the next day's, in UTC."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return {"start": start, "end": start + dt.timedelta(days=1)}


def _batches(url: str, source: SourceSpec, day: dt.date) -> Iterator[pd.DataFrame]:
    """The day's rows, ``batch_rows`` at a time, from one connection's server-side cursor."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url, pool_pre_ping=True)
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise SourceUnavailable(
                f"cannot connect to {masked(url)}: {scrubbed(str(exc.__cause__ or exc), url)}"
            ) from None
        with connection:
            streaming = connection.execution_options(stream_results=True)
            try:
                yield from pd.read_sql(
                    text(source.query), streaming, params=day_bounds(day),
                    chunksize=source.batch_rows,
                )  # fmt: skip
            except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
                # pandas wraps the driver's error; its message repeats the whole statement.
                cause = exc.__cause__ if isinstance(exc.__cause__, SQLAlchemyError) else exc
                reason = str(getattr(cause, "orig", None) or cause)
                reason = scrubbed(reason, url).splitlines()[0]
                raise SourceQueryFailed(f"query on {masked(url)} failed: {reason}") from None
    finally:
        engine.dispose()


def snapshot_day(url: str, source: SourceSpec, day: dt.date, target: Path) -> int:
    """Write the day's rows to the Parquet file ``target``; the number of rows (0: no file).

    Every batch takes the first one's column types, so a batch whose column holds only NULLs
    keeps the type the day has.
    """
    rows, writer, schema = 0, None, None
    try:
        for frame in _batches(url, source, day):
            if not len(frame):
                continue
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(target, schema)
            writer.write_table(table)
            rows += len(frame)
    finally:
        if writer is not None:
            writer.close()
    return rows


def row_count(url: str, source: SourceSpec, day: dt.date) -> int:
    """How many rows the source holds for the day now: what waiting for it polls."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    count = source.count_query or f"SELECT COUNT(*) FROM ({source.query}) AS day_rows"
    engine = create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(count), day_bounds(day)).scalar_one())
    except SQLAlchemyError as exc:
        raise SourceUnavailable(
            f"counting rows on {masked(url)} failed: {scrubbed(str(exc), url).splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()
