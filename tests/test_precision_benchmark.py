"""The fp32-against-bf16 quality table: seeds' spread, the verdict, unfinished runs."""

from __future__ import annotations

import pandas as pd

from benchmarks.precision import markdown, summary


def _rows(series: str, detector: str, scores: dict[tuple[str, int], float]) -> list[dict]:
    return [
        {
            "dataset": "ASD",
            "series": series,
            "detector": detector,
            "precision": precision,
            "seed": seed,
            "vus_pr": value,
            "fit_seconds": 1.0,
        }
        for (precision, seed), value in scores.items()
    ]


def test_the_table_compares_seed_means_and_says_whether_bf16_is_within_their_spread():
    close = {("fp32", 0): 0.50, ("fp32", 1): 0.60, ("bf16", 0): 0.52, ("bf16", 1): 0.60}
    far = {("fp32", 0): 0.50, ("fp32", 1): 0.51, ("bf16", 0): 0.30, ("bf16", 1): 0.31}
    # A series the run had not finished for every seed and precision does not count.
    unfinished = {("fp32", 0): 0.9}
    results = pd.DataFrame(
        _rows("omi-1", "vae", close)
        + _rows("omi-1", "dense_ae", far)
        + _rows("omi-2", "vae", unfinished)
    )
    table = summary(results).set_index(["detector", "precision"])
    assert table.loc[("vae", "fp32"), "vus_pr"] == 0.55
    assert table.loc[("vae", "fp32"), "seeds"] == 2
    lines = markdown(summary(results)).splitlines()
    assert any(
        line.startswith("| vae | 0.550 ± 0.071 | 0.560 ± 0.057 | +0.010 | yes") for line in lines
    )
    assert any(line.startswith("| dense_ae |") and "| no |" in line for line in lines)
