"""Posting a message to Slack from the command line, through Airflow's ``slack_default`` settings.

The DAGs post through the Slack provider's webhook notifier; ``tsad notify --via slack`` runs
where Airflow may not be imported, so it reads the same connection as the provider does, from
``AIRFLOW_CONN_SLACK_DEFAULT`` (an Airflow connection as JSON or as a URI), builds the same
webhook address, and posts with the same client (``slack_sdk``'s ``WebhookClient``):

- a ``password`` holding a whole address (``https://hooks.slack.com/services/T.../B.../...``)
  is the webhook;
- otherwise the password is the token, appended to the ``host`` when the host is an address
  (``http://127.0.0.1:8099/services``), else to ``<schema or https>://<host or
  hooks.slack.com/services>``;
- the ``timeout`` extra bounds the request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.digest import Message

CONNECTION_VARIABLE = "AIRFLOW_CONN_SLACK_DEFAULT"
DEFAULT_HOST = "hooks.slack.com/services"


class SlackSettingsError(ValueError):
    """No usable Slack webhook connection, or Slack refused the message."""


@dataclass(frozen=True)
class SlackWebhook:
    """An incoming webhook as the provider's ``slack_default`` connection describes it."""

    url: str
    timeout: int = 30

    @classmethod
    def from_connection(
        cls, host: str | None, schema: str | None, password: str | None, extra: dict
    ) -> SlackWebhook:
        """The webhook address the provider builds from a connection's fields."""
        token = (password or "").strip()
        if not token:
            raise SlackSettingsError(
                f"{CONNECTION_VARIABLE} holds no webhook token: put it (or the whole webhook "
                "address) in the connection's password"
            )
        if "://" in token:
            url = token
        else:
            base = (
                host if host and "://" in host else f"{schema or 'https'}://{host or DEFAULT_HOST}"
            )
            url = base.rstrip("/") + "/" + token.lstrip("/")
        return cls(url=url.rstrip("/"), timeout=int(extra.get("timeout") or 30))

    @classmethod
    def from_env(cls) -> SlackWebhook:
        """The ``slack_default`` connection from the environment, as Airflow would read it."""
        value = os.environ.get(CONNECTION_VARIABLE, "").strip()
        if not value:
            raise SlackSettingsError(
                f"{CONNECTION_VARIABLE} is not set: export the slack_default webhook connection, "
                'e.g. {"conn_type": "slackwebhook", "password": "<the webhook address>"}'
            )
        if value.startswith("{"):
            fields = json.loads(value)
            extra = fields.get("extra") or {}
            return cls.from_connection(
                fields.get("host"),
                fields.get("schema"),
                fields.get("password"),
                json.loads(extra) if isinstance(extra, str) else extra,
            )
        parts = urlsplit(value)
        extras = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return cls.from_connection(
            unquote(parts.hostname) if parts.hostname else None,
            unquote(parts.path.lstrip("/")) or None,
            unquote(parts.password) if parts.password else None,
            extras,
        )

    def post(self, message: Message) -> None:
        """Post ``message`` as one Slack message; Slack's refusal is an error naming it."""
        from slack_sdk.webhook import WebhookClient

        response = WebhookClient(self.url, timeout=self.timeout).send(text=slack_text(message))
        if response.status_code != 200:
            raise SlackSettingsError(
                f"Slack answered {response.status_code} {response.body!r} to the webhook post"
            )


def slack_text(message: Message) -> str:
    """A message as Slack text: the subject in bold, the body as it is mailed."""
    return f"*{message.subject}*\n{message.body}"
