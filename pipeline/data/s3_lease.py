"""A writer's lease on one partition of an S3-compatible store.

S3 has no locks; a conditional PUT is the one atomic step it offers. The lease object is created
with ``If-None-Match: *`` (nobody holds it), renewed with ``If-Match`` its own ETag (nobody took
it over), and deleted at the end. A lease whose holder was killed stops being renewed and is
taken over once it expired, so a crashed writer never blocks a partition for longer than that.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING

from pipeline.data.storage import StorageError

if TYPE_CHECKING:
    from pipeline.data.s3_store import S3Store


def error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchKey``, ``PreconditionFailed``,
    ...; empty for other errors): the conditions the commit protocol acts on."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class Lease:
    """One writer's claim on a partition, held by a conditional PUT and renewed while held."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._store, self._key = store, key
        self._owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._etag = ""
        self._lost = False
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True)

    def _body(self) -> bytes:
        expires = time.time() + self._store.lease_seconds
        return json.dumps({"owner": self._owner, "expires": expires}).encode()

    def _put(self, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            response = self._store.call(
                f"locking {self._key}", "put_object", Key=self._key, Body=self._body(), **condition
            )
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise StorageError(f"object store {self._store.uri}: locking failed: {exc}") from exc
        self._etag = response["ETag"]
        return True

    def __enter__(self) -> Lease:
        deadline = time.monotonic() + self._store.lease_wait
        while not self._put(IfNoneMatch="*"):
            held = self._store.get(self._key)
            if held is not None and json.loads(held[0])["expires"] < time.time():
                if self._put(IfMatch=held[1]):  # its holder stopped renewing: take it over
                    break
                continue
            if time.monotonic() > deadline:
                owner = json.loads(held[0])["owner"] if held else "another writer"
                raise StorageError(f"{self._store.uri}/{self._key} is held by {owner}")
            time.sleep(min(1.0, self._store.lease_seconds / 4))
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self._store.lease_seconds / 3):
            try:
                if not self._put(IfMatch=self._etag):
                    self._lost = True
                    return
            except StorageError:
                continue  # the store blinked: try again before the lease runs out

    def check(self) -> None:
        """Refuse to commit when another writer took the lease over (this one stalled)."""
        if self._lost:
            raise StorageError(f"{self._store.uri}/{self._key}: lease lost to another writer")

    def __exit__(self, *exc: object) -> None:
        from botocore.exceptions import ClientError

        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        if not self._lost:
            with contextlib.suppress(ClientError, StorageError):
                self._store.call(
                    f"unlocking {self._key}", "delete_object", Key=self._key, IfMatch=self._etag
                )
