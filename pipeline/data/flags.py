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
import pyarrow as pa

from pipeline.config import ENTITY, TIMESTAMP
from pipeline.data.windows import entity_time_order, segment_bounds, timestamps_ns

OUT_OF_ORDER = "out_of_order"
UNSEEN_ENTITY = "unseen_entity"
AFTER_GAP = "after_gap"
FLAGS = "flags"


def out_of_order(landed: pd.DataFrame) -> np.ndarray:
    """Rows, in landing order, that came after a later row of the same entity."""
    codes, _, _, order = entity_time_order(landed)
    return _landed_late(codes, order)


def _landed_late(codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """:func:`out_of_order` of rows with entity ``codes``, given their entity-then-time order.

    A row's place in that order ranks it by time within its entity (equal times by landing),
    and each entity's places lie above the previous entity's: so one running maximum of the
    places, taken entity by entity in landing order, says whether a later row came first.
    """
    place = np.empty(len(order), dtype=np.int64)
    place[order] = np.arange(len(order))
    by_entity = np.argsort(codes, kind="stable")
    late = np.empty(len(order), dtype=bool)
    late[by_entity] = np.maximum.accumulate(place[by_entity]) > place[by_entity]
    return late


def row_flags(
    landed: pd.DataFrame,
    context: pd.DataFrame | None,
    known_entities: Collection[str] | None,
    step: pd.Timedelta,
    window: int,
) -> pd.DataFrame:
    """``timestamp``, ``entity`` and ``flags`` for every row of a canonical day, sorted.

    ``context`` holds earlier readings (the previous day) that count as history.
    ``known_entities`` is None for a model that did not record its training entities, which
    then flags none as unseen. Rows are sorted as ``sort_values([entity, timestamp],
    kind="stable")`` sorts them, on integer entity codes and times rather than on the text.
    """
    earlier = [context] if context is not None and len(context) else []
    # Context rows are stacked first, so they come first among equal keys, as in scoring.
    codes, times, names, history = entity_time_order(*earlier, landed)
    n_context = len(codes) - len(landed)
    own = history >= n_context
    ordered = history[own] - n_context
    unseen = np.array(
        [known_entities is not None and name not in known_entities for name in names], dtype=bool
    )
    notes = {
        OUT_OF_ORDER: _landed_late(codes[n_context:], ordered)[ordered],
        UNSEEN_ENTITY: unseen[codes[history[own]]],
        AFTER_GAP: _after_gap(codes[history], times[history], step, window)[own],
    }
    return pd.DataFrame(
        {
            TIMESTAMP: landed[TIMESTAMP].array.take(ordered),
            ENTITY: landed[ENTITY].array.take(ordered),
            FLAGS: _labels(notes),
        }
    )


def _after_gap(codes: np.ndarray, times: np.ndarray, step: pd.Timedelta, window: int) -> np.ndarray:
    """Rows sorted by entity and time that have under a window of gap-free history.

    Scoring cuts windows at these same bounds, so a row's place in its segment is exactly the
    gap-free history its window sees.
    """
    bounds = segment_bounds(codes, times, step)
    position = np.arange(len(codes)) - np.repeat(bounds[:-1], np.diff(bounds))
    return position < window - 1


def _labels(notes: dict[str, np.ndarray]) -> pd.api.extensions.ExtensionArray:
    """Each row's flag names joined by ``,`` in the order of ``notes`` (empty: none).

    The rows' flags are coded as bits, and each of the few combinations is written once.
    """
    names = list(notes)
    combination = sum(marked.astype(np.int64) << bit for bit, marked in enumerate(notes.values()))
    labels = [
        ",".join(name for bit, name in enumerate(names) if code >> bit & 1)
        for code in range(2 ** len(names))
    ]
    return pd.array(pa.array(labels, pa.large_string()).take(combination), dtype="string")


def annotate(scores: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with a ``flags`` column, matched on ``(entity, timestamp)``.

    Streaming scores and their flags come sorted the same way, so when the keys already line
    up row by row they are attached as they are, without building an index.
    """
    if _same_keys(scores, flags):
        return scores.assign(**{FLAGS: flags[FLAGS].astype("str").array})
    keyed = flags.set_index([ENTITY, TIMESTAMP])[FLAGS]
    key = pd.MultiIndex.from_arrays([scores[ENTITY], pd.DatetimeIndex(scores[TIMESTAMP])])
    matched = keyed.reindex(key)
    if matched.isna().any():
        raise ValueError("scores hold rows the day's data does not: cannot attach flags")
    return scores.assign(**{FLAGS: matched.to_numpy()})


def _same_keys(scores: pd.DataFrame, flags: pd.DataFrame) -> bool:
    """Whether both frames hold the same ``(entity, timestamp)`` keys in the same order."""
    return (
        len(scores) == len(flags)
        and np.array_equal(timestamps_ns(scores[TIMESTAMP]), timestamps_ns(flags[TIMESTAMP]))
        and bool(scores[ENTITY].array.equals(flags[ENTITY].array))
    )


def counts(flags: pd.Series) -> dict[str, int]:
    """How many rows carry each flag."""
    names = flags[flags != ""].str.split(",").explode()
    return {name: int(count) for name, count in names.value_counts().sort_index().items()}
