"""An S3-compatible server on 127.0.0.1 (moto's server mode), spoken to over HTTP.

The storage tests, the end-to-end test on object storage, the crash-point table and the speed
benchmark each start one and point ``TSAD_DATA_URI`` at a bucket in it (moto is a test-only
package: this module is imported only where it is installed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator

import boto3
from moto.server import ThreadedMotoServer

from pipeline.config import Settings
from pipeline.data import storage

BUCKET = "tsad-test"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "tsad-test-key",
    "AWS_SECRET_ACCESS_KEY": "tsad-test-secret",
    "AWS_REGION": "us-east-1",
}


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """A running server on a free port, holding the empty bucket :data:`BUCKET`; its URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, **_client_credentials())
        client.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def _client_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_REGION"],
    }


def s3_environment(endpoint: str, prefix: str) -> dict[str, str]:
    """The variables that point tsad's data tree at ``s3://tsad-test/<prefix>`` on ``endpoint``."""
    return CREDENTIALS | {
        "AWS_ENDPOINT_URL": endpoint,
        "TSAD_DATA_URI": f"s3://{BUCKET}/{prefix}",
        "TSAD_S3_LEASE_SECONDS": "3",
    }


def use_s3(endpoint: str, prefix: str, monkeypatch) -> None:
    """Point this process's data tree at the server (set before ``Settings.from_env``)."""
    for name, value in s3_environment(endpoint, prefix).items():
        monkeypatch.setenv(name, value)


def bucket_client(endpoint: str):
    """A plain S3 client of the test bucket's server, to look at what tsad stored."""
    return boto3.client("s3", endpoint_url=endpoint, **_client_credentials())


def keys(endpoint: str, prefix: str) -> list[str]:
    """Every object key under ``prefix`` in the test bucket, sorted."""
    pages = (
        bucket_client(endpoint)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=BUCKET, Prefix=prefix)
    )
    return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))


def copy_partition(source: Settings, target: Settings, zone: str, dataset: str, day) -> None:
    """Commit a partition of ``source``'s data tree to ``target``'s (an S3 one) unchanged;
    one ``source`` does not have is left out."""
    local = source.partition(zone, dataset, day)
    if not local.is_dir():
        return
    with storage.publish(target, target.partition(zone, dataset, day)) as staged:
        shutil.copytree(local, staged, dirs_exist_ok=True)


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """``variables`` set in this process's environment for the block, then restored."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
