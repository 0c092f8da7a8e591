"""`tsad bench`: every detector on every series of public benchmarks, under one honest protocol.

Per series: the scaler and detector fit on the unlabeled train part; the labeled test part is
cut in time, its first 30% calibrates the threshold (best F1; a percentile of those scores when
that part holds no anomaly) and only its last 70% is reported. A series whose reported part
holds no anomaly is skipped and counted. Where a series has interpretation labels (SMD), the
detector's feature attribution is measured too (HitRate@100%/150%), beside the z-score baseline.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipeline import attribution, evaluation, selection
from pipeline.bench_jobs import ordered_map
from pipeline.calibration import fit_calibrator
from pipeline.data.public_datasets import (
    BenchmarkSeries,
    has_evaluation_anomalies,
    load_benchmark,
    split_for_evaluation,
)
from pipeline.data.windows import Segments, StandardScaler
from pipeline.detectors.base import Detector
from pipeline.detectors.registry import detector_class, make_detector, supported_params

log = logging.getLogger(__name__)


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
    calib_vus_pr: float = math.nan
    chosen: str = ""
    error: str = ""


AUTO = "auto"
# ``auto``'s default candidates: the detectors that train in minutes on a CPU, the VAE included
# for its wins on ASD.
AUTO_CANDIDATES = ("pca", "iforest", "ocsvm", "dense_ae", "vae", "lstm_ae")
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


@dataclass(frozen=True)
class Fitted:
    """A detector fitted on a series' train part, with its scores of the whole test part."""

    detector: Detector
    scores: np.ndarray
    fit_seconds: float
    score_seconds: float


