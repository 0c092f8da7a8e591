import numpy as np
import pandas as pd
import pytest

from pipeline.data.windows import (
    PointFeatureScores,
    PointScores,
    Segments,
    StandardScaler,
    concat_segments,
    frame_to_segments,
    pad_short_segments,
    sliding_windows,
    window_starts,
)


def test_windows_never_cross_a_segment_and_cover_every_tail():
    bounds = np.array([0, 10, 13, 30])
    starts = window_starts(bounds, window=5, stride=4)
    assert starts.tolist() == [0, 4, 5, 13, 17, 21, 25]
    for start in starts:
        segment = np.searchsorted(bounds, start, side="right") - 1
        assert start + 5 <= bounds[segment + 1]


def test_sliding_windows_are_views_not_copies():
    values = np.arange(20, dtype=np.float32).reshape(10, 2)
    windows = sliding_windows(values, 4)
    assert windows.shape == (7, 4, 2)
    assert np.shares_memory(windows, values)
    np.testing.assert_array_equal(windows[3], values[3:7])


def test_point_scores_average_every_covering_window():
    points = PointScores(6)
    points.add(np.array([0, 2]), np.array([[1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]]))
    np.testing.assert_allclose(points.result(), [1, 1, 2, 2, 3, 3])


def test_point_scores_refuse_uncovered_steps():
    points = PointScores(5)
    points.add(np.array([0]), np.ones((1, 3)))
    with pytest.raises(ValueError, match="covered by no window"):
        points.result()


def test_gaps_and_entities_break_segments():
    times = pd.date_range("2026-01-01", periods=6, freq="1min", tz="UTC")
    frame = pd.DataFrame(
        {
            "timestamp": [*list(times[:3]), times[5], *list(times[:2])],
            "entity": ["a", "a", "a", "a", "b", "b"],
            "x": np.arange(6.0),
        }
    )
    segments, ordered = frame_to_segments(frame, ["x"], pd.Timedelta("1min"))
    assert segments.bounds.tolist() == [0, 3, 4, 6]
    assert ordered["entity"].tolist() == ["a", "a", "a", "a", "b", "b"]


def test_short_segments_are_padded_and_every_row_kept():
    segments = concat_segments([np.ones((2, 1)), np.arange(6.0)[:, None]])
    padded, keep = pad_short_segments(segments, window=4)
    assert padded.lengths.tolist() == [4, 6]
    np.testing.assert_array_equal(padded.values[keep], segments.values)


def test_split_tail_holds_out_the_end_of_each_segment():
    segments = concat_segments([np.arange(10.0)[:, None], np.arange(20.0)[:, None]])
    head, tail = segments.split_tail(0.2)
    assert head.lengths.tolist() == [8, 16]
    assert tail.lengths.tolist() == [2, 4]
    assert tail.values[:2, 0].tolist() == [8.0, 9.0]


def test_scaler_round_trips_as_json_and_survives_constant_features(tmp_path):
    values = np.column_stack([np.arange(100.0), np.full(100, 5.0)])
    scaler = StandardScaler.fit(values, ["a", "b"])
    scaler.save(tmp_path / "scaler.json")
    loaded = StandardScaler.load(tmp_path / "scaler.json")
    scaled = loaded.transform(values)
    assert np.isfinite(scaled).all()
    assert abs(scaled[:, 0].mean()) < 1e-6 and np.allclose(scaled[:, 1], 0.0)


def test_segments_reject_inconsistent_bounds():
    with pytest.raises(ValueError, match="bounds"):
        Segments(np.zeros((5, 1), dtype=np.float32), np.array([0, 3]))


@pytest.mark.parametrize(
    ("seed", "n_rows", "window", "n_starts", "features"),
    [(0, 50, 7, 30, None), (1, 40, 5, 20, 3)],
    ids=["per row", "per row and feature"],
)
def test_point_scores_equal_the_mean_over_covering_windows_in_any_chunking(
    seed: int, n_rows: int, window: int, n_starts: int, features: int | None
) -> None:
    """``features=None`` is :class:`PointScores` (errors ``[i, t]``), otherwise
    :class:`PointFeatureScores` (errors ``[i, t, f]``)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n_rows - window + 1, size=n_starts, replace=False)
    starts = np.union1d(chosen, [0, n_rows - window])
    feature_shape = () if features is None else (features,)
    errors = rng.random((len(starts), window, *feature_shape))
    total, count = np.zeros((n_rows, *feature_shape)), np.zeros(n_rows)
    for start, block in zip(starts, errors, strict=True):
        total[start : start + window] += block
        count[start : start + window] += 1
    expected = total / (count if features is None else count[:, None])
    for chunk in (1, 4, len(starts)):
        points = PointScores(n_rows) if features is None else PointFeatureScores(n_rows, features)
        for begin in range(0, len(starts), chunk):
            points.add(starts[begin : begin + chunk], errors[begin : begin + chunk])
        points.add(np.empty(0, dtype=np.int64), np.empty((0, window, *feature_shape)))
        np.testing.assert_allclose(points.result(), expected, rtol=1e-12)
