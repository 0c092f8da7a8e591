import pytest

from pipeline.config import ConfigError, DatasetSpec, RunConfig, Settings, parse_date


def test_shipped_specs_and_run_configs_load():
    spec = DatasetSpec.load("vitals")
    assert spec.feature_names[0] == "heart_rate"
    config = RunConfig.load("vitals")
    assert config.dataset == "vitals"


@pytest.mark.parametrize("name", ["../etc", "/abs", "Vitals", "a/b", ""])
def test_names_that_could_escape_the_home_are_refused(name):
    with pytest.raises(ConfigError):
        DatasetSpec.load(name)


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"known: .*vitals"):
        DatasetSpec.load("nope")


def test_partitions_live_under_tsad_home(tsad_home: Settings):
    path = tsad_home.partition("landing", "vitals", parse_date("2026-01-02"))
    assert path == tsad_home.home / "data" / "landing" / "vitals" / "date=2026-01-02"
    with pytest.raises(ConfigError, match="expected YYYY-MM-DD"):
        tsad_home.partition("landing", "vitals", parse_date("2026-01-02/../../x"))


def test_overlapping_splits_are_rejected():
    base = RunConfig.load("vitals").model_dump()
    base["validation"] = base["train"]
    with pytest.raises(ValueError, match="overlap"):
        RunConfig.model_validate(base)


def test_embedded_default_keeps_tracking_and_artifacts_under_the_home(tsad_home: Settings):
    assert tsad_home.tracking_uri == f"sqlite:///{tsad_home.home / 'mlflow' / 'mlflow.db'}"
    assert tsad_home.registry_uri == tsad_home.tracking_uri
    assert tsad_home.artifact_root == (tsad_home.home / "mlflow" / "artifacts").as_uri()


def test_a_tracking_server_keeps_the_artifacts_it_serves(tsad_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    settings = Settings.from_env()
    assert settings.registry_uri == "http://mlflow:5000"
    assert settings.artifact_root is None
    monkeypatch.setenv("TSAD_ARTIFACT_ROOT", "s3://models/tsad")
    assert Settings.from_env().artifact_root == "s3://models/tsad"


def test_empty_variables_mean_the_default(tsad_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("TSAD_MODEL_PREFIX", "")
    settings = Settings.from_env()
    assert settings.tracking_uri.startswith("sqlite:///")
    assert settings.model_name("vitals") == "tsad-vitals"


def test_a_tracking_uri_without_scheme_is_refused(tsad_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mlflow:5000")
    with pytest.raises(ConfigError, match="'mlflow:5000' has no scheme"):
        Settings.from_env()


def test_half_configured_credentials_are_refused(tsad_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "tsad")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_PASSWORD is not set"):
        Settings.from_env()