class SeriesRun:
    """Every detector of a run on one series, each fitted and scored at most once.

    ``auto`` and the single detectors of the same run share fits, so ``auto``'s winner is
    exactly the single detector's row, and a candidate is not trained twice.
    """

    def __init__(self, series: BenchmarkSeries, common: dict, save_scores: Path | None = None):
        self.series = series
        self.common = common
        self.save_scores = save_scores
        self.split = split_for_evaluation(series)
        self.scaler = StandardScaler.fit(series.train, series.feature_names)
        self.scaled_test = self.scaler.transform(series.test)
        self._fitted: dict[str, Fitted | Exception] = {}

    def fitted(self, name: str) -> Fitted:
        """Fit ``name`` on the train part and score the test part (cached, failures too)."""
        if name not in self._fitted:
            try:
                self._fitted[name] = self._fit(name)
            except Exception as exc:  # one detector's failure must not end the run
                self._fitted[name] = exc
        outcome = self._fitted[name]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _fit(self, name: str) -> Fitted:
        detector = make_detector(name, **supported_params(name, self.common))
        started = time.perf_counter()
        detector.fit(Segments.single(self.scaler.transform(self.series.train)))
        fitted = time.perf_counter()
        scores = detector.score(Segments.single(self.scaled_test))
        return Fitted(detector, scores, fitted - started, time.perf_counter() - fitted)

    def row(self, name: str) -> BenchmarkRow:
        """``name``'s row; a detector that fails gets a row holding its error instead."""
        try:
            return self._report(name, name, self.fitted(name))
        except Exception as exc:
            log.warning("%s on %s/%s failed: %s", name, self.series.dataset, self.series.name, exc)
            return self._failed(name, exc)

    def auto_rows(self, candidates: Sequence[str]) -> list[BenchmarkRow]:
        """``auto``: the candidate with the best VUS-PR on the calibration part, reported on
        the evaluation part; plus a row for each candidate that failed (it was not chosen)."""
        cut = self.split.cut
        metrics, failed = {}, []
        for name in candidates:
            try:
                scores = self.fitted(name).scores
            except Exception as exc:
                failed.append(self._failed(name, exc))
                continue
            metrics[name] = selection.validation_metric(self.split.calib_labels, scores[:cut])
        if not metrics:
            return [*failed, self._failed(AUTO, RuntimeError("every candidate failed"))]
        winner = selection.choose(metrics)
        chosen = self.fitted(winner)
        row = self._report(AUTO, winner, chosen)
        every = [self.fitted(name) for name in metrics]
        return [
            *failed,
            replace(
                row,
                chosen=winner,
                fit_seconds=sum(fitted.fit_seconds for fitted in every),
                score_seconds=sum(fitted.score_seconds for fitted in every),
            ),
        ]

    def _report(self, label: str, name: str, fitted: Fitted) -> BenchmarkRow:
        split, series, scores = self.split, self.series, fitted.scores
        calibration_scores = scores[: split.cut]
        calibrator = fit_calibrator("best_f1", calibration_scores, split.calib_labels)
        reported = scores[split.cut :]
        metrics = evaluation.evaluate(split.eval_labels, reported, calibrator.threshold_)
        if self.save_scores is not None:
            self.save_scores.mkdir(parents=True, exist_ok=True)
            np.savez(
                self.save_scores / f"{series.dataset}__{series.name}__{label}.npz",
                score=reported,
                label=split.eval_labels,
                threshold=calibrator.threshold_,
            )
        hit_rates = attribution_hit_rates(
            series, fitted.detector, self.scaled_test, slice(split.cut, None)
        )
        return BenchmarkRow(
            dataset=series.dataset,
            series=series.name,
            detector=label,
            vus_pr=metrics["vus_pr"],
            auc_pr=metrics["auc_pr"],
            auc_roc=metrics["auc_roc"],
            f1=metrics["f1"],
            threshold=calibrator.threshold_,
            fit_seconds=fitted.fit_seconds,
            score_seconds=fitted.score_seconds,
            calib_vus_pr=selection.validation_metric(split.calib_labels, calibration_scores),
            hitrate_100=hit_rates.get("hitrate_100", math.nan),
            hitrate_150=hit_rates.get("hitrate_150", math.nan),
            zscore_hitrate_100=hit_rates.get("zscore_hitrate_100", math.nan),
            zscore_hitrate_150=hit_rates.get("zscore_hitrate_150", math.nan),
        )

    def _failed(self, name: str, exc: Exception) -> BenchmarkRow:
        return BenchmarkRow(
            dataset=self.series.dataset,
            series=self.series.name,
            detector=name,
            vus_pr=math.nan,
            auc_pr=math.nan,
            auc_roc=math.nan,
            f1=math.nan,
            threshold=math.nan,
            fit_seconds=math.nan,
            score_seconds=math.nan,
            error=f"{type(exc).__name__}: {exc}",
        )


def run_series(
    series: BenchmarkSeries,
    detector_name: str,
    common: dict,
    save_scores: Path | None = None,
) -> BenchmarkRow:
    """Fit, calibrate and evaluate one detector on one series (its error in the row if it
    fails)."""
    return SeriesRun(series, common, save_scores).row(detector_name)


