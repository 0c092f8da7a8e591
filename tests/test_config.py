import pytest

from pipeline.config import ConfigError, DatasetSpec, RunConfig, Settings


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
    path = tsad_home.partition("landing", "vitals", "2026-01-02")
    assert path == tsad_home.home / "data" / "landing" / "vitals" / "date=2026-01-02"
    with pytest.raises(ConfigError, match="expected YYYY-MM-DD"):
        tsad_home.partition("landing", "vitals", "2026-01-02/../../x")


def test_overlapping_splits_are_rejected():
    base = RunConfig.load("vitals").model_dump()
    base["validation"] = base["train"]
    with pytest.raises(ValueError, match="overlap"):
        RunConfig.model_validate(base)
