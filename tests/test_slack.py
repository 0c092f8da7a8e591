"""The digest in Slack: `tsad notify --via slack` and the DAG's Slack webhook notifier post to a
real local HTTP endpoint through the same ``slack_default`` connection."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import tsad
from scored_day import DAY, scored_day
from webhook_inbox import Webhook, local_webhook

from pipeline import daily
from pipeline.config import Settings
from pipeline.slack import SlackSettingsError, SlackWebhook

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with local_webhook() as endpoint:
        yield endpoint


def test_tsad_notify_via_slack_posts_the_digest(tsad_home: Settings, webhook: Webhook) -> None:
    out = scored_day(tsad_home)
    env = os.environ | {"AIRFLOW_CONN_SLACK_DEFAULT": webhook.connection(), "PYTHONPATH": str(ROOT)}
    day = ["notify", "--dataset", "vitals", "--date", DAY.isoformat(), "--via", "slack"]

    done = tsad(*day, env=env)

    assert done.returncode == 0, done.stderr
    assert done.stdout == "sent '[tsad] vitals 2026-01-09: 2 alarm episodes' to #ward-alarms\n"
    [(path, body)] = webhook.posts
    assert path == "/services/T000/B000/XXXX"
    text = body["text"]
    assert text.startswith("*[tsad] vitals 2026-01-09: 2 alarm episodes*\n")
    assert "2 episodes from 9 alarm minutes over 8 entities" in text
    assert text.index("1. bed-1") < text.index("2. bed-2") and "bed-3" not in text
    assert f"Report: {out / daily.DAILY_REPORT_FILE}" in text

    webhook.status = 403  # Slack refuses a revoked webhook
    refused = tsad(*day, env=env)
    assert refused.returncode == 1
    assert "Slack answered 403 'invalid_token'" in " ".join(refused.stderr.split())
    unset = tsad(*day, env={key: value for key, value in env.items() if "SLACK" not in key})
    assert unset.returncode == 1 and "AIRFLOW_CONN_SLACK_DEFAULT is not set" in unset.stderr


def test_the_connection_reads_as_the_slack_provider_reads_it() -> None:
    whole = "https://hooks.slack.com/services/T1/B2/C3"
    assert SlackWebhook.from_connection(None, None, whole, {}).url == whole
    assert SlackWebhook.from_connection(None, None, "T1/B2/C3", {}).url == whole
    local = SlackWebhook.from_connection("http://127.0.0.1:9/hooks/", None, "/T1", {"timeout": 5})
    assert (local.url, local.timeout) == ("http://127.0.0.1:9/hooks/T1", 5)
    with pytest.raises(SlackSettingsError, match="no webhook token"):
        SlackWebhook.from_connection("hooks.slack.com", None, " ", {})


def test_the_dags_slack_notifier_posts_where_the_connection_points(
    tsad_home: Settings, webhook: Webhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_DEFAULT", webhook.connection())
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    import runpy

    notify_owners = runpy.run_path(str(DAGS / "tsad_score.py"))["notify_owners"]

    sent = notify_owners("vitals", "[tsad] vitals 2026-01-10: drifted", "heart_rate moved.\n", {})

    assert sent
    [(path, body)] = webhook.posts
    assert path == "/services/T000/B000/XXXX"
    assert body["text"] == "*[tsad] vitals 2026-01-10: drifted*\nheart_rate moved.\n"
