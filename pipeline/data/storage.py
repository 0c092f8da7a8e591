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
import os
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from pipeline.config import ConfigError, Settings
from pipeline.data import io

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


@cache
def _store(uri: str, settings_json: str, endpoint: str) -> Store:
    if uri.startswith("s3://"):
        from pipeline.data.s3_store import S3Store

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
