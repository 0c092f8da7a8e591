"""The daily report: one static HTML page per scored day, readable without a server.

It answers what a ward nurse or an analyst asks of a day: how many alarms against what the model
was calibrated to expect, which entities spent the longest in alarm, what drove those alarms
(each one's top features), whether the data still looks like the training data (drift), and
which model version and threshold produced it. Plots are matplotlib PNGs embedded as base64
``data:`` URIs, so the single file can be mailed, archived or opened from MLflow as is.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.config import ENTITY, TIMESTAMP
from pipeline.monitoring import DriftReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

FEATURES_PLOTTED = 3
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.alert { background: #fde8e8; border-left: 6px solid #c62828; padding: 0.6em 1em; }
.ok { background: #e8f5e9; border-left: 6px solid #2e7d32; padding: 0.6em 1em; }
tr.over td { color: #c62828; font-weight: 600; }
img { max-width: 100%; }
"""


@dataclass(frozen=True)
class DailyReport:
    """Everything one day's report shows.

    A day is summarised by its row and alarm counts and its :func:`entity_ranking`, which a
    scoring run builds chunk by chunk; only the plotted entities' rows are held whole:
    ``scores`` is their scoring output (``timestamp``, ``entity``, ``score``, ``is_anomaly``,
    ...), ``standardised`` the same rows' feature values as z-scores against the training data
    (``timestamp``, ``entity``, one column per feature). Rows of other entities are ignored.
    """

    dataset: str
    date: str
    model_name: str
    model_version: str
    threshold: float
    rows: int
    alarms: int
    ranking: pd.DataFrame
    scores: pd.DataFrame
    standardised: pd.DataFrame
    drift: DriftReport | None
    entities_plotted: int = 3
    episodes: pd.DataFrame | None = None
    """The day's alarm episodes (:data:`pipeline.episodes.EPISODES_SCHEMA`), ranked."""
    budget: int | None = None
    """The dataset's alarm budget: episodes a day shows at most (None: no cap)."""
    reviewed: Mapping[str, str] = field(default_factory=dict)
    """Episodes already reviewed (this day or, continued, the day before): id to verdict."""


def entity_alarms(scores: pd.DataFrame, step: dt.timedelta) -> pd.DataFrame:
    """One row per entity of ``scores``, in order of appearance: its time in alarm and drivers.

    Columns: ``entity``, ``alarm_minutes``, ``alarm_share``, ``peak_score``, ``top_features``
    (comma-separated, the features most often named by the entity's alarms). Scores holding
    whole entities give rows that can be concatenated and ranked with :func:`rank_entities`.
    Whole-column group aggregates: a Python loop over each entity's rows took longer than
    the rest of a chunk's bookkeeping.
    """
    minutes = pd.Timedelta(step).total_seconds() / 60
    by_entity = scores.groupby(ENTITY, sort=False)
    alarms = by_entity["is_anomaly"].sum()
    drivers = _most_named(scores.loc[scores["is_anomaly"], [ENTITY, "top_features"]])
    summary = pd.DataFrame(
        {
            "alarm_minutes": alarms * minutes,
            "alarm_share": alarms / by_entity.size(),
            "peak_score": by_entity["score"].max().astype(float),
            "top_features": drivers.reindex(alarms.index, fill_value="").astype(str),
        }
    )
    return summary.rename_axis(ENTITY).reset_index()


def _most_named(alarms: pd.DataFrame) -> pd.Series:
    """Per entity of ``alarms``, the features its rows name most often, comma-separated.

    At most :data:`FEATURES_PLOTTED`, in ``Counter.most_common`` order (count, then first
    mention), so that a tie always names the same features. Groups keep the order of first
    appearance and the sort is stable: equal counts stay in the order they were first named.
    """
    names = alarms.explode("top_features")
    counts = names.groupby([ENTITY, "top_features"], sort=False).size().reset_index(name="count")
    ranked = counts.sort_values("count", ascending=False, kind="stable")
    top = ranked.groupby(ENTITY, sort=False).head(FEATURES_PLOTTED)
    return top.groupby(ENTITY, sort=False)["top_features"].agg(", ".join)


def rank_entities(alarms: pd.DataFrame) -> pd.DataFrame:
    """Rows of :func:`entity_alarms` by time spent in alarm, then peak score."""
    return alarms.sort_values(["alarm_minutes", "peak_score"], ascending=False, ignore_index=True)


