"""`tsad bench`: every detector on every series of public benchmarks, under one honest protocol.

Per series: the scaler and detector fit on the unlabeled train part; the labeled test part is
cut in time, its first 30% calibrates the threshold (best F1; a percentile of those scores when
that part holds no anomaly) and only its last 70% is reported. A series whose reported part
holds no anomaly is skipped and counted. Where a series has interpretation labels (SMD), the
detector's feature attribution is measured too (HitRate@100%/150%), beside the z-score baseline.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipeline import attribution, evaluation
from pipeline.calibration import fit_calibrator
from pipeline.data.public_datasets import (
    BenchmarkSeries,
    has_evaluation_anomalies,
    load_benchmark,
    split_for_evaluation,
)
from pipeline.data.windows import Segments, StandardScaler
from pipeline.detectors.base import Detector
from pipeline.detectors.registry import make_detector, supported_params


@dataclass(frozen=True)
class BenchmarkRow:
    """One CSV row: a detector on a series."""

    dataset: str
    series: str
    detector: str
    vus_pr: float
    auc_pr: float
    auc_roc: float
    f1: float
    threshold: float
    fit_seconds: float
    score_seconds: float
    hitrate_100: float = math.nan
    hitrate_150: float = math.nan
    zscore_hitrate_100: float = math.nan
    zscore_hitrate_150: float = math.nan


HIT_RATE_PERCENTS = (100, 150)
HIT_RATE_COLUMNS = tuple(
    f"{prefix}hitrate_{percent}" for prefix in ("", "zscore_") for percent in HIT_RATE_PERCENTS
)


def attribution_hit_rates(
    series: BenchmarkSeries, detector: Detector, scaled_test: np.ndarray, reported: slice
) -> dict[str, float]:
    """HitRate@100%/150% of the detector's attribution and of the z-score baseline.

    Counted over the interpreted anomalous points of the reported part only, like the
    detection metrics beside them; empty (NaN columns) for series without interpretation labels.
    """
    if series.interpretation is None:
        return {}
    attributions = {
        "": detector.score_features(Segments.single(scaled_test)),
        "zscore_": attribution.deviation_scores(scaled_test),
    }
    return {
        f"{prefix}hitrate_{percent}": attribution.hit_rate(
            scores, series.interpretation, percent, reported
        )
        for prefix, scores in attributions.items()
        for percent in HIT_RATE_PERCENTS
    }


def run_series(
    series: BenchmarkSeries,
    detector_name: str,
    common: dict,
    save_scores: Path | None = None,
) -> BenchmarkRow:
    """Fit, calibrate and evaluate one detector on one series."""
    split = split_for_evaluation(series)
    scaler = StandardScaler.fit(series.train, series.feature_names)
    detector = make_detector(detector_name, **supported_params(detector_name, common))
    started = time.perf_counter()
    detector.fit(Segments.single(scaler.transform(series.train)))
    fitted = time.perf_counter()
    scaled_test = scaler.transform(series.test)
    scores = detector.score(Segments.single(scaled_test))
    scored = time.perf_counter()
    calibration_scores = scores[: split.cut]
    calibrator = fit_calibrator("best_f1", calibration_scores, split.calib_labels)
    reported = scores[split.cut :]
    metrics = evaluation.evaluate(split.eval_labels, reported, calibrator.threshold_)
    if save_scores is not None:
        save_scores.mkdir(parents=True, exist_ok=True)
        np.savez(
            save_scores / f"{series.dataset}__{series.name}__{detector_name}.npz",
            score=reported,
            label=split.eval_labels,
            threshold=calibrator.threshold_,
        )
    return BenchmarkRow(
        dataset=series.dataset,
        series=series.name,
        detector=detector_name,
        vus_pr=metrics["vus_pr"],
        auc_pr=metrics["auc_pr"],
        auc_roc=metrics["auc_roc"],
        f1=metrics["f1"],
        threshold=calibrator.threshold_,
        fit_seconds=fitted - started,
        score_seconds=scored - fitted,
        **attribution_hit_rates(series, detector, scaled_test, slice(split.cut, None)),
    )


def select_series(
    data_root: Path, datasets: Sequence[str], names: Sequence[str] | None = None
) -> list[BenchmarkSeries]:
    """Every series of ``datasets``, or only those named in ``names`` (any dataset's names).

    A name found in none of the datasets is an error, not a silently smaller benchmark.
    """
    if names is None:
        return [series for dataset in datasets for series in load_benchmark(data_root, dataset)]
    chosen = [
        series
        for dataset in datasets
        for series in load_benchmark(data_root, dataset, series=names, strict=False)
    ]
    unknown = sorted(set(names) - {series.name for series in chosen})
    if unknown:
        raise ValueError(f"no series {unknown} in {', '.join(datasets)} under {data_root}")
    return chosen


def run(
    data_root: Path,
    datasets: Sequence[str],
    detectors: Sequence[str],
    out: Path,
    save_scores: Path | None = None,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    series_names: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Run the grid; rows are appended to ``out`` as they finish so a long run loses nothing.

    ``seed`` seeds every detector that draws random numbers (weights, batches, subsamples),
    so a rerun with the same seed on the same machine repeats the table.
    """
    common = {"device": device, "seed": seed} | ({"epochs": epochs} if epochs else {})
    skipped: dict[str, int] = {}
    evaluated: list[BenchmarkSeries] = []
    for series in select_series(data_root, datasets, series_names):
        if has_evaluation_anomalies(split_for_evaluation(series)):
            evaluated.append(series)
        else:
            skipped[series.dataset] = skipped.get(series.dataset, 0) + 1
    rows: list[BenchmarkRow] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = [(series, name) for series in evaluated for name in detectors]
    with out.open("w", newline="") as handle, tqdm(grid, desc="series x detector") as bar:
        writer = csv.DictWriter(handle, fieldnames=list(BenchmarkRow.__dataclass_fields__))
        writer.writeheader()
        for series, name in bar:
            bar.set_postfix_str(f"{series.dataset}/{series.name} {name}")
            row = run_series(series, name, common, save_scores)
            rows.append(row)
            writer.writerow(asdict(row))
            handle.flush()
    return pd.DataFrame([asdict(row) for row in rows]), skipped


def markdown_table(results: pd.DataFrame, skipped: dict[str, int]) -> str:
    """Mean metrics per dataset and detector, as a markdown table."""
    columns = ["vus_pr", "auc_pr", "auc_roc", "f1", "fit_seconds", "score_seconds"]
    columns += [name for name in HIT_RATE_COLUMNS if results[name].notna().any()]
    summary = results.groupby(["dataset", "detector"])[columns].mean().reset_index()
    counts = results.groupby(["dataset", "detector"]).size().rename("series").reset_index()
    summary = summary.merge(counts, on=["dataset", "detector"])
    header = "| dataset | detector | series | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 3)]
    for row in summary.itertuples(index=False):
        values = " | ".join(f"{getattr(row, column):.3f}" for column in columns)
        lines.append(f"| {row.dataset} | {row.detector} | {row.series} | {values} |")
    if skipped:
        lines.append("")
        lines.append(
            "skipped (no anomaly in the reported part): "
            + ", ".join(f"{dataset} {count}" for dataset, count in skipped.items())
        )
    return "\n".join(lines)
