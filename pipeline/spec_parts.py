"""What a dataset spec says besides its canonical columns: each block of it, as a model.

Where a day comes from (an SQL ``source``), where scored days also go (``sinks``), how long
scoring waits for a late day (``landing``), for event data such as payments how events become
the regular per-entity series the detectors read (``events``), how a day is scored
(``scoring``), and what people are shown and told of it (``monitoring``, ``alarms``,
``notifications``). Kept apart from :mod:`pipeline.config`, which assembles them into
:class:`~pipeline.config.DatasetSpec`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.choices import BudgetScope


def parse_duration(value: str, what: str) -> dt.timedelta:
    """A duration written as a pandas offset alias (``5min``, ``2h``, ``1D``), or an error."""
    import pandas as pd

    try:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(value)).to_pytimedelta()
    except ValueError as exc:
        raise ValueError(f"{what} {value!r} is not a duration such as '5min' or '2h'") from exc


AggregateKind = Literal["count", "sum", "mean", "max", "distinct", "share", "time_since_previous"]
AGGREGATES_OF_A_FIELD = ("sum", "mean", "max")
# Aggregates whose empty bucket has a meaning of its own: no events, nothing spent, none seen.
ZERO_FILLED: tuple[str, ...] = ("count", "sum", "distinct", "share")
# Upper bound of an aggregate feature: aggregates are checked on the raw events, not after.
AGGREGATE_CEILING = 1e300


class NumericField(BaseModel):
    """A numeric field of each event (an amount), with the range a valid event's value lies in."""

    model_config = ConfigDict(extra="forbid")

    name: str
    min: float = 0.0
    max: float | None = None


class CategoricalField(BaseModel):
    """A categorical field of each event (currency, merchant category) and its declared values."""

    model_config = ConfigDict(extra="forbid")

    name: str
    values: list[str] | None = Field(
        default=None, min_length=1, description="the declared set; None for free text (ids)"
    )


class AggregateSpec(BaseModel):
    """One feature of the bucketed series: how a bucket's events become one number.

    ``count`` events; ``sum``, ``mean`` or ``max`` of a numeric ``field``; ``distinct`` values
    of a categorical ``field``; ``share`` of events whose ``field`` equals ``value``;
    ``time_since_previous``: seconds from the entity's previous event that day to the bucket's
    first event, capped at ``fill``. Empty buckets get ``fill``: 0 for counts, sums, distinct
    counts and shares (what no events mean), and a declared value for the others.
    ``transform: log1p`` tames heavy tails (amounts) before the detector sees them.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: AggregateKind
    field: str | None = None
    value: str | None = None
    fill: float | None = None
    transform: Literal["none", "log1p"] = "none"

    @model_validator(mode="after")
    def _complete(self) -> AggregateSpec:
        needs_field = self.kind in (*AGGREGATES_OF_A_FIELD, "distinct", "share")
        if needs_field != (self.field is not None):
            raise ValueError(
                f"aggregate {self.name!r}: {self.kind} "
                + ("needs a field" if needs_field else "takes no field")
            )
        if (self.kind == "share") != (self.value is not None):
            raise ValueError(f"aggregate {self.name!r}: a value goes with kind share, only")
        if self.fill is None and self.kind not in ZERO_FILLED:
            raise ValueError(f"aggregate {self.name!r}: {self.kind} of no events needs a fill")
        if self.kind == "time_since_previous" and not (self.fill or 0) > 0:
            raise ValueError(f"aggregate {self.name!r}: its fill (the cap, seconds) must be > 0")
        return self

    @property
    def empty_value(self) -> float:
        """The value of a bucket without events."""
        return 0.0 if self.fill is None else self.fill


class EventsSpec(BaseModel):
    """An event source (one row per payment) and how it becomes a regular per-entity series.

    The raw events are validated (numbers in range, categories from their declared sets,
    unique ``event_id``, timestamps inside the day) and then aggregated into buckets of
    ``bucket`` (which must divide a day): every entity seen that day gets every bucket of it.
    """

    model_config = ConfigDict(extra="forbid")

    event_id: str
    bucket: str = Field(description="pandas offset alias of the bucket width, e.g. '1h'")
    numeric: list[NumericField] = Field(default_factory=list)
    categorical: list[CategoricalField] = Field(default_factory=list)
    aggregates: list[AggregateSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> EventsSpec:
        width = parse_duration(self.bucket, "bucket")
        if width <= dt.timedelta(0) or dt.timedelta(days=1) % width:
            raise ValueError(f"bucket {self.bucket!r} must divide a day into whole buckets")
        numeric = {field.name for field in self.numeric}
        categorical = {field.name: field.values or [] for field in self.categorical}
        for aggregate in self.aggregates:
            if aggregate.kind in AGGREGATES_OF_A_FIELD and aggregate.field not in numeric:
                raise ValueError(
                    f"aggregate {aggregate.name!r}: no numeric field {aggregate.field!r}"
                )
            if aggregate.kind in ("distinct", "share") and aggregate.field not in categorical:
                raise ValueError(
                    f"aggregate {aggregate.name!r}: no categorical field {aggregate.field!r}"
                )
            declared = categorical.get(aggregate.field or "", [])
            if aggregate.kind == "share" and aggregate.value not in declared:
                raise ValueError(
                    f"aggregate {aggregate.name!r}: {aggregate.value!r} is not a declared value "
                    f"of {aggregate.field!r}"
                )
        return self

    @property
    def fields(self) -> list[str]:
        return [field.name for field in self.numeric] + [field.name for field in self.categorical]

    def features(self) -> list[dict]:
        """The bucketed series' features, one per aggregate, as a spec's ``features`` list."""
        return [
            {"name": aggregate.name, "min": 0.0, "max": AGGREGATE_CEILING}
            for aggregate in self.aggregates
        ]


class SourceSpec(BaseModel):
    """Where a day comes from when it is not dropped into the landing tree by its producer.

    ``kind: sql``: ``query`` over a SQLAlchemy URL read from the environment variable
    ``url_env`` (or, in the DAGs, from the Airflow connection ``connection``), with the day's
    bounds bound as ``:start`` and ``:end`` (UTC, end excluded). ``tsad ingest`` snapshots the
    rows into the landing tree once; validation and scoring read that immutable copy.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sql"]
    query: str = Field(description="SELECT ... WHERE <time> >= :start AND <time> < :end")
    url_env: str | None = Field(default=None, description="variable holding the SQLAlchemy URL")
    connection: str | None = Field(default=None, description="Airflow connection id (DAGs)")
    count_query: str | None = Field(
        default=None,
        description="rows landed for the day (``:start``, ``:end``); default: COUNT(*) of query",
    )
    batch_rows: int = Field(default=65_536, ge=1, description="rows fetched per round trip")

    @model_validator(mode="after")
    def _usable(self) -> SourceSpec:
        if not (self.url_env or self.connection):
            raise ValueError("an sql source needs url_env (or an Airflow connection)")
        for query in (self.query, self.count_query or ":start :end"):
            if ":start" not in query or ":end" not in query:
                raise ValueError("the source query must bind the day's bounds :start and :end")
        return self