def entity_ranking(scores: pd.DataFrame, step: dt.timedelta) -> pd.DataFrame:
    """Entities by time spent in alarm (then peak score), with their most frequent top features."""
    return rank_entities(entity_alarms(scores, step))


def plotted_entities(ranking: pd.DataFrame, count: int) -> list[str]:
    """The ``count`` highest-ranked entities that were in alarm: those the report plots."""
    return ranking.loc[ranking["alarm_minutes"] > 0, ENTITY].head(count).tolist()


def plot_entity(
    scores: pd.DataFrame,
    standardised: pd.DataFrame,
    features: list[str],
    threshold: float,
    title: str,
) -> Figure:
    """Score with threshold and alarms (top), the named features' z-scores (bottom), shared time."""
    from matplotlib.figure import Figure  # imported when a report is drawn, not at import

    # Fixed margins: a constrained layout measured every tick label again and took as long as
    # drawing the figure.
    fig = Figure(figsize=(12.0, 5.5))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.94, hspace=0.12)
    score_ax, feature_ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1])
    times = scores[TIMESTAMP].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    alarms = scores["is_anomaly"].to_numpy()
    score_ax.plot(times, scores["score"].to_numpy(), lw=0.8, color="tab:blue", label="score")
    score_ax.axhline(
        threshold, color="tab:red", ls="--", lw=1.0, label=f"threshold {threshold:.4g}"
    )
    score_ax.scatter(
        times[alarms],
        scores["score"].to_numpy()[alarms],
        s=8,
        color="tab:red",
        label="alarm",
        zorder=3,
    )
    score_ax.set(title=title, ylabel="anomaly score")
    score_ax.legend(loc="upper right")
    for feature in features:
        feature_ax.plot(times, standardised[feature].to_numpy(), lw=0.8, label=feature)
    for ax in (score_ax, feature_ax):
        ax.add_collection(_alarm_spans(times, alarms, ax), autolim=False)
    feature_ax.set(xlabel="time (UTC)", ylabel="z-score vs training")
    if features:
        feature_ax.legend(loc="upper right")
    return fig


