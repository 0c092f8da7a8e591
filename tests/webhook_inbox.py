"""A local HTTP server that takes Slack webhook posts and keeps them: Slack, for real, offline.

It answers as Slack's incoming webhooks do (``200 ok``), or with the status a test asks for,
so the provider's notifier and ``tsad notify --via slack`` post over real HTTP.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Webhook:
    """What the server received (path and JSON body of each post) and what it answers."""

    posts: list[tuple[str, dict]] = field(default_factory=list)
    status: int = 200
    host: str = ""

    def connection(self, token: str = "T000/B000/XXXX") -> str:
        """An ``AIRFLOW_CONN_SLACK_DEFAULT`` value whose host points at this server."""
        return json.dumps({"conn_type": "slackwebhook", "host": self.host, "password": token})


@contextlib.contextmanager
def local_webhook() -> Iterator[Webhook]:
    """A webhook endpoint on a free port of 127.0.0.1 for the block's duration."""
    webhook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            webhook.posts.append((self.path, json.loads(self.rfile.read(length))))
            answer = b"ok" if webhook.status == 200 else b"invalid_token"
            self.send_response(webhook.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    webhook.host = f"http://127.0.0.1:{server.server_port}/services"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield webhook
    finally:
        server.shutdown()
        server.server_close()
