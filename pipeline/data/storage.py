"""Where the data tree's bytes live: a local folder, or an S3-compatible object store.

``TSAD_DATA_URI`` names the tree's root: ``file:///path`` (default ``file://$TSAD_HOME/data``,
the layout the product always had) or ``s3://bucket/prefix`` (AWS, MinIO, Ceph, ...; endpoint
and credentials from ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``). Every step keeps working on local folders (:meth:`Settings.partition`, run
folders): this module is the one place that knows the store, and moves a folder between it and
the local working copy:

- :func:`fetch` makes a partition's local folder hold exactly its committed files (or removes
  it when nothing was committed), before a step reads it;
- :func:`publish` hands a writer an empty staged folder and commits it whole when the block
  ends, as the partition's one writer;
- :func:`working_tree` brings a training run's folder down before a step and sends what the
  step changed back after it (the run's steps run one after another, each on its own files).

On a local store these are today's rename-based writes and nothing moves. On S3, which has no
rename, a partition is committed the way table formats do it: its files are uploaded under a
fresh ``_attempts/<id>/`` prefix, then ``_manifest.json`` (the attempt, each file's size and
SHA-256) is PUT as the single atomic step, then older attempts are deleted. Readers only follow
the manifest, so an unfinished or orphaned attempt is never read, and a rerun replaces the day.
Two writers of one partition cannot interleave: each first takes ``_lease.json`` with a
conditional PUT (``If-None-Match: *``), renews it while it writes (``If-Match`` its ETag), and
deletes it at the end; a lease its killed holder stopped renewing is taken over once it expired.
A prefix without a manifest (a producer's daily export) is read as the objects listed in it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar
from urllib.parse import urlparse

from pipeline import crash_points
from pipeline.config import ConfigError, Settings
from pipeline.data import io

MANIFEST = "_manifest.json"
LEASE = "_lease.json"
ATTEMPTS = "_attempts"
LINK_SUFFIX = ".tsad-link"  # a run folder's symbolic link, stored as an object naming its target
VERSION_FILE = ".tsad-version"  # which commit a local copy holds (hidden: never read as data)
ATTEMPTS_VARIABLE = "TSAD_S3_ATTEMPTS"
LEASE_VARIABLE = "TSAD_S3_LEASE_SECONDS"
LEASE_WAIT_VARIABLE = "TSAD_S3_LEASE_WAIT_SECONDS"

P = ParamSpec("P")
R = TypeVar("R")


class StorageError(RuntimeError):
    """The object store could not be reached, or refused a request, after its retries."""


class Store(Protocol):
    """A data tree's store, seen through the local folders steps work on."""

    uri: str

    def fetch(self, local: Path) -> Path: ...

    def publish(self, local: Path) -> contextlib.AbstractContextManager[Path]: ...

    def working_tree(self, local: Path) -> contextlib.AbstractContextManager[Path]: ...


class LocalStore:
    """The data tree in a local (or mounted) folder: the working copy is the store itself."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def fetch(self, local: Path) -> Path:
        return local

    @contextlib.contextmanager
    def publish(self, local: Path) -> Iterator[Path]:
        """The partition's lock, then a staged folder that replaces it whole (rename)."""
        with io.exclusive_partition(local), io.staged_directory(local) as staged:
            yield staged

    @contextlib.contextmanager
    def working_tree(self, local: Path) -> Iterator[Path]:
        yield local


@dataclass(frozen=True)
class _Committed:
    """What a partition's readers may see: its files' keys, and a version naming the commit."""

    version: str
    files: list[dict[str, Any]]


