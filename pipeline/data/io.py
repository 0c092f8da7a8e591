"""Reading and writing daily partitions, atomically.

Every write goes to a temporary name in the target directory and is renamed into place, so a
reader (or a crash) never sees a half-written file and a rerun replaces output instead of
duplicating it. Landing files are only ever read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import crash_points
from pipeline.config import ENTITY, LABEL, TIMESTAMP, DatasetSpec

READABLE_SUFFIXES = (".parquet", ".csv")
CSV_MISTAKEN_DELIMITERS = (";", "\t", "|")
# Rows decoded at a time when a partition is streamed: a few MB, whatever the day's size.
ROWS_PER_READ = 65_536


class BatchReadError(ValueError):
    """A partition that cannot be read: missing, empty, corrupt or of an unknown format."""


def partition_files(directory: Path) -> list[Path]:
    """Data files of a partition, in name order (hidden and temporary files skipped)."""
    if not directory.is_dir():
        raise BatchReadError(f"partition {directory} does not exist")
    files = sorted(
        path
        for path in directory.iterdir()
        if path.is_file() and path.suffix in READABLE_SUFFIXES and not path.name.startswith(".")
    )
    if not files:
        raise BatchReadError(f"partition {directory} holds no .parquet or .csv file")
    return files


def _read_file(path: Path, columns: Sequence[str] | None) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path, columns=list(columns) if columns else None)
        return _read_csv(path, columns)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise BatchReadError(f"cannot read {path.name}: {exc}") from exc


def _read_csv(path: Path, columns: Sequence[str] | None) -> pd.DataFrame:
    """A CSV file with its ISO 8601 timestamps parsed (text that is not one zone stays text).

    Timestamps with one UTC offset become tz-aware; naive or mixed-offset text is left as it
    is, so validation names the time-zone problem instead of a guess hiding it.
    """
    frame = pd.read_csv(path, usecols=list(columns) if columns else None)
    if frame.shape[1] == 1 and not columns:
        header = str(frame.columns[0])
        other = next((mark for mark in CSV_MISTAKEN_DELIMITERS if mark in header), None)
        if other is not None:
            raise ValueError(f"one column {header[:40]!r}...: separated by {other!r}, not ','")
    if TIMESTAMP in frame:
        with contextlib.suppress(ValueError, TypeError):
            frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], format="ISO8601")
    return frame


def read_partition(directory: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """All rows of a partition as it landed (source column names, source dtypes)."""
    frames = [_read_file(path, columns) for path in partition_files(directory)]
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise BatchReadError(f"partition {directory} holds no rows")
    return frame


def read_batches(
    directory: Path,
    columns: Sequence[str],
    since: pd.Timestamp | None = None,
    rows: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
) -> Iterator[pd.DataFrame]:
    """A partition's rows in batches of at most :data:`ROWS_PER_READ`, only ``columns`` read.

    Parquet decodes just the projected columns, one batch at a time, so streaming a day costs
    the memory of one batch, not of the day. ``since`` drops the rows of a Parquet
    ``timestamp`` column (an Arrow timestamp, naive read as UTC) before it, before they reach
    pandas; other rows (CSV, text timestamps) are all read, for the caller to filter.
    ``rows`` filters each Parquet batch the same way, before conversion (a shard's entities,
    :func:`pipeline.sharding.entity_rows`); CSV rows again reach the caller unfiltered.
    """
    for path in partition_files(directory):
        try:
            if path.suffix == ".parquet":
                batches = pq.ParquetFile(path).iter_batches(
                    batch_size=ROWS_PER_READ, columns=list(columns)
                )
                for batch in batches:
                    kept = _rows_since(batch, since)
                    yield (kept if rows is None else rows(kept)).to_pandas()
            else:
                yield from pd.read_csv(path, usecols=list(columns), chunksize=ROWS_PER_READ)
        except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
            raise BatchReadError(f"cannot read {path.name}: {exc}") from exc


def _rows_since(batch: pa.RecordBatch, since: pd.Timestamp | None) -> pa.RecordBatch:
    """``batch`` without the rows its Arrow ``timestamp`` column places before ``since``."""
    if since is None or TIMESTAMP not in batch.schema.names:
        return batch
    kind = batch.schema.field(TIMESTAMP).type
    if not pa.types.is_timestamp(kind):
        return batch
    # Stored values count units since the epoch, in UTC: keep from since in units, rounded up.
    per_unit = pd.Timedelta(1, unit=kind.unit).value
    first = -(-pd.Timestamp(since).value // per_unit)
    return batch.filter(pc.greater_equal(batch[TIMESTAMP].cast(pa.int64()), first))


def source_columns(spec: DatasetSpec) -> dict[str, str]:
    """Map source column names to canonical names for a dataset."""
    mapping = {TIMESTAMP: TIMESTAMP}
    if spec.entity_source:
        mapping[spec.entity_source] = ENTITY
    for feature in spec.features:
        mapping[feature.source or feature.name] = feature.name
    if spec.label_column:
        mapping[spec.label_column] = LABEL
    return mapping


def to_canonical(raw: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Convert a validated batch to the canonical frame (a new frame; ``raw`` is untouched).

    Columns: ``timestamp`` (UTC), ``entity`` (string), the features (float64) and ``label``
    (int8) when the batch carries labels. Unknown columns are dropped.
    """
    mapping = {source: name for source, name in source_columns(spec).items() if source in raw}
    frame = raw[list(mapping)].rename(columns=mapping)
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    if ENTITY not in frame:
        frame[ENTITY] = spec.default_entity
    frame[ENTITY] = frame[ENTITY].astype(str)
    for name in spec.feature_names:
        frame[name] = frame[name].astype("float64")
    columns = [TIMESTAMP, ENTITY, *spec.feature_names]
    if LABEL in frame:
        frame[LABEL] = frame[LABEL].astype("int8")
        columns.append(LABEL)
    return frame[columns]