def parse_detectors(names: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Single detectors, and ``auto``'s candidates (None without ``auto``).

    ``auto`` alone means :data:`AUTO_CANDIDATES`; ``auto:a,b,...`` names the candidates and,
    since the list is comma-separated like the rest, takes every name after it. Every name
    is checked before anything trains.
    """
    singles: list[str] = []
    candidates: list[str] | None = None
    for index, name in enumerate(names):
        if name == AUTO:
            candidates = list(AUTO_CANDIDATES)
        elif name.startswith(f"{AUTO}:"):
            candidates = [name.removeprefix(f"{AUTO}:"), *names[index + 1 :]]
            break
        else:
            singles.append(name)
    if candidates is not None and not all(candidates):
        raise ValueError("auto: names no candidate; write auto or auto:pca,dense_ae,...")
    for name in [*singles, *(candidates or [])]:
        detector_class(name)
    return singles, candidates


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
    jobs: int = 1,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Run the grid; rows are appended to ``out`` as they finish so a long run loses nothing.

    ``seed`` seeds every detector that draws random numbers (weights, batches, subsamples),
    so a rerun with the same seed on the same machine repeats the table. ``jobs`` above 1
    runs that many series at a time in worker processes (:mod:`pipeline.bench_jobs`); the CSV
    gets the same rows in the same order.
    """
    common = {"device": device, "seed": seed} | ({"epochs": epochs} if epochs else {})
    skipped: dict[str, int] = {}
    evaluated: list[BenchmarkSeries] = []
    for series in select_series(data_root, datasets, series_names):
        if has_evaluation_anomalies(split_for_evaluation(series)):
            evaluated.append(series)
        else:
            skipped[series.dataset] = skipped.get(series.dataset, 0) + 1
    singles, candidates = parse_detectors(detectors)
    work = functools.partial(
        series_rows, singles=singles, candidates=candidates, common=common, save_scores=save_scores
    )
    rows: list[BenchmarkRow] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle, tqdm(total=len(evaluated), desc="series") as bar:
        writer = csv.DictWriter(handle, fieldnames=list(BenchmarkRow.__dataclass_fields__))
        writer.writeheader()
        for series, finished in zip(evaluated, ordered_map(work, evaluated, jobs), strict=True):
            for row in finished:
                writer.writerow(asdict(row))
            handle.flush()
            rows += finished
            bar.set_postfix_str(f"{series.dataset}/{series.name} done")
            bar.update(1)
    return pd.DataFrame([asdict(row) for row in rows]), skipped


def series_rows(
    series: BenchmarkSeries,
    singles: Sequence[str],
    candidates: Sequence[str] | None,
    common: dict,
    save_scores: Path | None,
) -> list[BenchmarkRow]:
    """Every row of one series: the single detectors in order, then ``auto``'s.

    A module-level function of plain data, so a worker process can run it.
    """
    series_run = SeriesRun(series, common, save_scores)
    rows = [series_run.row(name) for name in singles]
    if candidates is not None:
        done = {row.detector for row in rows}
        rows += [row for row in series_run.auto_rows(candidates) if row.detector not in done]
    return rows


def markdown_table(results: pd.DataFrame, skipped: dict[str, int]) -> str:
    """Mean metrics per dataset and detector over the series it finished, as a markdown table;
    then what ``auto`` chose and every failure with its error."""
    columns = ["vus_pr", "auc_pr", "auc_roc", "f1", "fit_seconds", "score_seconds"]
    columns += [name for name in HIT_RATE_COLUMNS if results[name].notna().any()]
    failed = results[results["error"].fillna("") != ""]
    finished = results.drop(index=failed.index)
    summary = finished.groupby(["dataset", "detector"])[columns].mean().reset_index()
    counts = finished.groupby(["dataset", "detector"]).size().rename("series").reset_index()
    summary = summary.merge(counts, on=["dataset", "detector"])
    header = "| dataset | detector | series | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 3)]
    for row in summary.itertuples(index=False):
        values = " | ".join(f"{getattr(row, column):.3f}" for column in columns)
        lines.append(f"| {row.dataset} | {row.detector} | {row.series} | {values} |")
    chosen = finished[finished["detector"] == AUTO]
    if len(chosen):
        lines.append("")
        lines.append(
            "auto chose: "
            + "; ".join(f"{row.dataset}/{row.series} {row.chosen}" for row in chosen.itertuples())
        )
    if skipped:
        lines.append("")
        lines.append(
            "skipped (no anomaly in the reported part): "
            + ", ".join(f"{dataset} {count}" for dataset, count in skipped.items())
        )
    if len(failed):
        lines.append("")
        lines.append(f"FAILED ({len(failed)}):")
        lines += [
            f"- {row.dataset}/{row.series} {row.detector}: {row.error}"
            for row in failed.itertuples()
        ]
    return "\n".join(lines)


def failures(results: pd.DataFrame) -> int:
    """How many detector runs of ``results`` failed."""
    return int((results["error"].fillna("") != "").sum())
