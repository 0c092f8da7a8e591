"""The notification step: a scored day's digest for the dataset's owners, composed or sent.

The DAG's digest task composes it here and sends it through Airflow's SMTP and Slack
notifiers; ``tsad notify`` sends it through the same ``smtp_default`` or ``slack_default``
connection read from the environment (:mod:`pipeline.smtp`, :mod:`pipeline.slack`).
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from pipeline import digest
from pipeline.config import ConfigError, DatasetSpec, Settings
from pipeline.daily import ALARMS_FILE, DAILY_REPORT_FILE, SUMMARY_FILE
from pipeline.data import storage


def day_digest(dataset: str, day: dt.date, settings: Settings | None = None) -> digest.Message:
    """The digest of a scored day; a day that was never scored is a clear error."""
    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(dataset)
    out = storage.fetch(settings, settings.partition("scores", dataset, day))
    if not (out / SUMMARY_FILE).is_file() or not (out / ALARMS_FILE).is_file():
        raise ConfigError(f"{dataset} {day}: no scored day with episodes at {out}")
    return digest.compose_digest(
        dataset,
        day.isoformat(),
        pd.read_parquet(out / ALARMS_FILE),
        json.loads((out / SUMMARY_FILE).read_text()),
        str(out / DAILY_REPORT_FILE),
        spec.notifications.digest_episodes,
    )


def owners(dataset: str) -> list[str]:
    """Who the dataset spec says hears about the dataset (empty: nobody is notified)."""
    return DatasetSpec.load(dataset).notifications.owners


def slack_channel(dataset: str) -> str | None:
    """The Slack channel the dataset spec names (None: nothing goes to Slack)."""
    return DatasetSpec.load(dataset).notifications.slack_channel


def notify(
    dataset: str, day: dt.date, via: str = "email", settings: Settings | None = None
) -> dict:
    """Send a scored day's digest to the owners by SMTP (``AIRFLOW_CONN_SMTP_DEFAULT``), or
    ``via`` Slack to the dataset's channel (``AIRFLOW_CONN_SLACK_DEFAULT``)."""
    message = day_digest(dataset, day, settings)
    if via == "slack":
        from pipeline.slack import SlackWebhook

        channel = slack_channel(dataset)
        if channel is None:
            raise ConfigError(f"{dataset}: the dataset spec names no notifications.slack_channel")
        SlackWebhook.from_env().post(message)
        return {"subject": message.subject, "to": [channel]}
    from pipeline.smtp import SmtpConnection

    recipients = owners(dataset)
    SmtpConnection.from_env().send(message, recipients)
    return {"subject": message.subject, "to": recipients}
