"""Reviewer feedback: verdicts checked and kept with their history, made labels, and
`tsad review` as a user runs it, refusals included."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import tsad
from scored_day import DAY, MIDNIGHT, scored_day

from pipeline import reviews
from pipeline.config import Settings
from pipeline.steps import reviews as review_step

ROOT = Path(__file__).resolve().parents[1]


def listed(settings: Settings) -> pd.DataFrame:
    """The scored day's episodes, highest peak first (bed-1, bed-2, bed-3)."""
    return pd.read_parquet(scored_day(settings) / "alarms.parquet")


def verdict(episode: str, label: str, at: str = "2026-01-10T08:00") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "episode_id": [episode],
            "label": [label],
            "note": [None],
            "reviewed_by": ["nurse"],
            "reviewed_at": [pd.Timestamp(at, tz="UTC")],
        }
    )


def test_verdicts_name_every_unknown_label_and_episode_at_once(tsad_home: Settings) -> None:
    episodes = listed(tsad_home)
    given = pd.concat(
        [verdict(episodes["episode_id"][0], "real"), verdict("feedfeed", "dismissed")]
    )
    with pytest.raises(reviews.ReviewRejected) as refused:
        reviews.check(DAY, given, episodes)
    assert "unknown label 'real'" in str(refused.value)
    assert "no episode 'feedfeed' among the 3 episodes listed on 2026-01-09" in str(refused.value)


def test_the_latest_verdict_stands_and_the_history_is_kept(tsad_home: Settings) -> None:
    episode = listed(tsad_home)["episode_id"][0]
    review_step.record("vitals", {DAY: verdict(episode, "confirmed", "2026-01-10T08:00")})
    review_step.record("vitals", {DAY: verdict(episode, "dismissed", "2026-01-10T09:00")})

    history = pd.read_parquet(review_step.day_file(tsad_home, "vitals", DAY))
    assert history["label"].tolist() == ["confirmed", "dismissed"]
    [standing] = review_step.standing(tsad_home, "vitals").itertuples()
    assert (standing.episode_id, standing.label, standing.entity) == (episode, "dismissed", "bed-1")


def test_reviewed_rows_are_labeled_and_other_rows_keep_their_own_label() -> None:
    times = pd.date_range(MIDNIGHT - pd.Timedelta(minutes=2), periods=8, freq="1min")
    frame = pd.DataFrame(
        {
            "timestamp": list(times) * 2,
            "entity": ["bed-1"] * 8 + ["bed-2"] * 8,
            "label": [0, 0, 0, 0, 0, 0, 0, 1] + [1] * 8,
        }
    )
    standing = pd.DataFrame(
        {  # bed-1 confirmed from 23:59 the day before (continued) to 00:03; bed-2 dismissed
            "date": [DAY.isoformat()] * 2,
            "episode_id": ["a", "b"],
            "entity": ["bed-1", "bed-2"],
            "start": [MIDNIGHT - pd.Timedelta(minutes=1), MIDNIGHT],
            "end": [MIDNIGHT + pd.Timedelta(minutes=3), MIDNIGHT + pd.Timedelta(minutes=2)],
            "label": ["confirmed", "dismissed"],
        }
    )
    labels = reviews.labeled(frame, standing)["label"].tolist()
    # Only rows of the reviewed day: 23:59 stays as landed; rows outside episodes keep theirs.
    assert labels[:8] == [0, 0, 1, 1, 1, 0, 0, 1]
    assert labels[8:] == [1, 1, 0, 0, 1, 1, 1, 1]
    unlabeled = frame.drop(columns="label")
    assert reviews.labeled(unlabeled, standing)["label"].tolist()[:8] == [0, 0, 1, 1, 1, 0, 0, 0]
    assert "label" not in reviews.labeled(unlabeled, reviews.empty())


def test_tsad_review_records_verdicts_and_refuses_what_it_cannot_use(
    tsad_home: Settings, tmp_path: Path
) -> None:
    first, second, third = listed(tsad_home)["episode_id"]
    day = ["--dataset", "vitals", "--date", DAY.isoformat()]

    done = tsad("review", *day, "--episode", first, "--label", "confirmed", "--by", "ana",
                "--note", "desaturation, called the doctor")  # fmt: skip
    target = review_step.day_file(tsad_home, "vitals", DAY)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"vitals {DAY}: 1 verdict(s) stored in {target}\n"

    unknown_label = tsad("review", *day, "--episode", first, "--label", "maybe")
    unknown_episode = tsad("review", *day, "--episode", "0123abcd", "--label", "dismissed")
    never_scored = tsad("review", "--dataset", "vitals", "--date", "2026-02-01",
                        "--episode", first, "--label", "confirmed")  # fmt: skip
    for refused, reason in (
        (unknown_label, "unknown label 'maybe' for episode"),
        (unknown_episode, "no episode '0123abcd' among the 3 episodes listed on 2026-01-09"),
        (never_scored, "vitals 2026-02-01 was never scored"),
    ):
        assert refused.returncode == 1 and reason in " ".join(refused.stderr.split())

    verdicts = tmp_path / "verdicts.csv"
    verdicts.write_text(
        f"date,episode_id,label,note,by\n{DAY},{second},dismissed,artefact,ben\n"
        f"{DAY},{first},dismissed,,ben\n"
    )
    imported = tsad("review", "--dataset", "vitals", "--import", str(verdicts))
    assert imported.returncode == 0, imported.stderr
    assert "2 verdict(s) stored" in imported.stdout

    broken = tmp_path / "broken.csv"
    broken.write_text(f"date,episode_id,label\n{DAY},{third},dismissed\n2026-1-9,{third},x\n")
    refused_csv = tsad("review", "--dataset", "vitals", "--import", str(broken))
    assert refused_csv.returncode == 1
    assert "line 3: invalid date '2026-1-9'" in " ".join(refused_csv.stderr.split())

    history = pd.read_parquet(target)
    assert history[["episode_id", "label", "reviewed_by"]].values.tolist() == [
        [first, "confirmed", "ana"],
        [second, "dismissed", "ben"],
        [first, "dismissed", "ben"],
    ]
    notes = history["note"].fillna("").tolist()
    assert notes == ["desaturation, called the doctor", "artefact", ""]
    standing = review_step.standing(tsad_home, "vitals")
    assert dict(zip(standing["episode_id"], standing["label"], strict=True)) == {
        first: "dismissed",
        second: "dismissed",
    }
    assert review_step.already_reviewed(tsad_home, "vitals", DAY + dt.timedelta(days=1)) == {
        first: "dismissed",
        second: "dismissed",
    }
