"""Create or update the pipeline's own MLflow account on the tracking server.

Run after the server is healthy (``mlflow-init`` in docker-compose.yml, the Job in
infra/k8s/mlflow.yaml) so that Airflow's tasks sign in with a non-admin account: they can
create experiments and models (and manage what they create) but not other users. Idempotent:
an existing account gets the password from the environment, which stays the one source.

Environment: MLFLOW_TRACKING_URI, MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD
(who may create accounts), TSAD_MLFLOW_USERNAME and TSAD_MLFLOW_PASSWORD (the account).
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient

REQUIRED = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "TSAD_MLFLOW_USERNAME",
    "TSAD_MLFLOW_PASSWORD",
)


def ensure_user(client: AuthServiceClient, username: str, password: str) -> str:
    """Return ``"created"`` or ``"updated"``."""
    try:
        client.get_user(username)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(username, password)
        return "created"
    client.update_user_password(username, password)
    return "updated"


def main() -> int:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        print(f"ensure_user.py: not set: {', '.join(missing)}", file=sys.stderr)
        return 64
    # The auth client signs in with MLflow's usual credential variables: the admin's here.
    os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ["MLFLOW_AUTH_ADMIN_USERNAME"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
    client = AuthServiceClient(os.environ["MLFLOW_TRACKING_URI"])
    username = os.environ["TSAD_MLFLOW_USERNAME"]
    outcome = ensure_user(client, username, os.environ["TSAD_MLFLOW_PASSWORD"])
    print(f"MLflow account {username!r} {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
