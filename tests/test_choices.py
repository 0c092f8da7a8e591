"""Each list of allowed values is defined once (``pipeline.choices``); every registry, config
field and command-line option that offers those values matches its list."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from pipeline import cli
from pipeline.calibration import CALIBRATORS
from pipeline.choices import (
    CALIBRATION_METHODS,
    DETECTOR_NAMES,
    DEVICES,
    PROMOTION_METRICS,
    SELECTION_METRICS,
)
from pipeline.config import RunConfig
from pipeline.detectors.registry import DETECTORS
from pipeline.detectors.torch_base import TorchDetectorConfig
from pipeline.detectors.trainer import resolve_device


def test_every_registry_matches_its_list() -> None:
    assert set(CALIBRATORS) == set(CALIBRATION_METHODS)
    assert set(DETECTORS) == set(DETECTOR_NAMES)
    assert all(DETECTORS[name].name == name for name in DETECTORS)  # imported on demand


def test_config_fields_take_their_values_from_the_lists() -> None:
    fields = RunConfig.model_fields
    assert get_args(fields["device"].annotation) == DEVICES
    assert get_args(fields["calibration"].annotation) == CALIBRATION_METHODS
    assert get_args(fields["promotion_metric"].annotation) == PROMOTION_METRICS
    assert get_args(fields["selection_metric"].annotation) == SELECTION_METRICS
    assert set(SELECTION_METRICS) <= set(PROMOTION_METRICS)  # measured by the same evaluation
    assert get_args(TorchDetectorConfig.model_fields["device"].annotation) == DEVICES


@pytest.mark.parametrize("device", DEVICES)
def test_every_device_resolves_or_says_it_is_missing(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device(device)
    else:
        assert resolve_device(device).type in {"cpu", "cuda"}


def test_an_unknown_device_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="use one of auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.parametrize(
    ("command", "option", "values"),
    [
        (["train"], "--calibration", CALIBRATION_METHODS),
        (["train"], "--device", DEVICES),
        (["bench", "--data-root", "x", "--datasets", "SMD"], "--device", DEVICES),
        (["promote", "--dataset", "vitals"], "--metric", PROMOTION_METRICS),
    ],
)
def test_the_command_line_offers_each_list(
    command: list[str], option: str, values: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli.build_parser()
    for value in values:
        assert getattr(parser.parse_args([*command, option, value]), option[2:]) == value
    with pytest.raises(SystemExit):
        parser.parse_args([*command, option, "not-a-choice"])
    assert "invalid choice" in capsys.readouterr().err
