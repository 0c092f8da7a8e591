"""Sending a message by SMTP from the command line, through Airflow's ``smtp_default`` settings.

The DAGs send through Airflow's SMTP notifier; ``tsad notify`` runs where Airflow may not be
imported, so it reads the same connection the same way Airflow does: the
``AIRFLOW_CONN_SMTP_DEFAULT`` environment variable, an Airflow connection URI such as
``smtp://user:password@mail.example.org:587?from_email=tsad%40example.org``. The extras mean
what they mean to the SMTP provider: ``disable_ssl`` (plain SMTP instead of SMTP over SSL),
``disable_tls`` (no STARTTLS), ``from_email`` and ``timeout``.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.digest import Message

CONNECTION_VARIABLE = "AIRFLOW_CONN_SMTP_DEFAULT"
_TRUE = {"true", "1", "yes", "on"}


class SmtpSettingsError(ValueError):
    """No usable SMTP connection to send through."""


@dataclass(frozen=True)
class SmtpConnection:
    """An SMTP server as an Airflow SMTP connection describes it."""

    host: str
    port: int
    login: str | None = None
    password: str | None = None
    from_email: str | None = None
    use_ssl: bool = True
    starttls: bool = True
    timeout: float = 30.0

    @classmethod
    def from_uri(cls, uri: str) -> SmtpConnection:
        """Parse an Airflow connection URI (``smtp://`` or ``smtps://``)."""
        parts = urlsplit(uri)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise SmtpSettingsError(
                f"{CONNECTION_VARIABLE} must be an SMTP connection URI such as "
                "smtp://user:password@host:587?from_email=tsad%40example.org"
            )
        extras = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        use_ssl = extras.get("disable_ssl", "false").lower() not in _TRUE
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if use_ssl else 25),
            login=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            from_email=extras.get("from_email"),
            use_ssl=use_ssl,
            starttls=extras.get("disable_tls", "false").lower() not in _TRUE,
            timeout=float(extras.get("timeout", 30)),
        )

    @classmethod
    def from_env(cls) -> SmtpConnection:
        """The ``smtp_default`` connection from the environment, as Airflow would read it."""
        uri = os.environ.get(CONNECTION_VARIABLE)
        if not uri:
            raise SmtpSettingsError(
                f"{CONNECTION_VARIABLE} is not set: export the smtp_default connection URI, "
                "e.g. smtp://127.0.0.1:8025?disable_ssl=true&disable_tls=true"
            )
        return cls.from_uri(uri)

    def send(self, message: Message, recipients: list[str]) -> None:
        """Deliver ``message`` to ``recipients`` as one plain-text e-mail."""
        if not recipients:
            raise SmtpSettingsError("no recipients: set notifications.owners in the dataset spec")
        sender = self.from_email or self.login
        if not sender:
            raise SmtpSettingsError("no sender: add ?from_email=... to the connection URI")
        email = EmailMessage()
        email["Subject"], email["From"], email["To"] = (
            message.subject,
            sender,
            ", ".join(recipients),
        )
        email.set_content(message.body)
        client = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP
        with client(self.host, self.port, timeout=self.timeout) as server:
            if self.starttls and not self.use_ssl:
                server.starttls(context=ssl.create_default_context())
            if self.login and self.password:
                server.login(self.login, self.password)
            server.send_message(email)
