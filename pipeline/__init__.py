"""tsad: time-series anomaly detection pipelines (importable without Airflow)."""

__version__ = "0.1.0"
