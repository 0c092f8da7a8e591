"""The ensemble: members on one scale, combined, saved as members' own directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from pipeline.data.windows import Segments
from pipeline.detectors.registry import load_detector, make_detector

_DENSE = {"hidden": [64], "code_size": 8}
_SHARED = {"epochs": 5, "window": 24, "device": "cpu"}


def _ensemble(**params) -> dict:
    members = [
        {"detector": "pca", "params": {"n_components": 2}},
        {"detector": "dense_ae", "params": _DENSE},
    ]
    return {"members": members} | _SHARED | params


@pytest.mark.parametrize(("scale", "combine"), [("rank", "mean"), ("robust_z", "max")])
def test_every_scale_and_combination_detects(
    scale: str, combine: str, train_segments: Segments, labelled_test
) -> None:
    segments, labels = labelled_test
    ensemble = make_detector("ensemble", **_ensemble(scale=scale, combine=combine))
    scores = ensemble.fit(train_segments).score(segments)
    assert roc_auc_score(labels, scores) > 0.8


def test_members_are_put_on_one_scale_before_combining(train_segments, labelled_test) -> None:
    """Raw scores differ by orders of magnitude between members; after scaling each member's
    training scores have median 0 and robust spread 1, so with equal weights both count and
    the ensemble ranks rows unlike either member alone."""
    segments, _ = labelled_test
    ensemble = make_detector("ensemble", **_ensemble()).fit(train_segments)
    for member, scale in zip(ensemble.members_, ensemble.scales_, strict=True):
        scaled = scale.apply(member.score(train_segments))
        assert abs(np.median(scaled)) < 1e-6
        assert 1.4826 * np.median(np.abs(scaled)) == pytest.approx(1.0, rel=1e-3)
    combined = ensemble.score(segments)
    for member in ensemble.members_:
        assert spearmanr(combined, member.score(segments)).statistic < 0.99


def test_a_dominant_weight_makes_the_ensemble_rank_like_that_member(
    train_segments, labelled_test
) -> None:
    segments, _ = labelled_test
    members = [
        {"detector": "pca", "params": {"n_components": 2}, "weight": 1000.0},
        {"detector": "dense_ae", "params": _DENSE, "weight": 0.001},
    ]
    ensemble = make_detector("ensemble", members=members, **_SHARED).fit(train_segments)
    pca = ensemble.members_[0].score(segments)
    assert spearmanr(ensemble.score(segments), pca).statistic > 0.999


def test_saved_as_json_config_and_members_own_directories(
    train_segments, labelled_test, tmp_path: Path
) -> None:
    segments, _ = labelled_test
    ensemble = make_detector("ensemble", **_ensemble(device=None)).fit(train_segments)
    ensemble.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert [item["path"] for item in meta["state"]["members"]] == [
        "members/0-pca",
        "members/1-dense_ae",
    ]
    assert (
        json.loads((tmp_path / "model/members/1-dense_ae/config.json").read_text())["detector"]
        == "dense_ae"
    )
    suffixes = {path.suffix for path in (tmp_path / "model").rglob("*") if path.is_file()}
    assert suffixes <= {".json", ".pt", ".npz"}
    loaded = load_detector(tmp_path / "model", device="cpu")
    np.testing.assert_allclose(loaded.score(segments), ensemble.score(segments), rtol=1e-6)


def test_a_bad_member_is_refused_before_anything_trains() -> None:
    with pytest.raises(pydantic.ValidationError, match="not a single detector"):
        make_detector("ensemble", members=[{"detector": "ensemble"}])
    with pytest.raises(pydantic.ValidationError, match="not_a_knob"):
        make_detector("ensemble", members=[{"detector": "pca", "params": {"not_a_knob": 1}}])