def _alarm_spans(times: np.ndarray, alarms: np.ndarray, ax: Axes) -> PolyCollection:
    """Every run of alarms as one shaded band over the axes' height, all in one collection.

    One artist however many runs a day holds: a patch per run took longer to draw than the
    rest of the figure on a day with hundreds of short alarms.
    """
    from matplotlib import dates
    from matplotlib.collections import PolyCollection

    from pipeline import evaluation  # scikit-learn's metrics come with it: drawing only

    starts, stops = evaluation.segments(alarms)
    left = dates.date2num(times[starts])
    right = dates.date2num(times[stops - 1])
    bottom, top = np.zeros_like(left), np.ones_like(left)
    corners = [(left, bottom), (left, top), (right, top), (right, bottom)]
    bands = np.stack([np.column_stack(corner) for corner in corners], axis=1)
    return PolyCollection(
        list(bands), transform=ax.get_xaxis_transform(), facecolor="tab:red", alpha=0.12, lw=0
    )


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    # Fast zlib level: a third of the encoding time for a slightly larger image.
    fig.savefig(buffer, format="png", dpi=90, pil_kwargs={"compress_level": 1})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(frame: pd.DataFrame, over: pd.Series | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    body = []
    for index, row in enumerate(frame.itertuples(index=False)):
        cells = "".join(
            f'<td class="num">{value:.4g}</td>'
            if isinstance(value, float | np.floating)
            else f"<td>{html.escape(str(value))}</td>"
            for value in row
        )
        marked = over is not None and bool(over.iloc[index])
        body.append(f'<tr class="over">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary(report: DailyReport) -> str:
    rate = report.alarms / report.rows if report.rows else 0.0
    reference = "n/a (model has no reference profile)"
    if report.drift is not None:
        reference = f"{report.drift.reference_anomaly_rate:.2%}"
    facts = pd.DataFrame(
        [
            ("model", f"{report.model_name} version {report.model_version}"),
            ("threshold", f"{report.threshold:.6g}"),
            ("rows scored", f"{report.rows:,}"),
            ("entities", f"{len(report.ranking):,}"),
            ("alarms", f"{report.alarms:,}"),
            ("episodes", "n/a" if report.episodes is None else f"{len(report.episodes):,}"),
            ("anomaly rate today", f"{rate:.2%}"),
            ("anomaly rate at calibration (reference days)", reference),
        ],
        columns=["what", "value"],
    )
    return "<h2>Summary</h2>" + _table(facts)


def _drift_section(drift: DriftReport | None) -> str:
    if drift is None:
        return (
            "<h2>Drift</h2><p>No reference profile in this model version: drift not measured.</p>"
        )
    if drift.drifted:
        parts = []
        if drift.drifted_features:
            parts.append("features " + ", ".join(drift.drifted_features))
        if drift.scores_drifted:
            parts.append("the score distribution")
        banner = (
            f'<p class="alert"><strong>Drift beyond PSI {drift.level:g}:</strong> '
            f"{html.escape('; '.join(parts))}. Consider retraining.</p>"
        )
    else:
        banner = f'<p class="ok">No drift beyond PSI {drift.level:g}.</p>'
    rows = [("score distribution", drift.score_psi), *drift.feature_psi.items()]
    table = pd.DataFrame(rows, columns=["against the reference", "PSI"])
    return "<h2>Drift</h2>" + banner + _table(table, table["PSI"] > drift.level)


def _entity_sections(report: DailyReport) -> str:
    plotted = plotted_entities(report.ranking, report.entities_plotted)
    alarmed = report.ranking[report.ranking[ENTITY].isin(plotted)]
    if alarmed.empty:
        return "<h2>Top entities</h2><p>No alarms today.</p>"
    values = report.standardised.set_index([ENTITY, TIMESTAMP])
    parts = ["<h2>Top entities</h2>"]
    for row in alarmed.itertuples(index=False):
        entity = getattr(row, ENTITY)
        scores = report.scores[report.scores[ENTITY] == entity].sort_values(TIMESTAMP)
        features = [name for name in row.top_features.split(", ") if name][:FEATURES_PLOTTED]
        day_values = values.loc[entity].reindex(scores[TIMESTAMP])
        fig = plot_entity(
            scores,
            day_values.reset_index(),
            features,
            report.threshold,
            f"{entity}: score and top features",
        )
        parts.append(
            f"<h3>{html.escape(str(entity))}</h3>"
            f"<p>{row.alarm_minutes:g} minutes in alarm; most often driven by "
            f"{html.escape(row.top_features)}.</p>"
            f'<img alt="score and top features of {html.escape(str(entity))}" '
            f'src="data:image/png;base64,{_png(fig)}">'
        )
    return "".join(parts)


def _episodes_section(report: DailyReport) -> str:
    """The day's episodes within the budget, highest peak first, and how many were held back."""
    if report.episodes is None:
        return ""
    found = report.episodes
    shown = found[found["within_budget"]]
    held = len(found) - len(shown)
    cap = (
        "No alarm budget: every episode is listed."
        if report.budget is None
        else f"Alarm budget: {report.budget} episodes a day; {held} held back by it."
    )
    if shown.empty:
        return f"<h2>Alarm episodes</h2><p>No alarm episodes today. {cap}</p>"
    table = pd.DataFrame(
        {
            "episode": shown["episode_id"],
            ENTITY: shown[ENTITY],
            "start (UTC)": shown["start"].dt.strftime("%Y-%m-%d %H:%M"),
            "end (UTC)": shown["end"].dt.strftime("%Y-%m-%d %H:%M"),
            "minutes": shown["duration_minutes"].map("{:g}".format),
            "peak score": shown["peak_score"],
            "mean score": shown["mean_score"],
            "top features": shown["top_features"].map(", ".join),
            "from yesterday": shown["continued"].map({True: "yes", False: ""}),
            "review": shown["episode_id"].map(lambda key: report.reviewed.get(key, "")),
        }
    )
    return f"<h2>Alarm episodes</h2><p>{len(shown)} episodes listed. {cap}</p>" + _table(table)


def render(report: DailyReport) -> str:
    """The report as one self-contained HTML document."""
    title = f"Daily anomaly report: {report.dataset} {report.date}"
    ranking = report.ranking
    shown = ranking.assign(alarm_share=ranking["alarm_share"].map("{:.1%}".format))
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + _summary(report)
        + _episodes_section(report)
        + _drift_section(report.drift)
        + "<h2>Entities ranked by time in alarm</h2>"
        + _table(shown)
        + _entity_sections(report)
        + "</body></html>\n"
    )
