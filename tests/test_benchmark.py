"""`tsad bench` on real series: the protocol, the CSV, the saved scores and the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import benchmark
from pipeline.cli import main
from pipeline.data.public_datasets import BenchmarkSeries, load_benchmark, split_for_evaluation


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
        "calib_vus_pr",
        "chosen",
        "error",
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


def _telemanom_release(root: Path) -> Path:
    """A tiny telemanom release as published: channel S-2 listed twice in
    labeled_anomalies.csv, and S-1's train part shorter than a torch detector's window."""
    rng = np.random.default_rng(0)
    for chan, train_rows in (("S-1", 40), ("S-2", 600)):
        for part, rows in (("train", train_rows), ("test", 300)):
            (root / "SMAP" / part).mkdir(parents=True, exist_ok=True)
            values = np.sin(np.arange(rows)[:, None] / 7 + np.arange(3)) + 0.05 * rng.random(
                (rows, 3)
            )
            np.save(root / "SMAP" / part / f"{chan}.npy", values)
    pd.DataFrame(
        {
            "chan_id": ["S-1", "S-2", "S-2"],
            "spacecraft": ["SMAP"] * 3,
            "anomaly_sequences": ["[[40, 50], [200, 220]]", "[[30, 45]]", "[[150, 170]]"],
            "class": ["[point, contextual]", "[point]", "[contextual]"],
            "num_values": [300, 300, 300],
        }
    ).to_csv(root / "SMAP" / "labeled_anomalies.csv", index=False)
    return root


def test_bench_records_a_failing_detector_goes_on_and_exits_non_zero(tmp_path, capsys):
    root = _telemanom_release(tmp_path / "data")
    out = tmp_path / "results.csv"
    flags = [
        "--datasets",
        "SMAP",
        "--detectors",
        "dense_ae,pca",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]
    status = main(["bench", "--data-root", str(root), *flags, "--out", str(out)])
    assert status == 1
    results = pd.read_csv(out, keep_default_na=False, na_values=["nan"])
    assert list(zip(results["series"], results["detector"], strict=True)) == [
        ("S-1", "dense_ae"),
        ("S-1", "pca"),
        ("S-2", "dense_ae"),
        ("S-2", "pca"),
    ]
    failed = results[results["error"] != ""]
    assert list(zip(failed["series"], failed["detector"], strict=True)) == [("S-1", "dense_ae")]
    assert "no segment is as long as the window" in failed["error"].iloc[0]
    assert failed[["vus_pr", "f1"]].isna().all().all()
    assert results.drop(index=failed.index)["vus_pr"].notna().all()
    captured = capsys.readouterr()
    assert "| SMAP | dense_ae | 1 |" in captured.out  # the series it finished
    assert "FAILED (1):" in captured.out and "SMAP/S-1 dense_ae" in captured.out
    assert "1 detector run(s) failed" in captured.err


def test_auto_reports_the_candidate_best_on_the_calibration_part(shared_datasets, tmp_path):
    out = tmp_path / "results.csv"
    flags = ["--datasets", "ASD", "--series", "omi-1,omi-2", "--device", "cpu", "--detectors"]
    detectors = "pca,iforest,ocsvm,auto:pca,iforest,ocsvm"
    status = main(
        ["bench", "--data-root", str(shared_datasets), *flags, detectors, "--out", str(out)]
    )
    assert status == 0
    results = pd.read_csv(out, keep_default_na=False, na_values=["nan"])
    for _, rows in results.groupby("series"):
        singles = rows[rows["detector"] != "auto"].set_index("detector")
        (auto,) = rows[rows["detector"] == "auto"].itertuples()
        assert auto.chosen == singles["calib_vus_pr"].idxmax()
        winner = singles.loc[auto.chosen]
        assert (auto.vus_pr, auto.threshold) == (winner["vus_pr"], winner["threshold"])


def test_auto_never_sees_the_reported_labels(shared_datasets):
    """Relabel the reported 70% so that the candidate auto did not choose is nearly perfect
    there: a choice that peeked at those labels would switch; the honest one cannot."""
    series = load_benchmark(shared_datasets, "ASD", series=["omi-1"])[0]
    candidates = ["pca", "iforest"]
    honest = benchmark.SeriesRun(series, {"seed": 0})
    (chosen,) = honest.auto_rows(candidates)
    loser = next(name for name in candidates if name != chosen.chosen)
    split = honest.split
    peak = int(np.argmax(honest.fitted(loser).scores[split.cut :]))
    leaked = np.zeros_like(split.eval_labels)
    leaked[max(peak - 20, 0) : peak + 20] = 1
    relabeled = BenchmarkSeries(
        dataset=series.dataset,
        name=series.name,
        train=series.train,
        test=series.test,
        test_labels=np.concatenate([split.calib_labels, leaked]),
        feature_names=series.feature_names,
    )
    rerun = benchmark.SeriesRun(relabeled, {"seed": 0})
    on_leaked = {name: rerun.row(name).vus_pr for name in candidates}
    assert on_leaked[loser] > on_leaked[chosen.chosen]  # peeking would pick the loser
    (again,) = rerun.auto_rows(candidates)
    assert again.chosen == chosen.chosen
    assert again.vus_pr == on_leaked[chosen.chosen]


def test_bench_jobs_writes_the_csv_a_serial_run_writes(tmp_path):
    """Series in two worker processes: the same rows in the same order as one process.

    The parallel run is driven as a user runs it, through the command line in a fresh process.
    """
    root = _telemanom_release(tmp_path / "data")
    flags = ["--data-root", str(root), "--datasets", "SMAP", "--detectors", "pca"]
    flags += ["--device", "cpu"]
    assert main(["bench", *flags, "--out", str(tmp_path / "serial.csv")]) == 0
    command = [sys.executable, "-m", "pipeline.cli", "bench", *flags, "--jobs", "2"]
    finished = subprocess.run(
        [*command, "--out", str(tmp_path / "parallel.csv")], capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr
    assert "| SMAP | pca | 2 |" in finished.stdout
    timings = ["fit_seconds", "score_seconds"]  # wall-clock, the only columns that may differ
    serial, parallel = (
        pd.read_csv(tmp_path / name).drop(columns=timings)
        for name in ("serial.csv", "parallel.csv")
    )
    assert list(serial["series"]) == ["S-1", "S-2"]
    pd.testing.assert_frame_equal(parallel, serial)


def test_bench_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(
            ["bench", "--data-root", ".", "--datasets", "SMD", "--detectors", "pca", "--jobs", "0"]
        )
    assert "must be at least 1" in capsys.readouterr().err
