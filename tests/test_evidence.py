"""Alarmed buckets name their events and episodes; incidents are counted found per kind."""

from __future__ import annotations

import pandas as pd

from pipeline.evidence import alarm_events, evidence_section, top_accounts
from pipeline.fraud_figures import incidents_found

T0 = pd.Timestamp("2026-02-08", tz="UTC")
HOUR = pd.Timedelta("1h")


def test_each_alarmed_bucket_carries_its_episode_and_event_ids():
    alarmed = pd.DataFrame(
        {
            "entity": ["a", "a", "b"],
            "timestamp": [T0, T0 + HOUR, T0 + 5 * HOUR],
            "score": [3.0, 4.0, 9.0],
        }
    )
    index = pd.DataFrame(
        {
            "entity": ["a", "a", "a", "b", "c"],
            "timestamp": [T0, T0, T0 + 3 * HOUR, T0 + 4 * HOUR, T0],
            "event_id": ["1", "2", "3", "4", "5"],
        }
    )
    episodes = pd.DataFrame(
        {"episode_id": ["ep-a"], "entity": ["a"], "start": [T0], "end": [T0 + 2 * HOUR]}
    )
    table = alarm_events(alarmed, index, episodes)
    assert table["event_ids"].tolist() == [["1", "2"], [], []]
    assert table["episode_id"].tolist() == ["ep-a", "ep-a", None]
    assert top_accounts(table, 1) == ["a"]
    transactions = pd.DataFrame({"txn_id": ["1", "2"], "amount": [1.5, 2.25]})
    section = evidence_section(table[table["entity"] == "a"], transactions, "txn_id")
    assert "2 transactions" in section and "2.25" in section and "0 transactions" in section


def test_an_incident_is_found_when_an_alarmed_bucket_holds_one_of_its_payments():
    events = pd.DataFrame(
        {
            "timestamp": [T0 + pd.Timedelta("10min"), T0 + pd.Timedelta("70min"), T0],
            "account_id": ["a", "a", "b"],
            "label": [1, 1, 1],
            "fraud_kind": ["card_testing", "card_testing", "account_takeover"],
        }
    )
    alarmed = pd.DataFrame({"entity": ["a", "b"], "timestamp": [T0 + HOUR, T0 + 2 * HOUR]})
    table = incidents_found(events, alarmed, "1h", "account_id", "fraud_kind").set_index("kind")
    assert table.loc["card_testing", ["incidents", "found", "missed"]].tolist() == [1, 1, 0]
    assert table.loc["account_takeover", ["incidents", "found", "missed"]].tolist() == [1, 0, 1]