class SinkSpec(BaseModel):
    """A table that receives each scored day besides its scores partition (the truth)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sql"]
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    rows: Literal["alarms", "all"] = Field(
        default="alarms", description="the day's alarm rows, or every scored row"
    )
    url_env: str | None = Field(default=None, description="variable holding the SQLAlchemy URL")
    connection: str | None = Field(default=None, description="Airflow connection id (DAGs)")

    @model_validator(mode="after")
    def _reachable(self) -> SinkSpec:
        if not (self.url_env or self.connection):
            raise ValueError(f"sink {self.table!r} needs url_env (or an Airflow connection)")
        return self


class LandingSpec(BaseModel):
    """How long daily scoring waits for a day that has not landed yet."""

    model_config = ConfigDict(extra="forbid")

    wait: str = Field(
        default="0min",
        description="how long after the day ends it may still land, e.g. '6h' (at most 12h, "
        "the scoring DAG's limit); 0: a day not there when its run starts fails at once",
    )

    @field_validator("wait")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        if parse_duration(value, "landing wait") > dt.timedelta(hours=12):
            raise ValueError(f"landing wait {value!r} exceeds 12h")
        return value


class ScoringSpec(BaseModel):
    """How a dataset's days are scored: when, and split over how many workers."""

    model_config = ConfigDict(extra="forbid")

    shards: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="entity shards a day is scored as, one task each (the scoring DAG's "
        "'shards' Param and `tsad score --shards` override it); 1: one task, today's output",
    )
    schedule: str = Field(
        default="@daily", description="cron expression or preset of the scoring DAG"
    )


class TrainingSpec(BaseModel):
    """When a dataset's model is retrained, and with which run config."""

    model_config = ConfigDict(extra="forbid")

    schedule: str = Field(
        default="@weekly", description="cron expression or preset of the training DAG"
    )
    run_config: str | None = Field(
        default=None, description="configs/runs/<name>.yaml; default: the dataset's name"
    )


class MonitoringSpec(BaseModel):
    """What a scoring run explains, reports and flags for a dataset."""

    model_config = ConfigDict(extra="forbid")

    drift_level: float = Field(
        default=0.25,
        gt=0,
        description="PSI above which a feature or the score distribution counts as drifted",
    )
    top_features: int = Field(default=3, ge=1, description="features named per alarm")
    report_entities: int = Field(default=3, ge=1, description="entities plotted in the report")


class AlarmsSpec(BaseModel):
    """How a day's alarm rows become the episodes people are shown, and how many of them.

    Unset durations follow the sampling step (:class:`pipeline.episodes.EpisodeRule`): a gap
    of five quiet steps still joins two alarms, and a sub-hourly episode needs three steps in
    alarm (one reading is enough at hourly steps or coarser).
    """

    model_config = ConfigDict(extra="forbid")

    merge_gap: str | None = Field(
        default=None, description="longest quiet time inside one episode, e.g. '5min'"
    )
    min_duration: str | None = Field(
        default=None, description="episodes shorter than this are dropped, e.g. '3min'"
    )
    max_episodes_per_day: int | None = Field(
        default=None, ge=1, description="alarm budget: episodes a day shows at most"
    )
    budget_per: BudgetScope = Field(
        default="dataset", description="the budget caps the whole dataset's day or each entity's"
    )

    @field_validator("merge_gap", "min_duration")
    @classmethod
    def _is_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value, "alarms duration")
        return value


class NotificationsSpec(BaseModel):
    """Who hears about a dataset: its owners get failures, quarantined and drifted days, and
    each scored day's digest of its top episodes (by e-mail, through ``smtp_default``; and in
    the Slack channel, through ``slack_default``)."""

    model_config = ConfigDict(extra="forbid")

    owners: list[str] = Field(default_factory=list, description="e-mail addresses")
    digest_episodes: int = Field(default=10, ge=1, description="episodes a digest lists")
    slack_channel: str | None = Field(
        default=None,
        pattern=r"^#[a-z0-9][a-z0-9._-]{0,79}$",
        description="the Slack channel the slack_default webhook posts in, e.g. '#ward-alarms'; "
        "unset: nothing goes to Slack",
    )

    @field_validator("owners")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.fullmatch(r"[^@\s,;<>]+@[^@\s,;<>]+", address):
                raise ValueError(f"owner {address!r} is not an e-mail address")
        return value
