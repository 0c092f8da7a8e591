"""Per-row flags: what a policy let through is marked on exactly the rows it touched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data import flags

STEP = pd.Timedelta(minutes=1)


def day(entity: str, minutes: list[int], date: str = "2026-01-02") -> pd.DataFrame:
    start = pd.Timestamp(date, tz="UTC")
    return pd.DataFrame(
        {
            "timestamp": [start + pd.Timedelta(minutes=m) for m in minutes],
            "entity": entity,
            "x": 1.0,
        }
    )


def by_minute(table: pd.DataFrame) -> dict[tuple[str, int], str]:
    """``(entity, minute of the day) -> flags`` of a frame with a ``flags`` column."""
    minutes = (table["timestamp"] - table["timestamp"].dt.normalize()).dt.seconds // 60
    return dict(zip(zip(table["entity"], minutes, strict=True), table["flags"], strict=True))


def flags_by_minute(frame: pd.DataFrame, **kwargs) -> dict[tuple[str, int], str]:
    arguments = {"context": None, "known_entities": None, "step": STEP, "window": 3} | kwargs
    return by_minute(flags.row_flags(frame, **arguments))


def test_rows_landing_after_a_later_row_are_out_of_order() -> None:
    landed = pd.concat([day("a", [0, 1, 3, 2, 4]), day("b", [0, 1])], ignore_index=True)
    assert flags.out_of_order(landed).tolist() == [False, False, False, True, False, False, False]


def test_first_rows_without_the_previous_day_and_rows_after_a_gap_are_flagged() -> None:
    landed = day("a", [0, 1, 2, 3, 4, 10, 11, 12, 13])
    flagged = flags_by_minute(landed)
    after_gap = [minute for (_, minute), note in flagged.items() if note == flags.AFTER_GAP]
    assert after_gap == [0, 1, 10, 11]


def test_previous_day_readings_count_as_history() -> None:
    landed = day("a", [0, 1, 2, 3])
    yesterday = day("a", [1438, 1439], date="2026-01-01")
    flagged = flags_by_minute(landed, context=yesterday)
    assert set(flagged.values()) == {""}


def test_entities_unseen_in_training_are_flagged_with_every_other_note() -> None:
    landed = pd.concat([day("known", [0, 1, 2]), day("new", [1, 0, 2])], ignore_index=True)
    flagged = flags_by_minute(landed, known_entities={"known"}, window=1)
    assert flagged[("known", 0)] == ""
    assert flagged[("new", 0)] == "out_of_order,unseen_entity"
    assert flagged[("new", 2)] == "unseen_entity"


def test_a_bundle_without_training_entities_flags_none_unseen() -> None:
    flagged = flags_by_minute(day("anyone", [0, 1, 2]), window=1)
    assert set(flagged.values()) == {""}


def test_annotate_matches_rows_by_key_whatever_their_order() -> None:
    landed = pd.concat([day("b", [0, 1]), day("a", [1, 0])], ignore_index=True)
    notes = flags.row_flags(landed, None, {"a"}, STEP, window=1)
    scores = landed[["timestamp", "entity"]].iloc[::-1].assign(score=0.5)
    annotated = flags.annotate(scores, notes)
    assert by_minute(annotated) == {
        ("a", 0): "out_of_order",
        ("a", 1): "",
        ("b", 0): "unseen_entity",
        ("b", 1): "unseen_entity",
    }
    assert flags.counts(annotated["flags"]) == {"out_of_order": 1, "unseen_entity": 2}


def test_scores_for_rows_the_day_lacks_are_an_error() -> None:
    notes = flags.row_flags(day("a", [0]), None, None, STEP, window=1)
    with pytest.raises(ValueError, match="cannot attach flags"):
        flags.annotate(day("a", [5]), notes)


def pandas_flags(
    landed: pd.DataFrame, context: pd.DataFrame, known: set[str], window: int
) -> pd.DataFrame:
    """The flags as written in plain pandas: stable sorts, a grouped running maximum, and
    each row's place in its gap-free stretch of history."""
    times = landed["timestamp"]
    late = times.groupby(landed["entity"]).cummax() > times
    history = pd.concat(
        [context.assign(own=False, late=False), landed.assign(own=True, late=late)],
        ignore_index=True,
    ).sort_values(["entity", "timestamp"], kind="stable", ignore_index=True)
    new_stretch = history["entity"].ne(history["entity"].shift()) | (
        history["timestamp"].diff() > STEP
    )
    history["after_gap"] = history.groupby(new_stretch.cumsum()).cumcount() < window - 1
    history["unseen"] = ~history["entity"].isin(known)
    own = history[history["own"]].reset_index(drop=True)
    names = {
        "late": flags.OUT_OF_ORDER,
        "unseen": flags.UNSEEN_ENTITY,
        "after_gap": flags.AFTER_GAP,
    }
    labels = [
        ",".join(name for column, name in names.items() if row[column]) for _, row in own.iterrows()
    ]
    return own[["timestamp", "entity"]].assign(flags=pd.array(labels, dtype="string"))


@pytest.mark.parametrize("seed", range(5))
def test_flags_equal_plain_pandas_on_shuffled_days_with_gaps_and_repeats(seed: int) -> None:
    rng = np.random.default_rng(seed)

    def shuffled(date: str, rows: int) -> pd.DataFrame:
        parts = [
            day(entity, sorted(rng.choice(60, rows, replace=False)), date) for entity in "abcd"
        ]
        frame = pd.concat(parts, ignore_index=True)
        frame = pd.concat([frame, frame.sample(3, random_state=seed)], ignore_index=True)
        return frame.sample(frac=1.0, random_state=seed, ignore_index=True)

    landed, context = shuffled("2026-01-02", 40), shuffled("2026-01-02", 10)
    context["timestamp"] -= pd.Timedelta(minutes=30)  # overlaps the day's first half hour

    notes = flags.row_flags(landed, context, {"a", "c"}, STEP, window=4)

    pd.testing.assert_frame_equal(notes, pandas_flags(landed, context, {"a", "c"}, window=4))
