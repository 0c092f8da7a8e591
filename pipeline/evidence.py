"""Alarms that point back to events: which payments lie inside each alarmed bucket.

Pure functions on frames. A scored event dataset alarms on buckets (an account's hour); an
analyst acts on payments. :func:`alarm_events` joins a day's alarm rows with the event index of
its series (entity, bucket start, event id) and the day's episodes, so each alarmed bucket
carries its episode and the ids of the events inside it; :func:`evidence_section` renders,
for the top accounts, each alarmed bucket with the transactions behind it.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.config import ENTITY, TIMESTAMP
from pipeline.data.aggregation import EVENT_ID

EVENT_IDS = "event_ids"
ALARM_EVENTS_SCHEMA = pa.schema(
    [
        pa.field(ENTITY, pa.string()),
        pa.field(TIMESTAMP, pa.timestamp("ns", tz="UTC")),
        pa.field("score", pa.float64()),
        pa.field("episode_id", pa.string()),
        pa.field(EVENT_IDS, pa.list_(pa.string())),
    ]
)
"""The columns of ``alarm_events.parquet``: one row per alarmed bucket."""


def alarm_events(
    alarm_rows: pd.DataFrame, index: pd.DataFrame, episodes: pd.DataFrame
) -> pd.DataFrame:
    """Each alarmed bucket (``entity``, ``timestamp``, ``score``) with its episode and events.

    ``index`` locates events in buckets (``entity``, ``timestamp``, ``event_id``); a bucket
    with no events (an alarm on a silent hour) carries an empty list. ``episode_id`` names the
    episode whose span holds the bucket, or is None when the bucket's alarm made no episode.
    """
    ids = index.groupby([ENTITY, TIMESTAMP], sort=False)[EVENT_ID].agg(list)
    rows = alarm_rows[[ENTITY, TIMESTAMP, "score"]].reset_index(drop=True)
    found = ids.reindex(pd.MultiIndex.from_frame(rows[[ENTITY, TIMESTAMP]]))
    rows[EVENT_IDS] = [value if isinstance(value, list) else [] for value in found]
    rows["episode_id"] = None
    for episode in episodes.itertuples(index=False):
        inside = (
            (rows[ENTITY] == episode.entity)
            & (rows[TIMESTAMP] >= episode.start)
            & (rows[TIMESTAMP] < episode.end)
        )
        rows.loc[inside, "episode_id"] = episode.episode_id
    ranked = rows.sort_values([ENTITY, TIMESTAMP], kind="stable").reset_index(drop=True)
    return ranked[ALARM_EVENTS_SCHEMA.names]


def top_accounts(alarmed: pd.DataFrame, count: int) -> list[str]:
    """The ``count`` entities with the most alarmed buckets (then highest peak score)."""
    if alarmed.empty:
        return []
    ranked = alarmed.groupby(ENTITY).agg(buckets=("score", "size"), peak=("score", "max"))
    ranked = ranked.sort_values(["buckets", "peak"], ascending=False, kind="stable")
    return [str(entity) for entity in ranked.index[:count]]


def evidence_section(alarmed: pd.DataFrame, transactions: pd.DataFrame, event_id: str) -> str:
    """HTML: for each account of ``alarmed``, its alarmed buckets and the payments in each.

    ``transactions`` holds the raw events (source columns) of those buckets.
    """
    parts = ["<h2>Transactions behind the alarms</h2>"]
    if alarmed.empty:
        return parts[0] + "<p>No alarms: no transactions to review.</p>"
    by_id = transactions.set_axis(transactions[event_id].astype(str).to_numpy())
    for entity, buckets in alarmed.groupby(ENTITY, sort=False):
        parts.append(f"<h3>{html.escape(str(entity))}</h3>")
        for bucket in buckets.itertuples(index=False):
            shown = by_id.loc[[i for i in bucket.event_ids if i in by_id.index]]
            parts.append(
                f"<p>bucket {html.escape(str(bucket.timestamp))}, score {bucket.score:.4g}, "
                f"episode {html.escape(str(bucket.episode_id))}: {len(shown)} transactions</p>"
            )
            if len(shown):
                in_time = shown.sort_values(TIMESTAMP) if TIMESTAMP in shown else shown
                parts.append(_plain_table(in_time))
    return "".join(parts)


def _plain_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    rows = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{value:.2f}</td>'
            if isinstance(value, float | np.floating)
            else f"<td>{html.escape(str(value))}</td>"
            for value in row
        )
        + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
