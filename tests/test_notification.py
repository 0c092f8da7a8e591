"""The digest of a scored day, composed and sent by `tsad notify` to a real SMTP server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import tsad
from scored_day import DAY, scored_day
from smtp_inbox import Inbox, local_smtp

from pipeline import daily, digest
from pipeline.config import Settings
from pipeline.smtp import SmtpConnection, SmtpSettingsError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, str]]:
    with local_smtp() as server:
        yield server


def test_tsad_notify_mails_the_digest_to_the_owners(tsad_home: Settings, smtp_server) -> None:
    inbox, uri = smtp_server
    out = scored_day(tsad_home)
    env = os.environ | {"AIRFLOW_CONN_SMTP_DEFAULT": uri, "PYTHONPATH": str(ROOT)}

    done = tsad("notify", "--dataset", "vitals", "--date", DAY.isoformat(), env=env)

    assert done.returncode == 0, done.stderr
    [(recipients, message)] = inbox.messages
    assert recipients == ["ward-owner@example.org"]  # the demo spec's owner
    assert message["From"] == "tsad@example.org"
    assert message["Subject"] == "[tsad] vitals 2026-01-09: 2 alarm episodes"
    body = message.get_content()
    assert "2 episodes from 9 alarm minutes over 8 entities" in body
    assert "held back 1 lower-ranked" in body
    first, second = body.index("1. bed-1"), body.index("2. bed-2")
    assert first < second and "bed-3" not in body
    assert "2026-01-09 00:00-00:03 UTC  3 min" in body
    assert "top features: spo2, heart_rate" in body
    assert f"Report: {out / daily.DAILY_REPORT_FILE}" in body


def test_notify_without_a_connection_or_for_an_unscored_day_says_why(tsad_home: Settings) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    env.pop("AIRFLOW_CONN_SMTP_DEFAULT", None)
    unscored = tsad("notify", "--dataset", "vitals", "--date", "2026-02-01", env=env)
    assert unscored.returncode == 1 and "no scored day" in unscored.stderr
    scored_day(tsad_home)
    unset = tsad("notify", "--dataset", "vitals", "--date", DAY.isoformat(), env=env)
    assert unset.returncode == 1 and "AIRFLOW_CONN_SMTP_DEFAULT is not set" in unset.stderr


def test_the_connection_uri_reads_as_airflow_reads_it() -> None:
    connection = SmtpConnection.from_uri(
        "smtp://alerts%40example.org:s%3Acret@mail.example.org:587?from_email=tsad%40example.org"
    )
    assert (connection.host, connection.port) == ("mail.example.org", 587)
    assert (connection.login, connection.password) == ("alerts@example.org", "s:cret")
    assert connection.use_ssl and connection.starttls
    assert SmtpConnection.from_uri("smtp://localhost?disable_ssl=true").port == 25
    with pytest.raises(SmtpSettingsError, match="SMTP connection URI"):
        SmtpConnection.from_uri("postgresql://db/tsad")


def test_an_alert_names_the_dataset_the_day_and_what_happened() -> None:
    alert = digest.compose_alert("quarantined", "vitals", "2026-01-10", "column 'spo2' missing")
    assert alert.subject == "[tsad] vitals 2026-01-10: quarantined"
    assert "column 'spo2' missing" in alert.body
