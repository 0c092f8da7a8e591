#!/usr/bin/env bash
# Runs once, when the PostgreSQL container starts on an empty volume (docker-entrypoint-initdb.d):
# a role and database for Airflow's metadata, and a role owning MLflow's two databases (runs and
# model registry; users and permissions of its auth app). Passwords come from the environment,
# i.e. from .env, and reach psql as variables, never as SQL text.
set -euo pipefail

for name in AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD; do
    if [[ -z "${!name:-}" ]]; then
        echo "init-databases.sh: $name is not set (see .env.example)" >&2
        exit 1
    fi
done

psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set airflow_password="$AIRFLOW_DB_PASSWORD" \
    --set mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
SQL
