"""Reviewer feedback: verdicts on alarm episodes, checked, kept with their history, made labels.

A reviewer says of an episode of a scored day that it was real (``confirmed``) or a false alarm
(``dismissed``). Verdicts are appended, never overwritten: the latest one per episode and day
wins, the earlier ones stay as history. Each verdict carries the episode's entity, start and end
as the day listed it, so it still labels the right rows after the day is scored again by
another model (whose episodes may differ).

The next training run turns reviewed days into labeled days (:func:`labeled`): rows of a
confirmed episode are anomalies (label 1), rows of a dismissed one normal (label 0), and every
other row keeps the label its landed data carries, or 0 where it carries none. A verdict labels
only rows of the day it was given on, even for an episode continued from the day before, so a
review can never relabel a day outside its own (a test day, for one).

Pure functions on frames; reading and writing them is :mod:`pipeline.steps.reviews`' job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.choices import REVIEW_LABELS
from pipeline.config import ENTITY, LABEL, TIMESTAMP

REVIEWS_SCHEMA = pa.schema(
    [
        pa.field("date", pa.string()),
        pa.field("episode_id", pa.string()),
        pa.field(ENTITY, pa.string()),
        pa.field("start", pa.timestamp("ns", tz="UTC")),
        pa.field("end", pa.timestamp("ns", tz="UTC")),
        pa.field("label", pa.string()),
        pa.field("note", pa.string()),
        pa.field("reviewed_by", pa.string()),
        pa.field("reviewed_at", pa.timestamp("ns", tz="UTC")),
    ]
)
"""The columns of a day's ``reviews.parquet``: every verdict ever given, in the order given."""

VERDICT_COLUMNS = ["episode_id", "label", "note", "reviewed_by", "reviewed_at"]
"""What a reviewer supplies of a verdict; the rest comes from the day's episodes."""


class ReviewRejected(ValueError):
    """Verdicts that cannot be recorded: an unknown label or episode, or a day never scored."""


def check(day: dt.date, verdicts: pd.DataFrame, listed: pd.DataFrame) -> pd.DataFrame:
    """Verdicts on one day (:data:`VERDICT_COLUMNS`) as rows of :data:`REVIEWS_SCHEMA`.

    ``listed`` is the day's ``alarms.parquet``: every verdict must name one of its episodes,
    and a label of :data:`REVIEW_LABELS`. All problems are named at once, and nothing is
    returned unless every verdict is sound.
    """
    problems = [
        f"unknown label {label!r} for episode {episode} (use {' or '.join(REVIEW_LABELS)})"
        for episode, label in zip(verdicts["episode_id"], verdicts["label"], strict=True)
        if label not in REVIEW_LABELS
    ]
    known = listed.set_index("episode_id")
    unknown = sorted(set(verdicts["episode_id"]) - set(known.index))
    if unknown:
        problems.append(
            f"no episode {', '.join(map(repr, unknown))} among the {len(known)} episodes "
            f"listed on {day} (see its alarms.parquet or report)"
        )
    if problems:
        raise ReviewRejected(f"reviews of {day} refused: " + "; ".join(problems))
    episodes = known.loc[verdicts["episode_id"], [ENTITY, "start", "end"]].reset_index(drop=True)
    checked = pd.concat([verdicts.reset_index(drop=True), episodes], axis=1)
    return checked.assign(date=day.isoformat())[REVIEWS_SCHEMA.names]


def appended(history: pd.DataFrame | None, verdicts: pd.DataFrame) -> pd.DataFrame:
    """A day's review history with new verdicts after it: nothing earlier is dropped."""
    parts = [part for part in (history, verdicts) if part is not None and len(part)]
    if not parts:
        return empty()
    return pd.concat(parts, ignore_index=True)[REVIEWS_SCHEMA.names]


def latest(history: pd.DataFrame) -> pd.DataFrame:
    """The verdict that stands per day and episode: the last given (ties: the later row)."""
    ordered = history.sort_values("reviewed_at", kind="stable")
    standing = ordered.drop_duplicates(["date", "episode_id"], keep="last")
    return standing.sort_values(["date", "start", ENTITY], kind="stable").reset_index(drop=True)


def labeled(frame: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (canonical rows) with labels from the standing ``verdicts``.

    Rows of a confirmed episode become 1, of a dismissed one 0; other rows keep their own
    label, or 0 where they have none. A verdict reaches only rows of its own day. Without
    verdicts the frame is returned as it is (unlabeled stays unlabeled).
    """
    if verdicts.empty:
        return frame
    own = frame[LABEL] if LABEL in frame else pd.Series(0, index=frame.index)
    labels = own.fillna(0).to_numpy(dtype=np.int8).copy()
    times, entities = frame[TIMESTAMP], frame[ENTITY].astype(str)
    for verdict in verdicts.itertuples(index=False):
        midnight = pd.Timestamp(verdict.date, tz="UTC")
        first = max(verdict.start, midnight)
        last = min(verdict.end, midnight + pd.Timedelta(days=1))
        rows = (entities == verdict.entity) & (times >= first) & (times < last)
        labels[rows.to_numpy()] = 1 if verdict.label == "confirmed" else 0
    return frame.assign(**{LABEL: labels})


def days(verdicts: pd.DataFrame) -> list[dt.date]:
    """The days the verdicts were given on, in order."""
    return sorted({dt.date.fromisoformat(day) for day in verdicts["date"]})


def to_records(verdicts: pd.DataFrame) -> list[dict]:
    """Verdicts as plain JSON records (timestamps in ISO 8601), for a run folder and MLflow."""
    text = verdicts[REVIEWS_SCHEMA.names].to_json(orient="records", date_format="iso")
    return json.loads(text)


def from_records(records: list[dict]) -> pd.DataFrame:
    """Verdicts read back from :func:`to_records`."""
    frame = pd.DataFrame(records, columns=REVIEWS_SCHEMA.names)
    for column in ("start", "end", "reviewed_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def summary(verdicts: pd.DataFrame) -> dict[str, str]:
    """Registry tags that say which reviews a model saw (the full list is an artifact)."""
    counts = verdicts["label"].value_counts()
    digest = hashlib.sha256(json.dumps(to_records(verdicts)).encode()).hexdigest()[:16]
    return {
        "reviews.count": str(len(verdicts)),
        "reviews.confirmed": str(int(counts.get("confirmed", 0))),
        "reviews.dismissed": str(int(counts.get("dismissed", 0))),
        "reviews.days": ",".join(day.isoformat() for day in days(verdicts)) or "none",
        "reviews.digest": digest,
    }


def empty() -> pd.DataFrame:
    """A review frame without rows, with every column of :data:`REVIEWS_SCHEMA`."""
    return REVIEWS_SCHEMA.empty_table().to_pandas()
