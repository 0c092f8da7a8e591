"""Validate a daily batch as it landed, before anything downstream reads it.

A batch is checked in the source's own column names (``timestamp``, the spec's entity source
column, each feature's ``source or name``, the optional label) so that a broken export is caught
before renaming or casting could hide it. The checks form a Great Expectations suite derived from
the :class:`~pipeline.config.DatasetSpec` alone (:func:`build_suite`); :func:`validate_batch`
runs it in a throwaway ephemeral context and turns the GX result into one readable line per
problem, and renders GX's own Data Docs page of the result (HTML) for people to browse. Reading
the files and quarantining a failed batch are the caller's job.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.render.renderer import ValidationResultsPageRenderer
from great_expectations.render.view import DefaultJinjaPageView

from pipeline.config import TIMESTAMP, DatasetSpec

# GX logs every store and metric step; a daily validation must not flood the task log.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

# dtype names GX resolves for pandas: numpy ints/floats and pandas' nullable extension dtypes.
# Strings, objects and booleans are left out so that numbers stored as text fail.
_NUMERIC_TYPES: tuple[str, ...] = (
    *(f"{kind}{bits}" for kind in ("int", "uint") for bits in (8, 16, 32, 64)),
    "float16",
    "float32",
    "float64",
    *(f"{kind}{bits}Dtype" for kind in ("Int", "UInt") for bits in (8, 16, 32, 64)),
    "Float32Dtype",
    "Float64Dtype",
)

# Checks whose failure makes a column unusable: other checks that then raise on that column
# add no line of their own, because the schema failure already names the cause.
_SCHEMA_CHECKS = frozenset({"expect_column_to_exist", "expect_column_values_to_be_in_type_list"})


@dataclass(frozen=True)
class ValidationReport:
    """The verdict on one landed batch, kept with the batch if it goes to quarantine.

    ``failures`` holds one line per failed check, naming the column and what was wrong, so an
    operator can act without reading ``result`` (the full GX validation result, for tooling).
    ``warnings`` note oddities that do not block the batch, such as columns the spec ignores.
    ``data_docs`` is the GX Data Docs page of the result (HTML), kept out of the JSON form.
    """

    dataset: str
    date: dt.date
    success: bool
    failures: list[str]
    n_rows: int
    result: dict[str, Any]
    warnings: list[str]
    data_docs: str = field(default="", repr=False, compare=False)

    def to_json(self) -> str:
        """The report as JSON (the date as ``YYYY-MM-DD``), for the quarantine folder."""
        record = asdict(self) | {"date": self.date.isoformat()}
        del record["data_docs"]
        return json.dumps(record, indent=2)


def build_suite(spec: DatasetSpec, day: dt.date) -> gx.ExpectationSuite:
    """The expectations a landed batch of ``spec`` for partition ``day`` must meet.

    Pure: derived from the spec and the date only, so the same batch always meets the same
    rules. A label expectation is included whenever the spec names a label column; callers
    validating a batch without labels pass a spec whose ``label_column`` is None.
    """
    return gx.ExpectationSuite(
        name=f"{spec.name}-{day.isoformat()}",
        expectations=[
            *(gxe.ExpectColumnToExist(column=column) for column in _required_columns(spec)),
            *(_event_expectations(spec) if spec.events else _feature_expectations(spec)),
            *_key_expectations(spec, day),
            *_label_expectations(spec),
            gxe.ExpectTableRowCountToBeBetween(
                min_value=spec.min_rows_per_day, max_value=spec.max_rows_per_day
            ),
        ],
    )


def validate_batch(frame: pd.DataFrame, spec: DatasetSpec, day: dt.date) -> ValidationReport:
    """Check one landed batch against its spec, as it landed.

    Bad data never raises: every problem, including a check that GX could not evaluate, becomes
    a line in ``failures``, and columns the spec does not know become ``warnings``. ``frame`` is
    never modified (it is the evidence that goes to quarantine).
    """
    has_label = spec.label_column is not None and spec.label_column in frame.columns
    suite = build_suite(spec if has_label else spec.model_copy(update={"label_column": None}), day)
    timestamp_problem = _timestamp_problem(frame)
    result, data_docs = _run_suite(suite, _with_utc_timestamps(frame), spec.name)
    failures = [timestamp_problem] if timestamp_problem else []
    failures += _infinite_values(frame, spec)
    failures += _failure_lines(
        result["results"], day, unusable={TIMESTAMP} if timestamp_problem else set()
    )
    warnings = [f"unknown column {column!r} ignored" for column in _unknown_columns(frame, spec)]
    if not timestamp_problem and spec.events is None:  # events arrive in any order
        warnings += _out_of_order(frame, spec)
    return ValidationReport(
        dataset=spec.name,
        date=day,
        success=not failures,
        failures=failures,
        n_rows=len(frame),
        result=result,
        warnings=warnings,
        data_docs=data_docs,
    )


def _feature_columns(spec: DatasetSpec) -> list[str]:
    """The numeric source columns: the features, or an event source's numeric fields."""
    if spec.events is not None:
        return [field.name for field in spec.events.numeric]
    return [feature.source or feature.name for feature in spec.features]