def scoring_columns(spec: DatasetSpec) -> list[str]:
    """Source columns a model reads: timestamp, entity and features (labels are not read)."""
    return [source for source, name in source_columns(spec).items() if name != LABEL]


def partition_entities(directory: Path, spec: DatasetSpec) -> np.ndarray:
    """The sorted distinct entities of a partition, reading only its entity column."""
    if not spec.entity_source:
        return np.array([spec.default_entity], dtype=object)
    seen: set[str] = set()
    for batch in read_batches(directory, [spec.entity_source]):
        seen.update(batch[spec.entity_source].astype(str).unique())
    return np.array(sorted(seen), dtype=object)


def read_entities(directory: Path, spec: DatasetSpec, entities: Sequence[str]) -> pd.DataFrame:
    """Canonical rows of a partition's ``entities`` only, streamed: the rest is never held.

    Each batch is filtered on its source entity column before conversion, so only the few
    wanted rows are converted (entities compared as text, as :func:`to_canonical` makes them).
    """
    wanted = list(entities)
    parts = []
    for raw in read_batches(directory, scoring_columns(spec)):
        if spec.entity_source:
            chosen = raw[spec.entity_source].astype(str).isin(wanted).to_numpy()
        else:
            chosen = np.full(len(raw), spec.default_entity in wanted)
        parts.append(to_canonical(raw[chosen], spec))
    return pd.concat(parts, ignore_index=True)


@contextlib.contextmanager
def parquet_writer_atomic(
    target: Path, schema: pa.Schema
) -> Iterator[Callable[[pd.DataFrame], None]]:
    """Append frames to ``target`` as ``schema``; it appears complete, or not at all, at exit.

    The schema is explicit because a frame's own may differ from chunk to chunk (a list
    column that holds only ``None`` in one chunk has no element type to infer).
    """
    with _committed(target) as temporary:
        writer: pq.ParquetWriter | None = None

        def append(frame: pd.DataFrame) -> None:
            nonlocal writer
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False, nthreads=1)
            if writer is None:
                writer = pq.ParquetWriter(
                    temporary, table.schema, use_dictionary=_dictionary_columns(schema)
                )
            writer.write_table(table)
            crash_points.reached(f"append:{target.name}")

        try:
            yield append
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"no rows were written to {target}")


