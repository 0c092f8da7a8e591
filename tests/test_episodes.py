"""Alarm rows grouped into episodes, the alarm budget, and event-level metrics on episodes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipeline import budget, episodes
from pipeline.config import AlarmsSpec, DatasetSpec

MIDNIGHT = pd.Timestamp("2026-01-02", tz="UTC")
MINUTE = dt.timedelta(minutes=1)
RULE = episodes.EpisodeRule(step=MINUTE, merge_gap=5 * MINUTE, min_duration=3 * MINUTE)


def alarm_rows(entity: str, minutes: list[int], score: float = 1.0) -> pd.DataFrame:
    """Alarm rows of ``entity`` at ``minutes`` after midnight (negative: the day before)."""
    return pd.DataFrame(
        {
            "timestamp": [MIDNIGHT + pd.Timedelta(minutes=m) for m in minutes],
            "entity": entity,
            "score": [score + index for index in range(len(minutes))],
            "top_features": [["heart_rate", "spo2"]] * (len(minutes) - 1) + [["spo2"]],
            "model_version": "4",
        }
    )


def day(*parts: pd.DataFrame) -> pd.DataFrame:
    return episodes.day_episodes(pd.concat(parts, ignore_index=True), RULE, 2, MIDNIGHT)


def test_alarms_within_the_merge_gap_are_one_episode_and_a_longer_gap_splits() -> None:
    # 0-2, a 5-minute quiet gap, 8-9: one episode; then 16 minutes after 9: a second one.
    found = day(alarm_rows("p1", [0, 1, 2, 8, 9, 16, 17, 18]))
    ordered = found.sort_values("start")
    assert ordered["start"].tolist() == [MIDNIGHT, MIDNIGHT + pd.Timedelta(minutes=16)]
    assert ordered["end"].tolist() == [
        MIDNIGHT + pd.Timedelta(minutes=10),
        MIDNIGHT + pd.Timedelta(minutes=19),
    ]
    assert ordered["duration_minutes"].tolist() == [10.0, 3.0]
    assert ordered["alarm_minutes"].tolist() == [5.0, 3.0]
    first, second = ordered.iloc[0], ordered.iloc[1]
    assert first["peak_score"] == 5.0 and first["mean_score"] == pytest.approx(3.0)
    # Named most often first; a tie keeps the order of first mention.
    assert list(first["top_features"]) == ["heart_rate", "spo2"]
    assert list(second["top_features"]) == ["spo2", "heart_rate"]
    assert first["model_version"] == "4" and not first["continued"]


def test_short_episodes_are_dropped_and_entities_never_merge() -> None:
    found = day(alarm_rows("p1", [0, 1]), alarm_rows("p2", [2, 3, 4]), alarm_rows("p3", [40]))
    assert found["entity"].tolist() == ["p2"]


def test_an_episode_across_midnight_keeps_yesterdays_start_and_id() -> None:
    yesterday = alarm_rows("p1", [-2, -1])  # too short alone: yesterday showed no episode
    before = episodes.day_episodes(yesterday, RULE, 2, MIDNIGHT - pd.Timedelta(days=1))
    assert before.empty
    found = day(yesterday, alarm_rows("p1", [0, 1]))
    assert len(found) == 1
    episode = found.iloc[0]
    assert episode["start"] == MIDNIGHT - pd.Timedelta(minutes=2) and episode["continued"]
    assert episode["duration_minutes"] == 4.0
    assert episode["episode_id"] == episodes.episode_id("p1", episode["start"])


def test_an_episode_that_ended_before_midnight_belongs_to_yesterday_alone() -> None:
    yesterday = alarm_rows("p1", [-20, -19, -18])
    assert day(yesterday, alarm_rows("p2", [5, 6, 7]))["entity"].tolist() == ["p2"]


def test_reruns_give_the_same_ids_and_different_episodes_different_ids() -> None:
    rows = pd.concat([alarm_rows("p1", [0, 1, 2]), alarm_rows("p2", [0, 1, 2])])
    first, again = day(rows), day(rows.sample(frac=1.0, random_state=3))
    assert sorted(first["episode_id"]) == sorted(again["episode_id"])
    assert first["episode_id"].nunique() == 2


def test_default_durations_follow_the_sampling_step() -> None:
    vitals = DatasetSpec.load("vitals")
    rule = episodes.EpisodeRule.for_spec(vitals)
    assert (rule.merge_gap, rule.min_duration) == (5 * MINUTE, 3 * MINUTE)
    daily = vitals.model_copy(update={"frequency": "1D"})
    assert episodes.EpisodeRule.for_spec(daily).min_steps == 1
    custom = vitals.model_copy(update={"alarms": AlarmsSpec(merge_gap="15min", min_duration="1h")})
    assert (episodes.EpisodeRule.for_spec(custom).gap_steps, custom.alarms.min_duration) == (
        15,
        "1h",
    )


def test_a_duration_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        AlarmsSpec(merge_gap="soon")


def test_the_budget_keeps_the_highest_peaks_per_dataset_or_per_entity() -> None:
    found = day(
        alarm_rows("p1", [0, 1, 2], score=10.0),
        alarm_rows("p1", [30, 31, 32], score=9.0),
        alarm_rows("p2", [0, 1, 2], score=1.0),
    )
    per_dataset = budget.apply_budget(found, 2, "dataset")
    kept = per_dataset.loc[per_dataset["within_budget"], "peak_score"].tolist()
    assert sorted(kept) == [11.0, 12.0] and budget.held_back(per_dataset) == 1
    per_entity = budget.apply_budget(found, 1, "entity")
    assert sorted(per_entity.loc[per_entity["within_budget"], "entity"]) == ["p1", "p2"]
    assert budget.held_back(budget.apply_budget(found, None, "dataset")) == 0


def test_event_metrics_count_episodes_and_events_once_each() -> None:
    labels = np.zeros(100, dtype=bool)
    labels[10:30] = labels[60:65] = True
    alarms = np.zeros(100, dtype=bool)
    alarms[12:25] = True  # inside the first event: one true positive, however long
    alarms[80:84] = True  # a false episode
    metrics = episodes.event_metrics(
        episodes.mask_spans(labels, RULE), episodes.mask_spans(alarms, RULE)
    )
    assert metrics["episode_precision"] == 0.5 and metrics["episode_recall"] == 0.5
    assert metrics["episode_f1"] == 0.5


def test_precision_and_recall_at_the_budget_on_labeled_days() -> None:
    """Two labeled days, two true events a day, three alarm episodes a day (one false)."""
    times = pd.date_range(MIDNIGHT, periods=2 * 1440, freq="1min")
    frame = pd.DataFrame({"timestamp": times, "entity": "p1", "score": 0.0, "label": 0})
    for offset in (0, 1440):
        for start, peak in ((100, 5.0), (500, 3.0), (900, 9.0)):  # 900: no labeled event
            frame.loc[offset + start : offset + start + 9, "score"] = peak
        frame.loc[offset + 100 : offset + 109, "label"] = 1
        frame.loc[offset + 500 : offset + 509, "label"] = 1
    alarms = frame["score"].to_numpy() > 0
    uncapped = budget.at_budget(frame, alarms, RULE, AlarmsSpec())
    assert (uncapped["precision"], uncapped["recall"]) == (pytest.approx(4 / 6), 1.0)
    capped = budget.at_budget(frame, alarms, RULE, AlarmsSpec(max_episodes_per_day=2))
    assert capped["episodes_held_back"] == 2
    assert (capped["precision"], capped["recall"]) == (0.5, 0.5)
