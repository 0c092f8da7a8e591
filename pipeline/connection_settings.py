"""Runtime settings kept in Airflow connections, turned into the variables the steps read.

Outside Airflow the product is configured by environment variables (``MLFLOW_TRACKING_URI``
and its credentials, ``AWS_*`` for object storage). Inside Airflow, a deployment keeps the same
settings as connections, so a secrets backend (Vault, AWS Secrets Manager, ...) can hold the
passwords instead of the workers' environment. The DAGs look the connections up before each
task runs and hand them here; what comes back is exported for the task, so every step keeps
reading one interface (the environment) whichever way it was configured.

This module is pure: it never imports Airflow, and a connection is anything with Airflow's
connection fields.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

TRACKING_CONNECTION = "mlflow_default"
STORAGE_CONNECTION = "aws_default"
SERVER_SCHEMES = ("http", "https")


class ConnectionFields(Protocol):
    """The fields of an Airflow connection this module reads."""

    conn_type: str | None
    host: str | None
    schema: str | None
    login: str | None
    password: str | None
    port: int | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


def tracking_environment(connection: ConnectionFields) -> dict[str, str]:
    """MLflow's variables from a connection to a tracking server.

    ``http://user:secret@mlflow:5000`` (conn type ``http`` or ``https``) is the server's URL
    with the pipeline's credentials; any other store (a database URL, say) goes in the extra
    ``tracking_uri``. The extras ``registry_uri`` and ``artifact_root`` set those two apart.
    """
    extra = connection.extra_dejson
    uri = extra.get("tracking_uri") or _server_url(connection)
    environment = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": extra.get("registry_uri") or uri,
        "MLFLOW_TRACKING_USERNAME": connection.login,
        "MLFLOW_TRACKING_PASSWORD": connection.password,
        "TSAD_ARTIFACT_ROOT": extra.get("artifact_root"),
    }
    return {name: str(value) for name, value in environment.items() if value}


def _server_url(connection: ConnectionFields) -> str:
    scheme = (connection.conn_type or "").lower()
    if scheme not in SERVER_SCHEMES or not connection.host:
        raise ValueError(
            f"the {TRACKING_CONNECTION!r} connection needs conn type http or https and a host "
            "(the tracking server), or its URI in the extra 'tracking_uri'"
        )
    port = f":{connection.port}" if connection.port else ""
    path = f"/{connection.schema.strip('/')}" if connection.schema else ""
    return f"{scheme}://{connection.host}{port}{path}"


def storage_environment(connection: ConnectionFields) -> dict[str, str]:
    """Object-store variables from an AWS-style connection, as Amazon's provider reads it.

    Login and password are the access key pair; the extras ``endpoint_url`` (MinIO, Ceph, a
    local test server) and ``region_name`` say where the store is.
    """
    extra = connection.extra_dejson
    environment = {
        "AWS_ACCESS_KEY_ID": connection.login,
        "AWS_SECRET_ACCESS_KEY": connection.password,
        "AWS_ENDPOINT_URL": extra.get("endpoint_url"),
        "AWS_REGION": extra.get("region_name"),
    }
    return {name: str(value) for name, value in environment.items() if value}


READERS: Mapping[str, Callable[[ConnectionFields], dict[str, str]]] = {
    TRACKING_CONNECTION: tracking_environment,
    STORAGE_CONNECTION: storage_environment,
}


def environment_from_connections(
    lookup: Callable[[str], ConnectionFields | None],
) -> dict[str, str]:
    """The variables of every configured connection; ``lookup`` returns None for a missing one.

    A connection that is not configured adds nothing, so the variables already in the
    environment stay in force: the fallback outside Airflow, and on deployments that set them.
    """
    environment: dict[str, str] = {}
    for connection_id, read in READERS.items():
        connection = lookup(connection_id)
        if connection is not None:
            environment |= read(connection)
    return environment


def export_connections(
    get: Callable[[str], ConnectionFields], missing: type[Exception]
) -> list[str]:
    """Export the configured connections' variables for this task; returns the names set.

    ``get`` is Airflow's ``Connection.get`` and ``missing`` the exception it raises for an
    unknown connection id (this module never imports Airflow).
    """

    def lookup(connection_id: str) -> ConnectionFields | None:
        try:
            return get(connection_id)
        except missing:
            return None

    environment = environment_from_connections(lookup)
    os.environ.update(environment)
    return sorted(environment)
