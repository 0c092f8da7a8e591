"""A day scored as shards, then merged: each shard's part on disk, and the merge of all of them.

Shard ``k`` of ``n`` scores its entities (:mod:`pipeline.sharding`) into a folder of its own:
its rows of the day's scores file, and the parts of the summary that add up across entities
(:class:`pipeline.daily.DayParts`: counts, alarm rows, ranking rows, drift bin counts) in
``shard.json`` and two small Parquet files. The final step (:func:`merge_shards`) checks that
every shard of the same count and model version is there, concatenates the scores and adds the
parts, so the day's episodes, drift, report and summary are computed once, from the same
figures an unsharded run has. Nothing here knows MLflow, validation or the store: the scoring
step hands it local folders.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline import monitoring
from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec
from pipeline.daily import SCORES_FILE, DayParts, score_parts
from pipeline.data import io
from pipeline.scoring import ModelBundle, PartitionScores
from pipeline.sharding import Shard

SHARD_FILE = "shard.json"
ALARM_ROWS_FILE = "alarm_rows.parquet"
ENTITY_ALARMS_FILE = "entity_alarms.parquet"


class ShardsIncomplete(RuntimeError):
    """A day whose shards are not all there, for one shard count and one model version."""


def score_shard(
    bundle: ModelBundle,
    spec: DatasetSpec,
    day: dt.date,
    landing: Path,
    context: Path | None,
    out: Path,
    model: tuple[str, str],
    shard: Shard,
) -> dict:
    """Score ``shard``'s entities of a validated day into the folder ``out``; returns its part.

    ``model`` is the registered name and version (the scores' constant columns). Only the
    shard's rows of the day and of the ``context`` partition are read.
    """
    model_name, model_version = model
    parts = score_parts(bundle, spec, day, landing, context, out, model, shard)
    totals = parts.totals
    io.write_parquet_atomic(parts.alarm_rows, out / ALARM_ROWS_FILE)
    io.write_parquet_atomic(parts.entity_alarms, out / ENTITY_ALARMS_FILE)
    written = {
        "dataset": spec.name,
        "date": day.isoformat(),
        "shard": shard.index,
        "shards": shard.count,
        "model_name": model_name,
        "model_version": model_version,
        "rows": totals.rows,
        "entities": totals.entities,
        "anomalies": totals.anomalies,
        "flagged_rows": totals.flagged_rows,
        "drift_counts": None if parts.drift is None else parts.drift.counts(),
    }
    io.write_text_atomic(json.dumps(written, indent=2), out / SHARD_FILE)
    return written


def read_part(folder: Path) -> dict | None:
    """A shard folder's ``shard.json``; None when the shard was never committed."""
    path = folder / SHARD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def check_complete(parts: Sequence[dict | None], shards: int, model_version: str) -> None:
    """Refuse a day unless each of its ``shards`` is there, scored by ``model_version``."""
    missing = [
        f"{index}/{shards}"
        for index, part in enumerate(parts)
        if part is None or part["shards"] != shards or part["shard"] != index
    ]
    if missing:
        raise ShardsIncomplete(
            f"shards {', '.join(missing)} not scored yet: run them, then finalize again"
        )
    stale = [
        f"{index}/{shards} (version {part['model_version']})"
        for index, part in enumerate(parts)
        if part is not None and part["model_version"] != model_version
    ]
    if stale:
        raise ShardsIncomplete(
            f"shards {', '.join(stale)} were scored by another model than the @production "
            f"version {model_version}: score them again"
        )


def merge_shards(bundle: ModelBundle, folders: Sequence[Path], out: Path) -> DayParts:
    """Concatenate the shards' scores into ``out`` and add up their parts.

    The caller checked them complete (:func:`check_complete`). The ranking and alarm rows
    are put in entity order, the order one unsharded run produces them in.
    """
    parts = [read_part(folder) or {} for folder in folders]
    io.concat_parquet_atomic([folder / SCORES_FILE for folder in folders], out / SCORES_FILE)
    flagged: dict[str, int] = {}
    for part in parts:
        for name, count in part["flagged_rows"].items():
            flagged[name] = flagged.get(name, 0) + count
    totals = PartitionScores(
        rows=sum(part["rows"] for part in parts),
        entities=sum(part["entities"] for part in parts),
        anomalies=sum(part["anomalies"] for part in parts),
        flagged_rows=dict(sorted(flagged.items())),
    )
    drift = None
    if bundle.profile is not None:
        drift = monitoring.DriftAccumulator(bundle.profile)
        for part in parts:
            drift.add_counts(part["drift_counts"])
    return DayParts(
        totals,
        _in_entity_order([pd.read_parquet(f / ENTITY_ALARMS_FILE) for f in folders], [ENTITY]),
        _in_entity_order(
            [pd.read_parquet(f / ALARM_ROWS_FILE) for f in folders], [ENTITY, TIMESTAMP]
        ),
        drift,
    )


def _in_entity_order(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """The rows of ``frames`` together, sorted by ``keys`` (stable; empty frames skipped)."""
    present = [frame for frame in frames if len(frame)] or frames[:1]
    merged = pd.concat(present, ignore_index=True)
    if len(frames) == 1:
        return merged
    return merged.sort_values(keys, kind="stable", ignore_index=True)