def _required_columns(spec: DatasetSpec) -> list[str]:
    entity = [spec.entity_source] if spec.entity_source else []
    if spec.events is not None:
        return [TIMESTAMP, *entity, spec.events.event_id, *spec.events.fields]
    return [TIMESTAMP, *entity, *_feature_columns(spec)]


def _unknown_columns(frame: pd.DataFrame, spec: DatasetSpec) -> list[Any]:
    known = {*_required_columns(spec), spec.label_column}
    return [column for column in frame.columns if column not in known]


def _infinite_values(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """A line per numeric feature holding infinities (a division by zero upstream, typically).

    The bounds check counts them too, but only this line says what they are.
    """
    lines = []
    for column in _feature_columns(spec):
        if column in frame.columns and pd.api.types.is_float_dtype(frame[column]):
            count = int(np.isinf(frame[column].to_numpy(dtype="float64")).sum())
            if count:
                lines.append(f"{column}: {count} infinite values")
    return lines


def _out_of_order(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """A note when rows are not in time order per entity: they pass and are sorted for scoring."""
    if TIMESTAMP not in frame.columns:
        return []
    keys = frame[spec.entity_source] if spec.entity_source in frame.columns else None
    times = frame[TIMESTAMP]
    try:
        latest = times.groupby(keys).cummax() if keys is not None else times.cummax()
    except TypeError:  # unhashable keys: the suite reports those as a failure of their own
        return []
    count = int((latest > times).sum())
    return [f"{TIMESTAMP}: {count} rows out of time order (sorted before scoring)"] if count else []


def _feature_expectations(spec: DatasetSpec) -> Iterator[gxe.Expectation]:
    """Features are numbers, mostly present, and physically possible (GX skips nulls in bounds)."""
    for feature, column in zip(spec.features, _feature_columns(spec), strict=True):
        yield gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=list(_NUMERIC_TYPES))
        yield gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=1.0 - spec.max_null_fraction)
        yield gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=feature.min, max_value=feature.max
        )


def _event_expectations(spec: DatasetSpec) -> Iterator[gxe.Expectation]:
    """Amounts are numbers in their range, categories from their declared sets, ids unique."""
    assert spec.events is not None
    for numeric in spec.events.numeric:
        yield gxe.ExpectColumnValuesToBeInTypeList(
            column=numeric.name, type_list=list(_NUMERIC_TYPES)
        )
        yield gxe.ExpectColumnValuesToNotBeNull(
            column=numeric.name, mostly=1.0 - spec.max_null_fraction
        )
        yield gxe.ExpectColumnValuesToBeBetween(
            column=numeric.name, min_value=numeric.min, max_value=numeric.max
        )
    for categorical in spec.events.categorical:
        yield gxe.ExpectColumnValuesToNotBeNull(column=categorical.name)
        if categorical.values is not None:
            yield gxe.ExpectColumnValuesToBeInSet(
                column=categorical.name, value_set=categorical.values
            )
    yield gxe.ExpectColumnValuesToNotBeNull(column=spec.events.event_id)
    yield gxe.ExpectColumnValuesToBeUnique(column=spec.events.event_id)


def _key_expectations(spec: DatasetSpec, day: dt.date) -> Iterator[gxe.Expectation]:
    """Every row has a key, no key repeats, and every timestamp lies in the partition's UTC day.

    Events have their own key (the event id): two payments of a card may share a moment.
    """
    keys = [spec.entity_source, TIMESTAMP] if spec.entity_source else [TIMESTAMP]
    for column in keys:
        yield gxe.ExpectColumnValuesToNotBeNull(column=column)
    if spec.events is None and spec.entity_source:
        yield gxe.ExpectCompoundColumnsToBeUnique(column_list=keys)
    elif spec.events is None:
        yield gxe.ExpectColumnValuesToBeUnique(column=TIMESTAMP)
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    yield gxe.ExpectColumnValuesToBeBetween(
        column=TIMESTAMP, min_value=start, max_value=start + dt.timedelta(days=1), strict_max=True
    )


def _label_expectations(spec: DatasetSpec) -> Iterator[gxe.Expectation]:
    if spec.label_column:
        yield gxe.ExpectColumnValuesToBeInSet(column=spec.label_column, value_set=[0, 1])


def _has_aware_timestamps(frame: pd.DataFrame) -> bool:
    return TIMESTAMP in frame.columns and isinstance(frame[TIMESTAMP].dtype, pd.DatetimeTZDtype)


