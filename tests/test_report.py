"""The daily report: its content, and a headless browser rendering it from the file alone."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
from headless_chromium import Browser, headless_browser

from pipeline.monitoring import DriftReport
from pipeline.report import DailyReport, entity_alarms, entity_ranking, render

FEATURES = ["heart_rate", "spo2", "resp_rate"]
STEP = dt.timedelta(minutes=1)
DAY = pd.Timestamp("2026-01-07", tz="UTC")


def day_of(
    entity: str, alarm_steps: slice | None, driver: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Six hours of one entity: scores with alarms at ``alarm_steps`` driven by ``driver``."""
    rng = np.random.default_rng(len(entity))
    times = pd.date_range(DAY, periods=360, freq="1min")
    values = rng.standard_normal((360, len(FEATURES)))
    score = np.abs(rng.standard_normal(360)) * 0.2
    alarm = np.zeros(360, dtype=bool)
    if alarm_steps is not None:
        values[alarm_steps, FEATURES.index(driver)] += 6.0
        score[alarm_steps] += 3.0
        alarm[alarm_steps] = True
    others = [name for name in FEATURES if name != driver]
    scores = pd.DataFrame(
        {
            "timestamp": times,
            "entity": entity,
            "score": score,
            "threshold": 1.0,
            "is_anomaly": alarm,
            "top_features": [[driver, *others] if flag else None for flag in alarm],
            "contributions": [[0.8, 0.15, 0.05] if flag else None for flag in alarm],
        }
    )
    standardised = pd.DataFrame(values, columns=FEATURES).assign(timestamp=times, entity=entity)
    return scores, standardised


@pytest.fixture(scope="module")
def report() -> DailyReport:
    parts = [
        day_of("bed 3 <icu>", slice(100, 130), "spo2"),
        day_of("bed 1", slice(200, 210), "heart_rate"),
        day_of("bed 2", None, "heart_rate"),
    ]
    drift = DriftReport(
        feature_psi={"heart_rate": 0.02, "spo2": 0.41, "resp_rate": 0.05},
        score_psi=0.08,
        anomaly_rate=40 / 1080,
        reference_anomaly_rate=0.01,
        level=0.25,
    )
    scores = pd.concat([scores for scores, _ in parts], ignore_index=True)
    return DailyReport(
        dataset="vitals",
        date="2026-01-07",
        model_name="tsad-vitals",
        model_version="4",
        threshold=1.0,
        rows=len(scores),
        alarms=int(scores["is_anomaly"].sum()),
        ranking=entity_ranking(scores, STEP),
        scores=scores,
        standardised=pd.concat([values for _, values in parts], ignore_index=True),
        drift=drift,
        entities_plotted=3,
    )


def test_entities_are_ranked_by_time_in_alarm(report) -> None:
    ranking = report.ranking
    assert ranking["entity"].tolist() == ["bed 3 <icu>", "bed 1", "bed 2"]
    assert ranking["alarm_minutes"].tolist() == [30.0, 10.0, 0.0]
    assert ranking["top_features"].iloc[0].startswith("spo2")


def test_entity_alarms_summarise_each_entity_in_order_of_appearance() -> None:
    rows = [
        ("bed 2", 0.1, False, None),
        ("bed 2", 2.0, True, ["spo2", "heart_rate"]),
        ("bed 2", 3.0, True, ["resp_rate", "heart_rate"]),
        ("bed 2", 0.2, False, None),
        ("bed 1", 0.5, False, None),
        ("bed 1", 0.7, False, None),
        ("bed 3", 1.5, True, ["temperature", "spo2", "heart_rate", "resp_rate"]),
    ]
    scores = pd.DataFrame(rows, columns=["entity", "score", "is_anomaly", "top_features"])
    expected = pd.DataFrame(
        {
            "entity": ["bed 2", "bed 1", "bed 3"],
            "alarm_minutes": [10.0, 0.0, 5.0],
            "alarm_share": [0.5, 0.0, 1.0],
            "peak_score": [3.0, 0.7, 1.5],
            # Most named first; a tie goes to the feature named first; three at most.
            "top_features": ["heart_rate, spo2, resp_rate", "", "temperature, spo2, heart_rate"],
        }
    )
    result = entity_alarms(scores, dt.timedelta(minutes=5))
    pd.testing.assert_frame_equal(result, expected)


def test_the_report_marks_drift_and_escapes_names(report) -> None:
    page = render(report)
    assert "Drift beyond PSI 0.25:</strong> features spo2" in page
    assert "bed 3 &lt;icu&gt;" in page and "bed 3 <icu>" not in page
    assert "tsad-vitals version 4" in page
    assert page.count("data:image/png;base64,") == 2  # entities with alarms only


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Browser:
    return headless_browser(tmp_path_factory.mktemp("chromium"), budget_ms=10000)


def test_a_headless_browser_renders_headings_and_decodes_every_image(
    report, browser, tmp_path
) -> None:
    page = render(report)
    # The browser records each image's decoded width in the DOM it dumps after loading.
    probe = (
        "<script>window.addEventListener('load', () => { for (const img of "
        "document.images) img.setAttribute('data-natural-width', img.naturalWidth); });"
        "</script></body>"
    )
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe))
    dom = browser.render(probed.as_uri(), tmp_path / "report.png")
    headings = re.findall(r"<h([123])>(.*?)</h\1>", dom)
    assert ("1", "Daily anomaly report: vitals 2026-01-07") in headings
    assert {"Summary", "Drift", "Entities ranked by time in alarm", "Top entities"} <= {
        text for level, text in headings if level == "2"
    }
    assert [text for level, text in headings if level == "3"] == ["bed 3 &lt;icu&gt;", "bed 1"]
    widths = [int(width) for width in re.findall(r'data-natural-width="(\d+)"', dom)]
    assert len(widths) == 2 and min(widths) > 0
