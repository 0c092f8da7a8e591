"""Getting a day in: snapshot it from the dataset's source, or wait until it has landed.

A dataset whose spec names a ``source`` is ingested once per day into the landing tree, so
validation, quarantine and scoring work on an immutable copy and a rerun scores exactly what
was scored before. A query that fails, or returns no rows, is rejected like a bad file: the
day goes to quarantine with its report. A day that has not landed yet is waited for until the
spec's ``landing.wait`` after the day's end, then fails as not landed (and is not quarantined:
nothing was rejected).
"""

from __future__ import annotations

import datetime as dt
import logging
import os

from pipeline.config import ConfigError, DatasetSpec, Settings, SinkSpec, SourceSpec, parse_duration
from pipeline.data import io, sources, storage
from pipeline.steps.validation import failed_report, reject

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "part-0.parquet"


class NotLanded(RuntimeError):
    """A day still missing at its deadline: a late or lost delivery, not a bad batch."""


def connection_url(spec: SourceSpec | SinkSpec, given: str | None = None) -> str:
    """The SQLAlchemy URL of a source or sink: ``given`` (from an Airflow connection) or the
    environment variable its spec names."""
    if given:
        return given
    value = os.environ.get(spec.url_env) if spec.url_env else None
    if not value:
        where = f"variable {spec.url_env}" if spec.url_env else f"connection {spec.connection}"
        raise ConfigError(f"no SQLAlchemy URL: set the {where} (see the dataset spec)")
    return value


def ingest(
    dataset: str, day: dt.date, settings: Settings | None = None, url: str | None = None
) -> str:
    """Snapshot the day from the dataset's source into its landing partition; its path.

    Nothing to do when the spec names no source (producers land files) or when the day was
    already snapshotted (the copy is immutable). ``url`` overrides the spec's ``url_env``.
    """
    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(dataset)
    landing = settings.partition("landing", dataset, day)
    if spec.source is None or storage.fetch(settings, landing).is_dir():
        return str(landing)
    url = connection_url(spec.source, url)
    failure = ""
    try:
        with storage.publish(settings, landing) as staged:
            rows = sources.snapshot_day(url, spec.source, day, staged / SNAPSHOT_FILE)
            if rows == 0:
                raise _NoRows
    except sources.SourceQueryFailed as exc:
        failure = str(exc)
    except _NoRows:
        failure = f"the source {sources.masked(url)} returned no rows for {day}"
    if failure:
        reject(settings, failed_report(dataset, day, failure), landing)
    log.info("%s %s: %d rows snapshotted from %s", dataset, day, rows, sources.masked(url))
    return str(landing)


class _NoRows(Exception):
    """The query ran and found nothing: the staged snapshot is dropped, the day rejected."""


def deadline(spec: DatasetSpec, day: dt.date) -> dt.datetime:
    """When a day must have landed: its end (UTC midnight after it) plus ``landing.wait``."""
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return end + parse_duration(spec.landing.wait, "landing wait")


def has_landed(
    dataset: str,
    day: dt.date,
    settings: Settings | None = None,
    url: str | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Whether the day is there to score: its landing partition holds files, or (SQL source)
    the source holds rows for it. Past its :func:`deadline` without it: :class:`NotLanded`."""
    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(dataset)
    landing = storage.fetch(settings, settings.partition("landing", dataset, day))
    landed = landing.is_dir() and any(
        path.suffix in io.READABLE_SUFFIXES and not path.name.startswith((".", "_"))
        for path in landing.iterdir()
    )
    if not landed and spec.source is not None:
        landed = sources.row_count(connection_url(spec.source, url), spec.source, day) > 0
    due = deadline(spec, day)
    if not landed and (now or dt.datetime.now(dt.UTC)) >= due:
        raise NotLanded(f"{dataset} {day} not landed by {due.isoformat()}")
    return landed
