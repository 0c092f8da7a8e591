#!/usr/bin/env bash
# Entry point of the tsad Airflow image, compatible with the official image's convention so the
# same image runs under docker-compose.yml (`api-server`, `celery worker ...`) and under the
# official Helm chart (`bash -c "exec airflow scheduler"`, `python -m ...` for task pods):
# a known program runs as given, anything else is an `airflow` subcommand.
set -euo pipefail

case "${1:-}" in
    airflow | bash | sh | python | python3 | tsad | mlflow)
        exec "$@"
        ;;
    *)
        exec airflow "$@"
        ;;
esac
