"""`tsad bench` on real series: the protocol, the CSV, the saved scores and the table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import benchmark
from pipeline.cli import main
from pipeline.data.public_datasets import load_benchmark, split_for_evaluation


def test_bench_writes_one_row_per_series_and_detector(shared_datasets, tmp_path, capsys):
    out = tmp_path / "results.csv"
    status = main(
        [
            "bench",
            "--data-root",
            str(shared_datasets),
            "--datasets",
            "ASD",
            "--detectors",
            "pca,iforest",
            "--series",
            "omi-1,omi-3",
            "--out",
            str(out),
            "--save-scores",
            str(tmp_path / "scores"),
            "--device",
            "cpu",
        ]
    )
    assert status == 0
    results = pd.read_csv(out)
    assert list(results.columns) == [
        "dataset",
        "series",
        "detector",
        "vus_pr",
        "auc_pr",
        "auc_roc",
        "f1",
        "threshold",
        "fit_seconds",
        "score_seconds",
        "hitrate_100",
        "hitrate_150",
        "zscore_hitrate_100",
        "zscore_hitrate_150",
    ]
    assert sorted(results["series"].unique()) == ["omi-1", "omi-3"]
    assert len(results) == 2 * 2
    assert results[["vus_pr", "auc_pr", "auc_roc"]].notna().all().all()
    assert results.filter(like="hitrate").isna().all().all()  # ASD has no interpretation labels
    saved = np.load(tmp_path / "scores" / "ASD__omi-1__pca.npz")
    assert len(saved["score"]) == len(saved["label"]) > 0
    assert "| ASD | pca |" in capsys.readouterr().out


def test_threshold_is_fitted_on_the_calibration_part_only(shared_datasets):
    series = load_benchmark(shared_datasets, "SMD", series=["machine-1-6"])[0]
    split = split_for_evaluation(series)
    row = benchmark.run_series(series, "pca", {"device": "cpu"})
    poisoned = series.test.copy()
    poisoned[split.cut :] += 100.0  # the reported part changes; the threshold must not
    shifted = type(series)(
        dataset=series.dataset,
        name=series.name,
        train=series.train,
        test=poisoned,
        test_labels=series.test_labels,
        feature_names=series.feature_names,
    )
    assert benchmark.run_series(shifted, "pca", {"device": "cpu"}).threshold == row.threshold


def test_an_unknown_series_name_is_an_error_not_a_smaller_benchmark(shared_datasets):
    with pytest.raises(ValueError, match=r"no series \['omi-99'\] in ASD"):
        benchmark.select_series(shared_datasets, ["ASD"], ["omi-1", "omi-99"])


def test_the_seed_makes_a_run_repeatable(shared_datasets):
    series = load_benchmark(shared_datasets, "ASD", series=["omi-1"])[0]
    first, again, other = (
        benchmark.run_series(series, "iforest", {"seed": seed}) for seed in (0, 0, 1)
    )
    assert (first.vus_pr, first.threshold) == (again.vus_pr, again.threshold)
    assert first.vus_pr != other.vus_pr
