"""Settings held in Airflow connections become the variables every step reads."""

from __future__ import annotations

import pytest
from airflow.sdk import Connection

from pipeline.connection_settings import (
    TRACKING_CONNECTION,
    environment_from_connections,
    storage_environment,
    tracking_environment,
)


def connection(uri: str) -> Connection:
    """A connection written the way ``AIRFLOW_CONN_<ID>`` holds it."""
    return Connection.from_uri(uri, conn_id="test")


def test_a_tracking_server_connection_gives_its_url_and_credentials() -> None:
    found = tracking_environment(connection("https://tsad-pipeline:s%40cret@mlflow.ward:5000"))
    assert found == {
        "MLFLOW_TRACKING_URI": "https://mlflow.ward:5000",
        "MLFLOW_REGISTRY_URI": "https://mlflow.ward:5000",
        "MLFLOW_TRACKING_USERNAME": "tsad-pipeline",
        "MLFLOW_TRACKING_PASSWORD": "s@cret",
    }


def test_extras_name_a_database_store_a_registry_and_an_artifact_root() -> None:
    found = tracking_environment(
        Connection(
            conn_id="test",
            conn_type="generic",
            extra='{"tracking_uri": "postgresql://mlflow@db/mlflow", '
            '"registry_uri": "postgresql://mlflow@db/registry", "artifact_root": "s3://ml/art"}',
        )
    )
    assert found == {
        "MLFLOW_TRACKING_URI": "postgresql://mlflow@db/mlflow",
        "MLFLOW_REGISTRY_URI": "postgresql://mlflow@db/registry",
        "TSAD_ARTIFACT_ROOT": "s3://ml/art",
    }


def test_a_tracking_connection_without_a_server_or_uri_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'mlflow_default' connection needs conn type http"):
        tracking_environment(Connection(conn_id="test", conn_type="postgres", host="db"))


def test_an_object_store_connection_gives_keys_endpoint_and_region() -> None:
    found = storage_environment(
        connection(
            "aws://AKIAEXAMPLE:secret%2Fkey@?endpoint_url=http%3A%2F%2Fminio%3A9000"
            "&region_name=eu-west-1"
        )
    )
    assert found == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret/key",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_REGION": "eu-west-1",
    }


def test_missing_connections_leave_the_environment_in_force() -> None:
    configured = {TRACKING_CONNECTION: connection("http://mlflow:5000")}
    assert environment_from_connections(configured.get) == {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLFLOW_REGISTRY_URI": "http://mlflow:5000",
    }
    assert environment_from_connections({}.get) == {}
