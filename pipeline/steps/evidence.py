"""A scored day of events: its alarms linked back to the payments inside them.

Runs in the scoring step, on the staged output partition, after the day is scored: writes
``alarm_events.parquet`` (each alarmed bucket with its episode and event ids) and adds the
transactions behind the top accounts' alarms to the day's report. Only the alarmed accounts'
index rows and the shown payments are read back, so memory follows the alarms, not the day.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec
from pipeline.daily import ALARMS_FILE, DAILY_REPORT_FILE, SCORES_FILE
from pipeline.data import io
from pipeline.data.aggregation import event_columns
from pipeline.evidence import (
    ALARM_EVENTS_SCHEMA,
    EVENT_IDS,
    alarm_events,
    evidence_section,
    top_accounts,
)
from pipeline.steps.series import EVENT_INDEX_SCHEMA, event_index, present_columns

ALARM_EVENTS_FILE = "alarm_events.parquet"


def link_alarms_to_events(out: Path, series: Path, landing: Path, spec: DatasetSpec) -> Path:
    """Write ``alarm_events.parquet`` into ``out`` and the evidence section into its report."""
    assert spec.events is not None
    alarmed = pd.read_parquet(
        out / SCORES_FILE,
        columns=[ENTITY, TIMESTAMP, "score"],
        filters=[("is_anomaly", "==", True)],
    )
    entities = sorted(alarmed[ENTITY].unique())
    if entities:
        index = pd.read_parquet(event_index(series), filters=[(ENTITY, "in", entities)])
    else:
        index = EVENT_INDEX_SCHEMA.empty_table().to_pandas()
    table = alarm_events(alarmed, index, pd.read_parquet(out / ALARMS_FILE))
    target = io.write_parquet_atomic(table, out / ALARM_EVENTS_FILE, schema=ALARM_EVENTS_SCHEMA)
    shown = table[table[ENTITY].isin(top_accounts(table, spec.monitoring.report_entities))]
    wanted = {event for events in shown[EVENT_IDS] for event in events}
    columns = present_columns(landing, event_columns(spec))
    transactions = pd.concat(
        [
            batch[batch[spec.events.event_id].astype(str).isin(wanted)]
            for batch in io.read_batches(landing, columns)
        ],
        ignore_index=True,
    )
    report = out / DAILY_REPORT_FILE
    section = evidence_section(shown, transactions, spec.events.event_id)
    io.write_text_atomic(report.read_text().replace("</body>", section + "</body>", 1), report)
    return target
