"""Configuration: dataset specs, run configs and runtime locations.

Dataset specs (``configs/datasets/<name>.yaml``) describe how a source maps onto the canonical
frame (``timestamp`` UTC, ``entity``, feature columns, optional ``label``) and what a valid daily
batch looks like. Run configs (``configs/runs/<name>.yaml``) say which days train, calibrate and
test a model. ``Settings`` resolves every runtime location from ``TSAD_HOME`` so that a deployment
moves the whole product by changing one variable (or overrides single URIs).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.choices import (
    DETECTOR_NAMES,
    NAME_PATTERN,
    CalibrationMethod,
    DetectorName,
    Device,
    PromotionMetric,
    SelectionMetric,
)
from pipeline.spec_parts import (
    AlarmsSpec,
    EventsSpec,
    LandingSpec,
    MonitoringSpec,
    NotificationsSpec,
    ScoringSpec,
    SinkSpec,
    SourceSpec,
    TrainingSpec,
    parse_duration,
)

TIMESTAMP = "timestamp"
ENTITY = "entity"
LABEL = "label"

_NAME_PATTERN = re.compile(NAME_PATTERN)


class ConfigError(ValueError):
    """A spec, run config or CLI/Param value that cannot be used."""


def project_root() -> Path:
    """The directory holding ``configs/`` (the repository, or ``TSAD_PROJECT_ROOT``)."""
    explicit = os.environ.get("TSAD_PROJECT_ROOT")
    if explicit:
        return Path(explicit).resolve()
    return Path(__file__).resolve().parent.parent


def validate_name(name: str, what: str = "dataset") -> str:
    """Reject names that could escape a directory (``..``, ``/``) or surprise a shell."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ConfigError(
            f"invalid {what} name {name!r}: use lowercase letters, digits, '_' or '-' "
            "(at most 64 characters, no path separators)"
        )
    return name


def parse_date(value: str | dt.date) -> dt.date:
    """Parse a partition date given as ``YYYY-MM-DD`` (the only accepted form)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ConfigError(f"invalid date {value!r}: expected YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(f"invalid date {value!r}: {exc}") from exc


class FeatureSpec(BaseModel):
    """One feature column with its physical bounds (values outside are impossible readings)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    min: float
    max: float
    unit: str = ""
    source: str | None = Field(default=None, description="column name in the source, if different")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> FeatureSpec:
        if self.min >= self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} must be below max {self.max}")
        return self


class DatasetSpec(BaseModel):
    """How one dataset's daily partitions look and what makes a batch valid."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    frequency: str = Field(description="pandas offset alias of the sampling step, e.g. '1min'")
    features: list[FeatureSpec] = Field(min_length=1)
    entity_source: str | None = Field(
        default=ENTITY, description="source column of the entity; None when the data has none"
    )
    default_entity: str = "all"
    label_column: str | None = LABEL
    min_rows_per_day: int = Field(default=1, ge=1)
    max_rows_per_day: int | None = None
    max_null_fraction: float = Field(
        default=0.0, ge=0.0, le=1.0, description="largest share of missing values per feature"
    )
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    alarms: AlarmsSpec = Field(default_factory=AlarmsSpec)
    notifications: NotificationsSpec = Field(default_factory=NotificationsSpec)
    events: EventsSpec | None = Field(
        default=None, description="an event source, aggregated into the series the model reads"
    )
    source: SourceSpec | None = Field(default=None, description="None: producers land files")
    sinks: list[SinkSpec] = Field(default_factory=list)
    landing: LandingSpec = Field(default_factory=LandingSpec)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return validate_name(value)

    @model_validator(mode="before")
    @classmethod
    def _series_of_events(cls, data: object) -> object:
        """An event source's features and step are its aggregates and bucket width."""
        if isinstance(data, dict) and isinstance(data.get("events"), dict):
            events = EventsSpec.model_validate(data["events"])
            data = {"features": events.features(), "frequency": events.bucket} | data
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names = self.feature_names
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        reserved = {TIMESTAMP, ENTITY, LABEL} & set(names)
        if reserved:
            raise ValueError(f"feature names may not use reserved columns {sorted(reserved)}")
        if self.max_rows_per_day is not None and self.max_rows_per_day < self.min_rows_per_day:
            raise ValueError("max_rows_per_day must be at least min_rows_per_day")
        if self.events is not None:
            aggregates = [aggregate.name for aggregate in self.events.aggregates]
            if names != aggregates or self.step != parse_duration(self.events.bucket, "bucket"):
                raise ValueError("an event source's features and frequency follow its aggregates")
        return self

    def series_spec(self) -> DatasetSpec:
        """The spec of the aggregated series: canonical columns, one feature per aggregate."""
        if self.events is None:
            return self
        return self.model_copy(
            update={
                "events": None,
                "entity_source": ENTITY,
                "label_column": LABEL if self.label_column else None,
            }
        )

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def step(self) -> dt.timedelta:
        """The sampling step as a timedelta (used to find gaps)."""
        import pandas as pd

        return pd.Timedelta(pd.tseries.frequencies.to_offset(self.frequency)).to_pytimedelta()

    @classmethod
    def load(cls, name: str, configs_dir: Path | None = None) -> DatasetSpec:
        """Load ``configs/datasets/<name>.yaml``; unknown names raise :class:`ConfigError`."""
        validate_name(name)
        directory = (configs_dir or project_root() / "configs") / "datasets"
        path = directory / f"{name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in directory.glob("*.yaml"))
            raise ConfigError(f"unknown dataset {name!r}: no {path} (known: {', '.join(known)})")
        return cls.model_validate(yaml.safe_load(path.read_text()))