def concat_parquet_atomic(sources: Sequence[Path], target: Path) -> Path:
    """The rows of ``sources`` (files of one schema), in order, as one file at ``target``.

    One source is copied byte for byte; several are streamed batch by batch, written as
    :func:`parquet_writer_atomic` writes, so memory holds one batch whatever the total.
    """
    with _committed(target) as temporary:
        if len(sources) == 1:
            shutil.copyfile(sources[0], temporary)
            return target
        schema = pq.read_schema(sources[0])
        with pq.ParquetWriter(
            temporary, schema, use_dictionary=_dictionary_columns(schema)
        ) as writer:
            for source in sources:
                for batch in pq.ParquetFile(source).iter_batches(batch_size=ROWS_PER_READ):
                    writer.write_batch(batch)
    return target


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary encoding: all but those of floating point values.

    Measured values rarely repeat, so a dictionary for them is built only to be dropped when
    it grows too large: time spent for a larger file.
    """
    return [field.name for field in schema if not _holds_floats(field.type)]


def _holds_floats(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind) or (pa.types.is_list(kind) and _holds_floats(kind.value_type))


@contextlib.contextmanager
def _committed(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``, moved onto it once the block has written it.

    The one commit sequence of every atomic file write: the temporary is synced to disk before
    the rename and the directory after it, so a crash leaves the old file or the new one, never
    a torn one; a failed block leaves ``target`` as it was and no temporary behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        crash_points.reached(f"commit:{target.name}")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_parquet_atomic(
    frame: pd.DataFrame, target: Path, schema: pa.Schema | None = None
) -> Path:
    """Write ``frame`` to ``target`` so that it appears complete or not at all.

    An explicit ``schema`` types the columns even when the frame has no rows to infer from.
    """
    with _committed(target) as temporary:
        if schema is None:
            frame.to_parquet(temporary, index=False)
        else:
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            pq.write_table(table, temporary)
    return target


def write_text_atomic(text: str, target: Path) -> Path:
    """Write a small text file (JSON reports, summaries) atomically."""
    with _committed(target) as temporary:
        temporary.write_text(text)
    return target


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """An empty hidden folder beside ``target`` that replaces it whole once the block filled it.

    A reader of ``target`` sees the previous folder or the new one, never a mix of the two (a
    day's scores without its summary, a detector's weights beside another's config). A failed
    block leaves ``target`` as it was; what a killed one left, :func:`recover_directory`
    clears first: the caller is ``target``'s one writer (it holds its lock, or owns its run).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    staged.mkdir()
    try:
        yield staged
        replace_directory(staged, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def recover_directory(target: Path) -> None:
    """Undo what a writer killed in :func:`staged_directory` left beside ``target``.

    A staged folder never moved in is deleted. A folder moved aside but never replaced (the
    kill fell between the two renames) is moved back, so the previous output is whole again.
    """
    for staged in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(staged)
    for retired in target.parent.glob(f".{target.name}.*.old"):
        if target.exists():
            shutil.rmtree(retired)
        else:
            os.replace(retired, target)


@contextlib.contextmanager
def exclusive_partition(directory: Path) -> Iterator[Path]:
    """Hold the one writer's lock of an output partition while a step writes to it.

    A second writer for the same partition waits, so two runs for one day replace the output
    one after the other and never interleave. The lock is an ``flock`` on a hidden file beside
    the partition, released by the kernel even when its holder is killed; whoever takes it next
    removes the temporary files a killed writer left behind (no live writer can own them).
    """
    lock = directory.with_name(f".{directory.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            remove_temporaries(directory)
            yield directory
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the ``.*.tmp`` files an interrupted atomic write left in ``directory``."""
    stale = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def replace_directory(staged: Path, target: Path) -> Path:
    """Move a fully written ``staged`` directory to ``target``, replacing an older one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    crash_points.reached(f"staged:{target.name}")
    if target.exists():
        retired = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
        os.replace(target, retired)
        crash_points.reached(f"swap:{target.name}")
        os.replace(staged, target)
        shutil.rmtree(retired)
    else:
        os.replace(staged, target)
    _fsync_directory(target.parent)
    return target


def quarantine_batch(
    landing: Path, quarantine: Path, report_json: str, report_html: str = ""
) -> Path:
    """Copy a rejected batch and its validation report to quarantine; landing stays as it is.

    ``report_html``, the report's Data Docs page, goes beside the JSON when there is one.
    """
    quarantine.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=quarantine.parent, prefix=f".{quarantine.name}."))
    copy_rejected(landing, staged, report_json, report_html)
    return replace_directory(staged, quarantine)


def copy_rejected(landing: Path, staged: Path, report_json: str, report_html: str = "") -> None:
    """Fill a quarantine folder being staged: the batch's files and its validation report."""
    if landing.is_dir():
        for path in landing.iterdir():
            if path.is_file() and not path.name.startswith("."):
                shutil.copy2(path, staged / path.name)
    (staged / "validation_report.json").write_text(report_json)
    if report_html:
        (staged / "validation_report.html").write_text(report_html)
