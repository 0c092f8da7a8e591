"""A local SMTP server that keeps what it receives: the owners' mail, delivered for real.

A module of its own, like ``homes``: the notification, command-line and end-to-end tests all
need one, and a DAG run that mails owners fails without a server to take the mail.
"""

from __future__ import annotations

import contextlib
import email
import socket
from collections.abc import Iterator
from email.message import Message as EmailMessage
from email.policy import default

from aiosmtpd.controller import Controller


class Inbox:
    """An aiosmtpd handler that keeps every message it receives, with its recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=default)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


@contextlib.contextmanager
def local_smtp() -> Iterator[tuple[Inbox, str]]:
    """A running server on a free port, and the ``AIRFLOW_CONN_SMTP_DEFAULT`` URI reaching it."""
    with socket.socket() as probe:  # a free port: the controller checks it can connect to it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield (
            inbox,
            (
                f"smtp://127.0.0.1:{port}?disable_ssl=true&disable_tls=true"
                "&from_email=tsad%40example.org"
            ),
        )
    finally:
        controller.stop()
