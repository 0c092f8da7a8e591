"""Which injected fraud incidents a model's alarms found, per kind (pure functions on frames).

An incident is one account's labelled payments of one kind on one day. It is found when an
alarmed bucket of that account holds at least one of its payments: the analyst who opens the
alarm sees the fraudulent payment. Used on the labeled demo days, whose events carry the kind.
"""

from __future__ import annotations

import pandas as pd

from pipeline.config import ENTITY, LABEL, TIMESTAMP


def incidents_found(
    events: pd.DataFrame,
    alarmed: pd.DataFrame,
    bucket: str,
    entity_column: str,
    kind_column: str,
) -> pd.DataFrame:
    """Per fraud kind: incidents, found, missed and the share found (``recall``).

    ``events`` are the day's raw labelled events (``timestamp``, ``entity_column``,
    ``label``, ``kind_column``); ``alarmed`` the alarmed buckets (``entity``, ``timestamp``).
    """
    fraud = events[events[LABEL] == 1]
    located = pd.DataFrame(
        {
            ENTITY: fraud[entity_column].astype(str).to_numpy(),
            TIMESTAMP: pd.to_datetime(fraud[TIMESTAMP], utc=True).dt.floor(bucket).to_numpy(),
            "kind": fraud[kind_column].to_numpy(),
        }
    )
    keys = pd.MultiIndex.from_frame(alarmed[[ENTITY, TIMESTAMP]].astype({ENTITY: str}))
    located["alarmed"] = pd.MultiIndex.from_frame(located[[ENTITY, TIMESTAMP]]).isin(keys)
    per_incident = located.groupby([ENTITY, "kind"])["alarmed"].any().reset_index()
    table = per_incident.groupby("kind")["alarmed"].agg(incidents="size", found="sum")
    table["missed"] = table["incidents"] - table["found"]
    table["recall"] = table["found"] / table["incidents"]
    return table.reset_index()
