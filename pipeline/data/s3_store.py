"""The data tree on an S3-compatible store: the manifest commit protocol (see
:mod:`pipeline.data.storage` for the protocol, and :mod:`pipeline.data.s3_lease` for the
one-writer lease)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline import crash_points
from pipeline.config import ConfigError, Settings
from pipeline.data import io
from pipeline.data.s3_lease import Lease, error_code
from pipeline.data.storage import StorageError

MANIFEST = "_manifest.json"
LEASE = "_lease.json"
ATTEMPTS = "_attempts"
LINK_SUFFIX = ".tsad-link"  # a run folder's symbolic link, stored as an object naming its target
VERSION_FILE = ".tsad-version"  # which commit a local copy holds (hidden: never read as data)
ATTEMPTS_VARIABLE = "TSAD_S3_ATTEMPTS"
LEASE_VARIABLE = "TSAD_S3_LEASE_SECONDS"
LEASE_WAIT_VARIABLE = "TSAD_S3_LEASE_WAIT_SECONDS"


@dataclass(frozen=True)
class _Committed:
    """What a partition's readers may see: its files' keys, and a version naming the commit."""

    version: str
    files: list[dict[str, Any]]


class _Vanished(Exception):
    """An object the manifest named is gone: a newer commit replaced it while it was read."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class S3Store:
    """A data tree under ``s3://bucket/prefix``; local folders are working copies of it."""

    def __init__(self, uri: str, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        parsed = urlparse(uri)
        if not parsed.netloc:
            raise ConfigError(f"TSAD_DATA_URI {uri!r} names no bucket: use s3://bucket/prefix")
        self.uri = uri
        self._bucket, self._prefix = parsed.netloc, parsed.path.strip("/")
        self._data_root, self._runs_root = settings.data_root, settings.home / "runs"
        attempts = int(os.environ.get(ATTEMPTS_VARIABLE) or 5)
        # Standard retry mode: throttling, 5xx and connection errors retried with backoff.
        config = Config(
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        self._client = boto3.client("s3", config=config)
        self.lease_seconds = float(os.environ.get(LEASE_VARIABLE) or 60)
        self.lease_wait = float(os.environ.get(LEASE_WAIT_VARIABLE) or 1800)

    # Keys and calls -------------------------------------------------------------------------

    def key(self, local: Path) -> str:
        """The object key prefix of a local working-copy folder (a partition or run folder)."""
        local = local.resolve()
        if local.is_relative_to(self._data_root.resolve()):
            relative = local.relative_to(self._data_root.resolve()).as_posix()
        elif local.is_relative_to(self._runs_root.resolve()):
            relative = "runs/" + local.relative_to(self._runs_root.resolve()).as_posix()
        else:
            raise ConfigError(f"{local} is outside the data tree's working copy")
        return f"{self._prefix}/{relative}".strip("/")

    def call(self, what: str, method: str, **kwargs: Any) -> Any:
        """One S3 request (already retried by the client); a failure names the store."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, method)(Bucket=self._bucket, **kwargs)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404", "PreconditionFailed", "412"):
                raise
            raise StorageError(f"object store {self.uri}: {what} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"object store {self.uri}: {what} failed: {exc}") from exc

    def get(self, key: str) -> tuple[bytes, str] | None:
        """An object's bytes and ETag; None when there is none."""
        from botocore.exceptions import ClientError

        try:
            response = self.call(f"reading {key}", "get_object", Key=key)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def _list(self, prefix: str, delimiter: str = "") -> list[dict[str, Any]]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=prefix, Delimiter=delimiter
        )
        try:
            return [entry for page in pages for entry in page.get("Contents", [])]
        except Exception as exc:
            raise StorageError(f"object store {self.uri}: listing {prefix} failed: {exc}") from exc

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": key} for key in keys[start : start + 1000]]
            self.call("deleting old attempts", "delete_objects", Delete={"Objects": chunk})

    # Reading a partition --------------------------------------------------------------------

    def _committed(self, key: str) -> _Committed | None:
        """The manifest's files; else a producer's plain objects; None when the day has none."""
        found = self.get(f"{key}/{MANIFEST}")
        if found is not None:
            manifest = json.loads(found[0])
            attempt = manifest["attempt"]
            files = [
                entry | {"key": f"{key}/{ATTEMPTS}/{attempt}/{entry['name']}"}
                for entry in manifest["files"]
            ]
            return _Committed(attempt, files)
        plain = [
            {
                "name": entry["Key"].rsplit("/", 1)[-1],
                "key": entry["Key"],
                "size": entry["Size"],
                "mtime_ns": int(entry["LastModified"].timestamp() * 1e9),
                "etag": entry["ETag"],
            }
            for entry in self._list(f"{key}/", delimiter="/")
            if not entry["Key"].rsplit("/", 1)[-1].startswith(("_", "."))
        ]
        if not plain:
            return None
        signature = json.dumps(sorted((f["name"], f["size"], f["etag"]) for f in plain))
        return _Committed("plain-" + hashlib.sha256(signature.encode()).hexdigest(), plain)

    def fetch(self, local: Path) -> Path:
        """Make ``local`` hold the partition's committed files, or remove it if there are none.

        A copy already holding the committed version is kept as it is. A file that vanished
        mid-read (a newer commit cleaned its attempt) sends the reader back to the manifest.
        """
        key = self.key(local)
        for _ in range(5):
            committed = self._committed(key)
            if committed is None:
                with io.exclusive_partition(local):
                    shutil.rmtree(local, ignore_errors=True)
                return local
            marker = local / VERSION_FILE
            if marker.is_file() and marker.read_text() == committed.version:
                return local
            try:
                with io.exclusive_partition(local), io.staged_directory(local) as staged:
                    self._download(committed, staged)
                return local
            except _Vanished:
                continue
        raise StorageError(f"object store {self.uri}: {key} kept changing while it was read")

    def _download(self, committed: _Committed, staged: Path) -> None:
        from botocore.exceptions import ClientError

        for entry in committed.files:
            target = staged / entry["name"]
            try:
                self.call(f"reading {entry['key']}", "download_file", Key=entry["key"],
                           Filename=str(target))  # fmt: skip
            except ClientError as exc:
                if error_code(exc) in ("NoSuchKey", "404"):
                    raise _Vanished(entry["key"]) from exc
                raise StorageError(f"object store {self.uri}: reading failed: {exc}") from exc
            if target.stat().st_size != entry["size"] or (
                "sha256" in entry and _sha256(target) != entry["sha256"]
            ):
                raise StorageError(f"object store {self.uri}: {entry['key']} does not match "
                                   "its manifest")  # fmt: skip
            os.utime(target, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        (staged / VERSION_FILE).write_text(committed.version)

    # Writing a partition --------------------------------------------------------------------

    @contextlib.contextmanager
    def publish(self, local: Path) -> Iterator[Path]:
        """A staged folder committed to the store when the block ends, then kept as the copy."""
        key = self.key(local)
        zone = local.parent.parent.name
        with Lease(self, f"{key}/{LEASE}") as lease:
            crash_points.reached(f"s3-lease:{zone}")
            with io.exclusive_partition(local), io.staged_directory(local) as staged:
                yield staged
                self._commit(key, zone, staged, lease)

    def _commit(self, key: str, zone: str, staged: Path, lease: Lease) -> None:
        """Upload under a fresh attempt, PUT the manifest (the commit), delete older attempts."""
        attempt = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        entries = []
        for path in sorted(p for p in staged.iterdir() if p.is_file()):
            if path.name.startswith("."):
                continue
            self.call(f"writing {key}", "upload_file", Filename=str(path),
                       Key=f"{key}/{ATTEMPTS}/{attempt}/{path.name}")  # fmt: skip
            stat = path.stat()
            entries.append({"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                            "sha256": _sha256(path)})  # fmt: skip
            crash_points.reached(f"s3-upload:{zone}/{path.name}")
        crash_points.reached(f"s3-uploaded:{zone}")
        lease.check()
        manifest = {"attempt": attempt, "files": entries, "committed": time.time()}
        self.call(f"committing {key}", "put_object", Key=f"{key}/{MANIFEST}",
                   Body=json.dumps(manifest, indent=2).encode())  # fmt: skip
        (staged / VERSION_FILE).write_text(attempt)
        crash_points.reached(f"s3-manifest:{zone}")
        stale = [
            entry["Key"]
            for entry in self._list(f"{key}/{ATTEMPTS}/")
            if not entry["Key"].startswith(f"{key}/{ATTEMPTS}/{attempt}/")
        ]
        self._delete(stale)
        crash_points.reached(f"s3-cleanup:{zone}")

    # Run folders ----------------------------------------------------------------------------

    def _run_root(self, local: Path) -> Path:
        """The whole run folder (``runs/<dataset>/<key>``) of a run or candidate folder."""
        relative = local.resolve().relative_to(self._runs_root.resolve())
        return self._runs_root.resolve() / relative.parts[0] / relative.parts[1]

    @contextlib.contextmanager
    def working_tree(self, local: Path) -> Iterator[Path]:
        """The run folder brought down; what the block changed in it is sent back after it."""
        root = self._run_root(local)
        stored = self._pull_tree(root)
        yield local
        self._push_tree(root, stored)

    def _pull_tree(self, root: Path) -> dict[str, tuple[int, int]]:
        """Bring down what the store has of a run folder; the local state of what it has.

        A file not in the returned state (new, or changed since) is sent back by
        :meth:`_push_tree`; a file another step changed on the store is left alone.
        """
        key = self.key(root)
        entries = self._list(f"{key}/")
        for entry in entries:
            relative = entry["Key"][len(key) + 1 :]
            target = root / relative
            if relative.endswith(LINK_SUFFIX):
                link = target.with_name(target.name.removesuffix(LINK_SUFFIX))
                if not link.is_symlink():
                    found = self.get(entry["Key"])
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(found[0].decode() if found else ".")
                continue
            if target.is_file() and target.stat().st_size == entry["Size"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            self.call(f"reading {entry['Key']}", "download_file", Key=entry["Key"],
                       Filename=str(temporary))  # fmt: skip
            os.replace(temporary, target)
        stored = {entry["Key"][len(key) + 1 :].removesuffix(LINK_SUFFIX) for entry in entries}
        return {name: state for name, state in _snapshot(root).items() if name in stored}

    def _push_tree(self, root: Path, before: dict[str, tuple[int, int]]) -> None:
        key = self.key(root)
        for relative, state in _snapshot(root).items():
            if before.get(relative) == state:
                continue
            path = root / relative
            if path.is_symlink():
                self.call(f"writing {key}", "put_object", Key=f"{key}/{relative}{LINK_SUFFIX}",
                           Body=os.readlink(path).encode())  # fmt: skip
            else:
                self.call(f"writing {key}", "upload_file", Filename=str(path),
                           Key=f"{key}/{relative}")  # fmt: skip


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Each file (and link) under ``root``, not following links: its size and mtime."""
    found: dict[str, tuple[int, int]] = {}
    for directory, folders, files in os.walk(root):
        base = Path(directory)
        for name in [*files, *(f for f in folders if (base / f).is_symlink())]:
            path = base / name
            if name.startswith(".") and name.endswith(".tmp"):
                continue
            stat = path.lstat()
            found[path.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found
