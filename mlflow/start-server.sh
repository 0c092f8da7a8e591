#!/usr/bin/env bash
# Start the tsad MLflow tracking server: bring its database schema up to date, render the
# basic-auth configuration from the environment, then serve the UI, the REST API, the model
# registry and the artifacts (proxied, so clients need no storage credentials of their own).
#
# Everything comes from the environment (docker-compose.yml, infra/k8s/mlflow.yaml, or a test):
#   MLFLOW_BACKEND_STORE_URI        runs, metrics and the model registry, e.g. postgresql://...
#   MLFLOW_AUTH_DATABASE_URI        users and permissions of the basic-auth app
#   MLFLOW_AUTH_ADMIN_USERNAME      the admin account, created on the first start
#   MLFLOW_AUTH_ADMIN_PASSWORD
#   MLFLOW_FLASK_SERVER_SECRET_KEY  signs UI sessions and CSRF tokens (same for every worker)
#   MLFLOW_ARTIFACTS_DESTINATION    a directory (a volume) or s3://bucket/prefix
#   MLFLOW_ALLOWED_HOSTS            Host headers accepted: the names clients use to reach it
#   MLFLOW_HOST, MLFLOW_PORT, MLFLOW_WORKERS   optional: 0.0.0.0, 5000, 2
# The admin password must have at least 12 characters (MLflow refuses to start otherwise).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

for name in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI MLFLOW_AUTH_ADMIN_USERNAME \
    MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_ARTIFACTS_DESTINATION \
    MLFLOW_ALLOWED_HOSTS; do
    if [[ -z "${!name:-}" ]]; then
        echo "start-server.sh: $name is not set (see .env.example)" >&2
        exit 64
    fi
done

# MLflow's job runner serves GenAI features tsad does not use; it would add seven processes.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

# Creates the tables on an empty database, migrates an older one; a no-op when current.
mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"

# The rendered file holds a database password: a private directory, never the image.
config_dir=$(mktemp -d)
template=$(<"$here/basic_auth.ini")
placeholder='${MLFLOW_AUTH_DATABASE_URI}'
printf '%s\n' "${template//"$placeholder"/"$MLFLOW_AUTH_DATABASE_URI"}" >"$config_dir/basic_auth.ini"
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"

exec mlflow server \
    --app-name basic-auth \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --serve-artifacts \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --allowed-hosts "$MLFLOW_ALLOWED_HOSTS" \
    --host "${MLFLOW_HOST:-0.0.0.0}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}"
