"""What a dataset's owners are told, composed as plain text: pure functions, no sending.

A scored day's digest lists its top episodes (entity, time, duration, top features) and where
the full report lies; an alert says a day failed, was quarantined or drifted. The DAGs hand
these to Airflow's SMTP notifier and ``tsad notify`` to :mod:`pipeline.smtp`, so both send
the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipeline.config import ENTITY


@dataclass(frozen=True)
class Message:
    """One notification: a subject line and a plain-text body."""

    subject: str
    body: str


def _episode_line(rank: int, episode: pd.Series) -> str:
    start = episode["start"].strftime("%Y-%m-%d %H:%M")
    end = episode["end"].strftime("%H:%M")
    features = ", ".join(episode["top_features"]) or "n/a"
    since = " (continued from the day before)" if episode["continued"] else ""
    return (
        f"{rank}. {episode[ENTITY]}  {start}-{end} UTC  {episode['duration_minutes']:g} min"
        f"  peak {episode['peak_score']:.3g}  top features: {features}{since}"
        f"  [episode {episode['episode_id']}]"
    )


def compose_digest(
    dataset: str, date: str, episodes: pd.DataFrame, summary: dict, report: str, top: int
) -> Message:
    """The day's digest: its ``top`` episodes within the budget, highest peak score first.

    ``episodes`` is the day's ``alarms.parquet``; ``summary`` its ``summary.json``; ``report``
    the path or address of the day's HTML report.
    """
    shown = episodes[episodes["within_budget"]].sort_values(
        ["peak_score", "start"], ascending=[False, True], kind="stable"
    )
    count = len(shown)
    subject = f"[tsad] {dataset} {date}: {count} alarm episode{'s' if count != 1 else ''}"
    lines = [
        f"{dataset} on {date}: {count} episodes from {summary['alarm_minutes']:g} alarm minutes"
        f" over {summary['entities']} entities (model {summary['model_name']}"
        f" version {summary['model_version']}).",
    ]
    held = int(summary.get("episodes_held_back", 0))
    if held:
        lines.append(f"The alarm budget held back {held} lower-ranked episodes.")
    if count:
        lines += ["", f"Top {min(top, count)} episodes:"]
        lines += [
            _episode_line(rank, row) for rank, (_, row) in enumerate(shown.head(top).iterrows(), 1)
        ]
    else:
        lines += ["", "No alarm episodes today."]
    if (summary.get("drift") or {}).get("drifted"):
        lines += ["", "The day drifted from the training data: see the report."]
    lines += ["", f"Report: {report}"]
    return Message(subject, "\n".join(lines) + "\n")


def compose_alert(kind: str, dataset: str, date: str | None, detail: str) -> Message:
    """An alert to the owners: ``kind`` says what happened (failed, quarantined, drifted)."""
    when = f" {date}" if date else ""
    return Message(f"[tsad] {dataset}{when}: {kind}", f"{dataset}{when}: {kind}.\n\n{detail}\n")
