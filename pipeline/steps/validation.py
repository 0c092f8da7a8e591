"""Validation steps: a landed day checked by Great Expectations, quarantined when it fails.

A passing report records the landing files' fingerprint, so later steps can tell that the data
they read is the data that passed, and validate again only when it changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import NoReturn

import pandas as pd

from pipeline.config import DatasetSpec, Settings
from pipeline.data import io, storage
from pipeline.data.validate import ValidationReport, validate_batch

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"
DATA_DOCS_FILE = "report.html"  # Great Expectations' Data Docs page of the same validation


class BatchRejected(RuntimeError):
    """A day's batch failed validation; it was quarantined and nothing downstream may run."""


def _fingerprint(directory: Path) -> str:
    """Names, sizes and modification times of a partition's files: changes when data does."""
    digest = hashlib.sha256()
    for path in io.partition_files(directory):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def validate(dataset: str, day: dt.date, settings: Settings | None = None) -> str:
    """Validate one landed day; on failure quarantine it with its report and raise.

    Returns the path of the passing report, which also records the landing files' fingerprint
    so later steps can tell the data they read is the data that passed.
    """
    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(dataset)
    landing = storage.fetch(settings, settings.partition("landing", dataset, day))
    try:
        report = validate_batch(io.read_partition(landing), spec, day)
        fingerprint = _fingerprint(landing)
    except io.BatchReadError as exc:
        report, fingerprint = failed_report(dataset, day, str(exc)), ""
    if not report.success:
        reject(settings, report, landing)
    for warning in report.warnings:
        log.warning("%s %s: %s", dataset, day, warning)
    record = {"fingerprint": fingerprint, "report": json.loads(report.to_json())}
    target = report_path(settings, dataset, day)
    with storage.publish(settings, target.parent) as staged:
        (staged / DATA_DOCS_FILE).write_text(report.data_docs)
        (staged / REPORT_FILE).write_text(json.dumps(record, indent=2))
    return str(target)


def reject(settings: Settings, report: ValidationReport, landing: Path) -> NoReturn:
    """Quarantine a rejected day (its landed files, if any, and its report), then raise."""
    quarantine = settings.partition("quarantine", report.dataset, report.date)
    with storage.publish(settings, quarantine) as staged:
        io.copy_rejected(landing, staged, report.to_json(), report.data_docs)
    failures = "\n".join(f"  - {line}" for line in report.failures)
    raise BatchRejected(
        f"{report.dataset} {report.date} failed validation and was quarantined to "
        f"{quarantine}:\n{failures}"
    )


def failed_report(dataset: str, day: dt.date, failure: str) -> ValidationReport:
    """The report of a day that could not even be read: one failure, no rows."""
    return ValidationReport(
        dataset=dataset, date=day, success=False, failures=[failure], n_rows=0, result={},
        warnings=[],
    )  # fmt: skip


def validate_days(
    dataset: str, dates: list[dt.date], settings: Settings | None = None
) -> list[str]:
    """Validate several days; every failing day is quarantined before the step fails."""
    reports, rejected = [], []
    for day in dates:
        try:
            reports.append(validate(dataset, day, settings))
        except BatchRejected as exc:
            rejected.append(str(exc))
    if rejected:
        raise BatchRejected("\n".join(rejected))
    return reports


def report_path(settings: Settings, dataset: str, day: dt.date) -> Path:
    """Where the passing validation report of a day lives."""
    return settings.partition("validation", dataset, day) / REPORT_FILE


def is_validated(settings: Settings, dataset: str, day: dt.date) -> bool:
    """True when a passing report exists for exactly the files now in the landing partition."""
    report = storage.fetch(settings, report_path(settings, dataset, day).parent) / REPORT_FILE
    landing = storage.fetch(settings, settings.partition("landing", dataset, day))
    if not report.is_file() or not landing.is_dir():
        return False
    try:
        return json.loads(report.read_text())["fingerprint"] == _fingerprint(landing)
    except (io.BatchReadError, KeyError, json.JSONDecodeError):
        return False


def validated_landing(settings: Settings, spec: DatasetSpec, day: dt.date) -> Path:
    """The landing partition of a day, validated first unless its files already passed."""
    if not is_validated(settings, spec.name, day):
        validate(spec.name, day, settings)
    return settings.partition("landing", spec.name, day)


def load_day(settings: Settings, spec: DatasetSpec, day: dt.date) -> pd.DataFrame:
    """A validated day as a canonical frame (validating it first if it was not).

    An event dataset's day is its aggregated series: the frame every model reads.
    """
    if spec.events is not None:
        from pipeline.steps.series import load_series_day  # it builds on this module

        return load_series_day(settings, spec, day)
    return io.to_canonical(io.read_partition(validated_landing(settings, spec, day)), spec)