class DateRange(BaseModel):
    """An inclusive range of partition dates."""

    model_config = ConfigDict(extra="forbid")

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.end < self.start:
            raise ValueError(f"date range ends ({self.end}) before it starts ({self.start})")
        return self

    def dates(self) -> list[dt.date]:
        days = (self.end - self.start).days
        return [self.start + dt.timedelta(days=offset) for offset in range(days + 1)]


class Candidate(BaseModel):
    """One detector a run may choose, with its own hyper-parameters.

    ``name`` names its folder and its MLflow child run; it defaults to the detector's name,
    numbered in order when a detector is listed more than once (``pca-1``, ``pca-2``).
    """

    model_config = ConfigDict(extra="forbid")

    detector: DetectorName
    params: dict = Field(default_factory=dict, description="over the run's common settings")
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        return None if value is None else validate_name(value, "candidate")


class RunConfig(BaseModel):
    """One training run: which days to learn, calibrate and test on, and with what."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    detector: str = "transformer_ae"
    train: DateRange
    validation: DateRange
    test: DateRange
    window: int = Field(default=60, ge=2, le=4096)
    epochs: int = Field(default=5, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1)
    device: Device = "auto"
    seed: int = 0
    calibration: CalibrationMethod = "best_f1"
    promotion_metric: PromotionMetric = "vus_pr"
    detector_params: dict = Field(default_factory=dict)
    candidates: list[Candidate] = Field(
        default_factory=list,
        description="detectors to train side by side; the best on the validation days becomes "
        "the run's detector (``detector`` and ``detector_params`` then name the winner)",
    )
    selection_metric: SelectionMetric = "vus_pr"

    @field_validator("dataset")
    @classmethod
    def _safe_dataset(cls, value: str) -> str:
        return validate_name(value)

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        if value not in DETECTOR_NAMES:
            raise ValueError(f"unknown detector {value!r}: use one of {', '.join(DETECTOR_NAMES)}")
        return value

    @field_validator("candidates")
    @classmethod
    def _named_once(cls, value: list[Candidate]) -> list[Candidate]:
        """Give every candidate its name, and refuse two of the same name."""
        detectors = [candidate.detector for candidate in value]
        named = []
        for at, candidate in enumerate(value, start=1):
            name = candidate.name or candidate.detector
            if not candidate.name and detectors.count(candidate.detector) > 1:
                name = f"{candidate.detector}-{detectors[:at].count(candidate.detector)}"
            named.append(candidate.model_copy(update={"name": name}))
        names = [str(candidate.name) for candidate in named]
        if len(set(names)) < len(names):
            raise ValueError(f"candidate names must be unique, got {', '.join(names)}")
        return named

    @model_validator(mode="after")
    def _splits_disjoint(self) -> RunConfig:
        train, valid, test = (set(r.dates()) for r in (self.train, self.validation, self.test))
        if train & valid or train & test or valid & test:
            raise ValueError("train, validation and test days must not overlap")
        if max(train) >= min(valid | test):
            raise ValueError("training days must come before validation and test days")
        return self

    @classmethod
    def load(cls, name: str, configs_dir: Path | None = None) -> RunConfig:
        validate_name(name, "run config")
        directory = (configs_dir or project_root() / "configs") / "runs"
        path = directory / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown run config {name!r}: no {path}")
        return cls.model_validate(yaml.safe_load(path.read_text()))


TRACKING_SERVER_SCHEMES = ("http://", "https://")


def is_tracking_server(uri: str) -> bool:
    """Whether ``uri`` names an MLflow tracking server rather than a database it may open."""
    return uri.startswith(TRACKING_SERVER_SCHEMES)


class Settings(BaseModel):
    """Runtime locations, all derived from ``TSAD_HOME`` unless overridden one by one.

    The same code runs embedded (SQLite under the home) and on the production stack (a remote
    tracking server): only the environment differs. Credentials for a server that requires
    them are read by MLflow itself from ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` and never stored here.
    """

    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: str | None = Field(
        description="where new experiments keep artifacts; None lets the tracking server decide"
    )
    model_name_prefix: str = "tsad"
    data_uri: str = Field(
        default="",
        description="the data tree's root (file:///path or s3://bucket/prefix); "
        "empty: file://<home>/data",
    )

    @field_validator("tracking_uri", "registry_uri")
    @classmethod
    def _has_scheme(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(
                f"MLflow URI {value!r} has no scheme: use sqlite:///path/mlflow.db, "
                "postgresql://user@host/db, or http(s)://host:port for a tracking server"
            )
        return value

    @classmethod
    def resolve(cls, settings: Settings | None) -> Settings:
        """``settings`` when a caller passes them (tests, benchmarks), else :meth:`from_env`."""
        return settings or cls.from_env()

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``TSAD_HOME``, ``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
        ``TSAD_ARTIFACT_ROOT``, ``TSAD_MODEL_PREFIX`` and ``TSAD_DATA_URI``; unset or empty
        means the default."""
        _check_credentials_pair()
        home = Path(os.environ.get("TSAD_HOME") or ".tsad").resolve()
        default_store = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
        tracking = os.environ.get("MLFLOW_TRACKING_URI") or default_store
        # A tracking server stores artifacts where it was told to (and serves them, with auth);
        # a local database keeps them beside itself under the home.
        default_artifacts = None if is_tracking_server(tracking) else _local_artifacts(home)
        try:
            return cls(
                home=home,
                tracking_uri=tracking,
                registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or tracking,
                artifact_root=os.environ.get("TSAD_ARTIFACT_ROOT") or default_artifacts,
                model_name_prefix=os.environ.get("TSAD_MODEL_PREFIX") or "tsad",
                data_uri=os.environ.get("TSAD_DATA_URI") or (home / "data").as_uri(),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    @property
    def data_root(self) -> Path:
        """The local data tree: the store itself for a ``file://`` URI, else its working copy.

        Steps read and write here; :mod:`pipeline.data.storage` moves partitions between this
        folder and an object store (``TSAD_DATA_URI=s3://...``).
        """
        if not self.data_uri:
            return self.home / "data"
        parsed = urlparse(self.data_uri)
        if parsed.scheme == "file":
            return Path(unquote(parsed.path))
        return self.home / "cache" / "data"

    def model_name(self, dataset: str) -> str:
        """The registered model name for a dataset (one model lineage per dataset)."""
        return f"{self.model_name_prefix}-{validate_name(dataset)}"

    def partition(
        self,
        zone: Literal[
            "landing", "validation", "quarantine", "series", "scores", "shards", "reviews"
        ],
        dataset: str,
        day: dt.date,
    ) -> Path:
        """``<home>/data/<zone>/<dataset>/date=YYYY-MM-DD``, checked to stay inside the home.

        ``day`` is already a date: text is parsed once, where it enters (:func:`parse_date`).
        """
        path = self.data_root / zone / validate_name(dataset) / f"date={day.isoformat()}"
        resolved = path.resolve()
        if not resolved.is_relative_to(self.data_root.resolve()):
            raise ConfigError(f"partition path {resolved} escapes {self.data_root}")
        return resolved

    def run_dir(self, dataset: str, run_key: str) -> Path:
        """Working directory of one training run (prepared data, weights, reports)."""
        validate_name(run_key, "run key")
        return self.home / "runs" / validate_name(dataset) / run_key


def _local_artifacts(home: Path) -> str:
    return (home / "mlflow" / "artifacts").as_uri()


def _check_credentials_pair() -> None:
    """A username without a password (or the reverse) is a half-configured deployment."""
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if bool(username) != bool(password):
        missing = "MLFLOW_TRACKING_PASSWORD" if username else "MLFLOW_TRACKING_USERNAME"
        raise ConfigError(f"{missing} is not set: MLflow credentials need both variables")
