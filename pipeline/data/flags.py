"""Per-row notes on data that a policy let through, so the scores say what was unusual.

Validation rejects a batch that cannot be scored honestly. Three oddities pass by policy instead,
and each marks the rows it touched in the scores' ``flags`` column (names joined by ``,``, empty
when a row is unremarkable), so a reader of one score can tell how far to trust it:

- ``out_of_order``: the row landed after a later row of its entity; rows are sorted by time
  before scoring, so its score is as good as any other.
- ``unseen_entity``: the model never saw this entity in training; it is scored with what the
  model learnt from the others.
- ``after_gap``: fewer than one window of the entity's readings precede the row without a gap
  (the day's first rows without the previous day, or the rows after a break in the readings).
  Windows never span a gap, so such a row is scored from a window padded with its first reading.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from pipeline.config import ENTITY, TIMESTAMP
from pipeline.data.windows import segment_bounds, timestamps_ns

OUT_OF_ORDER = "out_of_order"
UNSEEN_ENTITY = "unseen_entity"
AFTER_GAP = "after_gap"
FLAGS = "flags"


def out_of_order(landed: pd.DataFrame) -> np.ndarray:
    """Rows, in landing order, that came after a later row of the same entity."""
    times = pd.Series(timestamps_ns(landed[TIMESTAMP]))
    latest_so_far = times.groupby(landed[ENTITY].to_numpy()).cummax()
    return (latest_so_far > times).to_numpy()


def after_gap(
    ordered: pd.DataFrame, context: pd.DataFrame | None, step: pd.Timedelta, window: int
) -> np.ndarray:
    """Rows of ``ordered`` (sorted by entity, time) with under a window of gap-free history.

    ``context`` holds earlier readings (the previous day) that count as history.
    """
    history = ordered[[ENTITY, TIMESTAMP]].assign(own=True)
    if context is not None and len(context):
        earlier = context[[ENTITY, TIMESTAMP]].assign(own=False)
        history = pd.concat([earlier, history], ignore_index=True)
        history = history.sort_values([ENTITY, TIMESTAMP], kind="stable", ignore_index=True)
    # Scoring cuts windows at these same bounds, so a row's place in its segment is exactly
    # the gap-free history its window sees.
    bounds = segment_bounds(history, step)
    position = np.arange(len(history)) - np.repeat(bounds[:-1], np.diff(bounds))
    return position[history["own"].to_numpy()] < window - 1


def row_flags(
    landed: pd.DataFrame,
    context: pd.DataFrame | None,
    known_entities: Collection[str] | None,
    step: pd.Timedelta,
    window: int,
) -> pd.DataFrame:
    """``timestamp``, ``entity`` and ``flags`` for every row of a canonical day, sorted.

    ``known_entities`` is None for a model that did not record its training entities, which
    then flags none as unseen.
    """
    disorder = pd.Series(out_of_order(landed), index=landed.index)
    ordered = landed.sort_values([ENTITY, TIMESTAMP], kind="stable")
    notes = {
        OUT_OF_ORDER: disorder.loc[ordered.index].to_numpy(),
        UNSEEN_ENTITY: (
            np.zeros(len(ordered), dtype=bool)
            if known_entities is None
            else ~ordered[ENTITY].isin(list(known_entities)).to_numpy()
        ),
        AFTER_GAP: after_gap(ordered, context, step, window),
    }
    labels = np.full(len(ordered), "", dtype=object)
    for name, marked in notes.items():
        labels[marked] = np.where(labels[marked] == "", name, labels[marked] + "," + name)
    return pd.DataFrame(
        {
            TIMESTAMP: ordered[TIMESTAMP].reset_index(drop=True),
            ENTITY: ordered[ENTITY].reset_index(drop=True),
            FLAGS: pd.array(labels, dtype="string"),
        }
    )


def annotate(scores: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with a ``flags`` column, matched on ``(entity, timestamp)``."""
    keyed = flags.set_index([ENTITY, TIMESTAMP])[FLAGS]
    key = pd.MultiIndex.from_arrays([scores[ENTITY], pd.DatetimeIndex(scores[TIMESTAMP])])
    matched = keyed.reindex(key)
    if matched.isna().any():
        raise ValueError("scores hold rows the day's data does not: cannot attach flags")
    return scores.assign(**{FLAGS: matched.to_numpy()})


def counts(flags: pd.Series) -> dict[str, int]:
    """How many rows carry each flag."""
    names = flags[flags != ""].str.split(",").explode()
    return {name: int(count) for name, count in names.value_counts().sort_index().items()}