class _Vanished(Exception):
    """An object the manifest named is gone: a newer commit replaced it while it was read."""


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


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
        self._lease_seconds = float(os.environ.get(LEASE_VARIABLE) or 60)
        self._lease_wait = float(os.environ.get(LEASE_WAIT_VARIABLE) or 1800)

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

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        """One S3 request (already retried by the client); a failure names the store."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, method)(Bucket=self._bucket, **kwargs)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "PreconditionFailed", "412"):
                raise
            raise StorageError(f"object store {self.uri}: {what} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"object store {self.uri}: {what} failed: {exc}") from exc

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """An object's bytes and ETag; None when there is none."""
        from botocore.exceptions import ClientError

        try:
            response = self._call(f"reading {key}", "get_object", Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
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
            self._call("deleting old attempts", "delete_objects", Delete={"Objects": chunk})

    # Reading a partition --------------------------------------------------------------------

    def _committed(self, key: str) -> _Committed | None:
        """The manifest's files; else a producer's plain objects; None when the day has none."""
        found = self._get(f"{key}/{MANIFEST}")
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
                self._call(f"reading {entry['key']}", "download_file", Key=entry["key"],
                           Filename=str(target))  # fmt: skip
            except ClientError as exc:
                if _error_code(exc) in ("NoSuchKey", "404"):
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
        with _Lease(self, f"{key}/{LEASE}") as lease:
            crash_points.reached(f"s3-lease:{zone}")
            with io.exclusive_partition(local), io.staged_directory(local) as staged:
                yield staged
                self._commit(key, zone, staged, lease)

    def _commit(self, key: str, zone: str, staged: Path, lease: _Lease) -> None:
        """Upload under a fresh attempt, PUT the manifest (the commit), delete older attempts."""
        attempt = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        entries = []
        for path in sorted(p for p in staged.iterdir() if p.is_file()):
            if path.name.startswith("."):
                continue
            self._call(f"writing {key}", "upload_file", Filename=str(path),
                       Key=f"{key}/{ATTEMPTS}/{attempt}/{path.name}")  # fmt: skip
            stat = path.stat()
            entries.append({"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                            "sha256": _sha256(path)})  # fmt: skip
            crash_points.reached(f"s3-upload:{zone}/{path.name}")
        crash_points.reached(f"s3-uploaded:{zone}")
        lease.check()
        manifest = {"attempt": attempt, "files": entries, "committed": time.time()}
        self._call(f"committing {key}", "put_object", Key=f"{key}/{MANIFEST}",
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
                    found = self._get(entry["Key"])
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(found[0].decode() if found else ".")
                continue
            if target.is_file() and target.stat().st_size == entry["Size"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            self._call(f"reading {entry['Key']}", "download_file", Key=entry["Key"],
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
                self._call(f"writing {key}", "put_object", Key=f"{key}/{relative}{LINK_SUFFIX}",
                           Body=os.readlink(path).encode())  # fmt: skip
            else:
                self._call(f"writing {key}", "upload_file", Filename=str(path),
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


class _Lease:
    """One writer's claim on a partition, held by a conditional PUT and renewed while held."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._store, self._key = store, key
        self._owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._etag = ""
        self._lost = False
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True)

    def _body(self) -> bytes:
        expires = time.time() + self._store._lease_seconds
        return json.dumps({"owner": self._owner, "expires": expires}).encode()

    def _put(self, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            response = self._store._call(
                f"locking {self._key}", "put_object", Key=self._key, Body=self._body(), **condition
            )
        except ClientError as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise StorageError(f"object store {self._store.uri}: locking failed: {exc}") from exc
        self._etag = response["ETag"]
        return True

    def __enter__(self) -> _Lease:
        deadline = time.monotonic() + self._store._lease_wait
        while not self._put(IfNoneMatch="*"):
            held = self._store._get(self._key)
            if held is not None and json.loads(held[0])["expires"] < time.time():
                if self._put(IfMatch=held[1]):  # its holder stopped renewing: take it over
                    break
                continue
            if time.monotonic() > deadline:
                owner = json.loads(held[0])["owner"] if held else "another writer"
                raise StorageError(f"{self._store.uri}/{self._key} is held by {owner}")
            time.sleep(min(1.0, self._store._lease_seconds / 4))
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self._store._lease_seconds / 3):
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
                self._store._call(
                    f"unlocking {self._key}", "delete_object", Key=self._key, IfMatch=self._etag
                )


@cache
def _store(uri: str, settings_json: str, endpoint: str) -> Store:
    if uri.startswith("s3://"):
        return S3Store(uri, Settings.model_validate_json(settings_json))
    if uri.startswith("file://"):
        return LocalStore(uri)
    raise ConfigError(f"TSAD_DATA_URI {uri!r}: use file:///path or s3://bucket/prefix")


def data_store(settings: Settings) -> Store:
    """The store behind ``settings.data_uri`` (one client per store and process)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return _store(settings.data_uri or "file://", settings.model_dump_json(), endpoint)


def fetch(settings: Settings, local: Path) -> Path:
    """``local`` (a partition) holding its committed files, or absent when none were committed."""
    return data_store(settings).fetch(local)


def publish(settings: Settings, local: Path) -> contextlib.AbstractContextManager[Path]:
    """A staged folder that becomes partition ``local`` whole, as its one writer, at exit."""
    return data_store(settings).publish(local)


def working_tree(settings: Settings, local: Path) -> contextlib.AbstractContextManager[Path]:
    """Run folder ``local`` brought down from the store, and its changes sent back after."""
    return data_store(settings).working_tree(local)


def on_run_folder(step: Callable[Concatenate[str, P], R]) -> Callable[Concatenate[str, P], R]:
    """A step whose first argument is a run folder, run on the store's copy of that folder.

    Steps of one training run may run in different pods: each brings the folder down first
    and sends back what it wrote (nothing moves on a local store).
    """

    @functools.wraps(step)
    def on_folder(run_dir: str, *args: P.args, **kwargs: P.kwargs) -> R:
        with working_tree(Settings.from_env(), Path(run_dir)):
            return step(run_dir, *args, **kwargs)

    return on_folder
