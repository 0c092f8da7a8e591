"""A day's rows regrouped into chunks of whole entities, in one streaming pass.

Scoring needs all rows of an entity together, but a day's export may list them in any order;
spilling each batch's rows to one file per chunk keeps memory to one batch plus one chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec
from pipeline.data.io import read_batches, scoring_columns, to_canonical

# Column of a regrouped chunk naming the partition (by position) each row came from.
PARTITION = "__tsad_partition"


def _chunk_schema(spec: DatasetSpec) -> pa.Schema:
    return pa.schema(
        [
            pa.field(TIMESTAMP, pa.timestamp("ns", tz="UTC")),
            pa.field(ENTITY, pa.string()),
            *(pa.field(name, pa.float64()) for name in spec.feature_names),
            pa.field(PARTITION, pa.int8()),
        ]
    )


def regroup_by_entity(
    partitions: Sequence[Path],
    spec: DatasetSpec,
    chunks: Sequence[np.ndarray],
    spill_dir: Path,
    since: Sequence[pd.Timestamp | None] | None = None,
    row_filter: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
) -> Iterator[pd.DataFrame]:
    """Canonical rows of ``partitions`` regrouped into ``chunks`` of entities, one by one.

    A day's export may list its rows in any order (often by time, every entity interleaved).
    One streaming pass over each partition appends each batch's rows to a spill file per chunk
    in ``spill_dir``; reading a chunk back gives all rows of its entities. Peak memory is one
    read batch plus one chunk, so it does not grow with the number of entities. Rows of
    entities outside ``chunks`` are dropped; the :data:`PARTITION` column holds the position
    in ``partitions`` each row came from. ``since`` gives, per partition, the earliest
    timestamp kept (``None``: every row). ``row_filter``, a filter of each decoded Arrow batch,
    keeps a shard's rows before they are converted (the rest would be dropped here anyway).
    """
    schema = _chunk_schema(spec)
    since = since or [None] * len(partitions)
    entities = pa.array(np.concatenate(chunks) if chunks else [], pa.string())
    chunk_of = np.repeat(np.arange(len(chunks)), [len(chosen) for chosen in chunks])
    paths = [spill_dir / f"chunk-{index}.arrows" for index in range(len(chunks))]
    writers: dict[int, pa.RecordBatchStreamWriter] = {}
    try:
        for position, (directory, earliest) in enumerate(zip(partitions, since, strict=True)):
            for raw in read_batches(directory, scoring_columns(spec), earliest, row_filter):
                frame = to_canonical(raw, spec)
                frame[PARTITION] = np.int8(position)
                codes = _chunk_codes(frame, entities, chunk_of, earliest)
                # One conversion per batch, on this thread: Arrow's default spawns a thread
                # pool per call, which costs more than it saves on a few MB.
                batch = pa.RecordBatch.from_pandas(
                    frame, schema=schema, preserve_index=False, nthreads=1
                )
                for index, rows in _rows_by_chunk(codes):
                    if index not in writers:
                        writers[index] = pa.ipc.new_stream(paths[index], schema)
                    writers[index].write_batch(batch.take(rows))
    finally:
        for writer in writers.values():
            writer.close()
    for index, path in enumerate(paths):
        if index in writers:
            with pa.ipc.open_stream(path) as reader:
                yield reader.read_pandas()
            path.unlink()


def _chunk_codes(
    frame: pd.DataFrame,
    entities: pa.Array,
    chunk_of: np.ndarray,
    earliest: pd.Timestamp | None,
) -> np.ndarray:
    """The chunk of each row of a canonical batch; -1 for a row no chunk keeps.

    A row is not kept when its entity is in no chunk or it is before ``earliest`` (Parquet
    rows mostly dropped so already, CSV ones only here). Entities are looked up in Arrow,
    where the entity column lives: a pandas lookup would box every one into a Python string.
    """
    column = pa.array(frame[ENTITY])
    found = pc.index_in(column, value_set=entities.cast(column.type))
    positions = pc.fill_null(found, -1).to_numpy()
    codes = np.append(chunk_of, -1)[positions]  # an entity not found (-1) picks the last: -1
    if earliest is not None:
        codes[~(frame[TIMESTAMP] >= earliest).to_numpy()] = -1
    return codes


def _rows_by_chunk(codes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Each chunk present in ``codes`` with its rows, in their order (rows coded -1 skipped)."""
    order = np.argsort(codes, kind="stable")
    for rows in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):
        if len(rows) and codes[rows[0]] >= 0:
            yield int(codes[rows[0]]), rows