def _timestamp_problem(frame: pd.DataFrame) -> str | None:
    """Why the timestamps cannot be placed on the UTC day, if they cannot.

    A missing column is left to the suite, which reports it with the other missing columns.
    """
    if TIMESTAMP not in frame.columns or _has_aware_timestamps(frame):
        return None
    return f"{TIMESTAMP}: not timezone-aware UTC datetimes (dtype {frame[TIMESTAMP].dtype})"


def _with_utc_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with tz-aware timestamps converted to UTC for the day check.

    The conversion goes to a shallow copy, so the caller's frame stays as it landed.
    """
    if not _has_aware_timestamps(frame):
        return frame
    converted = frame.copy(deep=False)
    converted[TIMESTAMP] = frame[TIMESTAMP].dt.tz_convert("UTC")
    return converted


def _run_suite(
    suite: gx.ExpectationSuite, frame: pd.DataFrame, dataset: str
) -> tuple[dict[str, Any], str]:
    """Run ``suite`` on ``frame`` in a fresh ephemeral context, so no state outlives the call.

    Returns the JSON form of the GX result with its outcomes in suite order (GX lists the
    checks that raised first), so reports read the same way for every batch, and the result's
    Data Docs page, rendered by GX without a docs site (an ephemeral context has none to keep).
    """
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas(dataset)
        .add_dataframe_asset("landed")
        .add_batch_definition_whole_dataframe("whole")
    )
    stored = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=stored)
    )
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    order = {expectation.id: index for index, expectation in enumerate(stored.expectations)}
    outcomes = result.to_json_dict()
    outcomes["results"].sort(key=lambda outcome: order[outcome["expectation_config"]["id"]])
    page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    return outcomes, page


def _failure_lines(outcomes: list[dict], day: dt.date, unusable: set[str]) -> list[str]:
    """One line per failed outcome, except checks that raised on an already unusable column."""
    failed = [outcome for outcome in outcomes if not outcome["success"]]
    unusable = unusable | {
        _columns(outcome)[0]
        for outcome in failed
        if outcome["expectation_config"]["type"] in _SCHEMA_CHECKS
    }
    return [
        _describe(outcome, day)
        for outcome in failed
        if not (_raised(outcome) and unusable.intersection(_columns(outcome)))
    ]


def _columns(outcome: dict) -> list[str]:
    kwargs = outcome["expectation_config"]["kwargs"]
    return kwargs.get("column_list") or ([kwargs["column"]] if "column" in kwargs else [])


def _raised(outcome: dict) -> list[str]:
    """The messages of exceptions raised while checking (GX nests them per metric)."""
    info = outcome["exception_info"]
    entries = [info] if "raised_exception" in info else list(info.values())
    return [entry["exception_message"] for entry in entries if entry.get("exception_message")]


def _describe(outcome: dict, day: dt.date) -> str:  # noqa: C901 (one case per expectation type)
    """A failure line naming the column and what was wrong with it."""
    config, result = outcome["expectation_config"], outcome["result"]
    kind, kwargs = config["type"], config["kwargs"]
    columns = _columns(outcome)
    subject = f"({', '.join(columns)})" if len(columns) > 1 else next(iter(columns), "table")
    errors = _raised(outcome)
    if errors:
        return f"{subject}: {kind} could not be checked ({errors[0]})"
    count = result.get("unexpected_count")
    match kind:
        case "expect_column_to_exist":
            return f"column {subject!r} missing"
        case "expect_column_values_to_be_in_type_list":
            if "observed_value" in result:
                return f"{subject}: not numeric (dtype {result['observed_value']})"
            return f"{subject}: {count} values not numeric"
        case "expect_column_values_to_not_be_null":
            share, allowed = result["unexpected_percent"] / 100, 1.0 - kwargs.get("mostly", 1.0)
            return f"{subject}: {count} nulls ({share:.2%}), at most {allowed:.2%} allowed"
        case "expect_column_values_to_be_between" if subject == TIMESTAMP:
            return f"{subject}: {count} rows outside {day.isoformat()}"
        case "expect_column_values_to_be_between":
            low, high = kwargs["min_value"], kwargs.get("max_value")
            upper = "inf" if high is None else f"{high:g}"
            return f"{subject}: {count} values outside [{low:g}, {upper}]"
        case "expect_compound_columns_to_be_unique" | "expect_column_values_to_be_unique":
            return f"{subject}: {count} rows with a duplicated key"
        case "expect_column_values_to_be_in_set":
            return f"{subject}: {count} values not in {set(kwargs['value_set'])}"
        case "expect_table_row_count_to_be_between":
            low, high = kwargs["min_value"], kwargs.get("max_value")
            expected = f"{low} to {high}" if high else f"at least {low}"
            return f"table: {result['observed_value']} rows, expected {expected}"
        case _:
            return f"{subject}: {kind} failed"
