"""What an attacker could hand the pipeline: crafted model files, names and dates that climb out."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline import cli, steps
from pipeline.config import ConfigError, DatasetSpec, Settings
from pipeline.data.windows import Segments
from pipeline.detectors.registry import load_detector, make_detector
from pipeline.scoring import ModelBundle


class _Payload:
    """Unpickling this writes a file: proof that a loader ran code it was handed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.fixture(scope="module")
def series() -> Segments:
    return Segments.single(np.random.default_rng(0).normal(size=(400, 3)).astype(np.float32))


def test_torch_weights_that_carry_code_are_refused(series: Segments, tmp_path: Path) -> None:
    params = {"window": 8, "epochs": 1, "device": "cpu", "hidden": [8], "code_size": 4}
    saved = make_detector("dense_ae", **params).fit(series).save(tmp_path / "detector")
    marker = tmp_path / "marker"
    torch.save({"weight": _Payload(marker)}, saved / "weights.pt")

    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_detector(saved)
    assert not marker.exists()


def test_classical_arrays_that_carry_code_are_refused(series: Segments, tmp_path: Path) -> None:
    saved = make_detector("pca").fit(series).save(tmp_path / "detector")
    marker = tmp_path / "marker"
    payload = np.array([_Payload(marker)], dtype=object)
    np.savez(saved / "model.npz", components=payload, mean=payload)

    with pytest.raises(ValueError, match="allow_pickle=False"):
        load_detector(saved)
    assert not marker.exists()


def test_a_spec_snapshot_with_python_tags_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    (tmp_path / "calibration.json").write_text('{"method": "percentile", "threshold": 1.0}')
    touch = "!!python/object/apply:pathlib.Path.touch"
    (tmp_path / "spec.yaml").write_text(
        f"{touch} [!!python/object/apply:pathlib.Path ['{marker}']]"
    )
    with pytest.raises(yaml.constructor.ConstructorError):
        ModelBundle.load(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--dataset", "../../etc", "--date", "2026-01-05"], "invalid dataset name '../../etc'"),
        (["--dataset", "/etc/passwd", "--date", "2026-01-05"], "invalid dataset name"),
        (["--dataset", "unknown", "--date", "2026-01-05"], "unknown dataset 'unknown'"),
        (["--dataset", "vitals", "--date", "2026-01-05/../../x"], "expected YYYY-MM-DD"),
        (["--dataset", "vitals", "--date", "2026-02-30"], "invalid date '2026-02-30'"),
    ],
)
def test_cli_refuses_names_and_dates_that_could_escape(
    tsad_home: Settings, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    assert cli.main(["validate", *args]) == 1
    assert problem in capsys.readouterr().err
    assert not (tsad_home.home / "data").exists()


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"run_config": "../../etc/passwd"}, "invalid run config name"),
        ({"dataset": "../vitals"}, "invalid dataset name"),
        ({"detector": "../../tmp/evil"}, "unknown detector '../../tmp/evil'"),
    ],
)
def test_training_params_are_validated(params: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace(".", r"\.")):
        steps.run_config_from_params(params)


def test_a_partition_linked_outside_the_home_is_refused(
    tsad_home: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    zone = tsad_home.home / "data" / "landing"
    zone.mkdir(parents=True)
    (zone / "vitals").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="escapes"):
        tsad_home.partition("landing", "vitals", dt.date(2026, 1, 5))


def test_dataset_specs_load_only_from_the_configs_directory() -> None:
    with pytest.raises(ConfigError, match="invalid dataset name"):
        DatasetSpec.load("vitals/../../../etc/passwd")
