"""Event aggregation: streamed, merged partials equal a plain pandas computation of the day."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipeline.config import DatasetSpec
from pipeline.data.aggregation import aggregate_day, aggregate_events

DAY = dt.date(2026, 3, 1)
CAP = 86_400.0
SPEC = DatasetSpec.model_validate(
    {
        "name": "payments",
        "entity_source": "account_id",
        "label_column": "label",
        "events": {
            "event_id": "txn_id",
            "bucket": "1h",
            "numeric": [{"name": "amount"}],
            "categorical": [{"name": "country", "values": ["US", "GB", "FR"]}],
            "aggregates": [
                {"name": "payments", "kind": "count"},
                {"name": "spent", "kind": "sum", "field": "amount"},
                {"name": "mean_amount", "kind": "mean", "field": "amount", "fill": -1},
                {"name": "largest", "kind": "max", "field": "amount", "fill": -1},
                {"name": "countries", "kind": "distinct", "field": "country"},
                {"name": "share_gb", "kind": "share", "field": "country", "value": "GB"},
                {"name": "gap", "kind": "time_since_previous", "fill": CAP},
            ],
        },
    }
)


def random_events(n: int, accounts: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, 86_400 * 10**9, n)
    return pd.DataFrame(
        {
            "timestamp": pd.Timestamp(DAY, tz="UTC") + pd.to_timedelta(offsets, unit="ns"),
            "account_id": rng.integers(0, accounts, n).astype(str),
            "txn_id": np.arange(n).astype(str),
            "amount": rng.exponential(30.0, n).round(2),
            "country": rng.choice(["US", "GB", "FR"], n, p=[0.8, 0.15, 0.05]),
            "label": (rng.random(n) < 0.05).astype(int),
        }
    )


def in_batches(events: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [events.iloc[start : start + size] for start in range(0, len(events), size)]


def plain_pandas(events: pd.DataFrame) -> pd.DataFrame:
    """The non-empty buckets' aggregates, computed on the whole day at once."""
    events = events.sort_values(["account_id", "timestamp"])
    previous = events.groupby("account_id")["timestamp"].shift(1)
    events = events.assign(
        bucket=events["timestamp"].dt.floor("1h"),
        gb=(events["country"] == "GB").astype(float),
        gap=(events["timestamp"] - previous).dt.total_seconds(),
    )
    grouped = events.groupby(["account_id", "bucket"])
    return pd.DataFrame(
        {
            "payments": grouped.size().astype(float),
            "spent": grouped["amount"].sum(),
            "mean_amount": grouped["amount"].mean(),
            "largest": grouped["amount"].max(),
            "countries": grouped["country"].nunique().astype(float),
            "share_gb": grouped["gb"].mean(),
            "gap": grouped["gap"].nth(0).set_axis(grouped.size().index).fillna(CAP).clip(upper=CAP),
            "label": grouped["label"].max(),
        }
    )


@pytest.mark.parametrize("batch_size", [97, 5_000])
def test_streamed_aggregates_equal_plain_pandas(batch_size, monkeypatch):
    monkeypatch.setattr("pipeline.data.aggregation.PENDING_ROWS", 300)  # merge often
    events = random_events(3_000, accounts=40)
    series = aggregate_events(in_batches(events, batch_size), SPEC, DAY)
    expected = plain_pandas(events)
    keyed = series.set_index(["entity", "timestamp"])
    present = keyed.loc[expected.index.set_names(["entity", "timestamp"])]
    for column in expected.columns:
        np.testing.assert_allclose(present[column], expected[column], rtol=1e-9, err_msg=column)
    assert series["payments"].sum() == len(events)


def test_empty_buckets_get_their_fill_and_every_entity_every_bucket():
    events = random_events(30, accounts=3, seed=1)
    series = aggregate_events([events], SPEC, DAY)
    assert len(series) == 3 * 24
    assert series.groupby("entity").size().eq(24).all()
    empty = series[series["payments"] == 0]
    assert len(empty) > 0
    assert (empty[["spent", "countries", "share_gb", "label"]] == 0).all().all()
    assert (empty[["mean_amount", "largest"]] == -1).all().all()
    assert (empty["gap"] == CAP).all()
    assert str(series["timestamp"].dt.tz) == "UTC" and series["label"].dtype == "int8"


def test_day_boundaries_belong_to_the_bucket_they_start():
    start = pd.Timestamp(DAY, tz="UTC")
    times = [start, start + pd.Timedelta("59min 59.999999s"), start + pd.Timedelta("23h59min")]
    events = pd.DataFrame(
        {
            "timestamp": times,
            "account_id": ["a", "a", "b"],
            "txn_id": ["1", "2", "3"],
            "amount": [1.0, 2.0, 3.0],
            "country": ["US", "GB", "US"],
        }
    )
    series = aggregate_events([events], SPEC, DAY).set_index(["entity", "timestamp"])
    assert series.index.get_level_values("timestamp").min() == start
    assert series.index.get_level_values("timestamp").max() == start + pd.Timedelta("23h")
    assert series.loc[("a", start), "payments"] == 2
    assert series.loc[("b", start + pd.Timedelta("23h")), "payments"] == 1
    assert series["payments"].sum() == 3
    assert "label" not in series  # events without labels make a series without them


def test_text_timestamps_aggregate_like_parsed_ones():
    events = random_events(200, accounts=5, seed=2)
    as_text = events.assign(timestamp=events["timestamp"].map(lambda t: t.isoformat()))
    parsed = aggregate_events([events], SPEC, DAY)
    pd.testing.assert_frame_equal(aggregate_events([as_text], SPEC, DAY), parsed)


def test_a_spec_refuses_aggregates_it_cannot_compute():
    bad = SPEC.model_dump()["events"] | {"bucket": "7min"}
    with pytest.raises(ValueError, match="divide a day"):
        DatasetSpec.model_validate({"name": "x", "events": bad})
    aggregates = [{"name": "m", "kind": "mean", "field": "amount"}]
    with pytest.raises(ValueError, match="needs a fill"):
        DatasetSpec.model_validate({"name": "x", "events": bad | {"aggregates": aggregates}})


def test_a_day_split_into_entity_shards_aggregates_as_one(tmp_path):
    events = random_events(2_000, accounts=30, seed=3)
    whole = aggregate_events(in_batches(events, 500), SPEC, DAY)
    located: list[pd.DataFrame] = []
    parts = list(aggregate_day(in_batches(events, 500), SPEC, DAY, 3, tmp_path, located.append))
    assert len(parts) == 3
    assert not set(parts[0]["entity"]) & set(parts[1]["entity"])  # an entity in one shard
    sharded = pd.concat(parts).sort_values(["entity", "timestamp"], ignore_index=True)
    pd.testing.assert_frame_equal(sharded, whole)
    index = pd.concat(located)
    assert sorted(index["event_id"]) == sorted(events["txn_id"])
    assert (
        index["timestamp"]
        == events.set_index("txn_id").loc[index["event_id"], "timestamp"].dt.floor("1h").to_numpy()
    ).all()
