"""The transfer table's facts about torchvision's models, checked against torchvision itself."""

from __future__ import annotations

import inspect

import pytest

from resnet_demo.transfer.weights import FROZEN_BATCHNORM, MODELS, torchvision_builder, transfer_spec


@pytest.mark.parametrize("model", MODELS["detect"])
def test_frozen_batchnorm_is_what_torchvisions_builder_uses(model: str) -> None:
    # torchvision's v1 detectors pass norm_layer=FrozenBatchNorm2d to their trained backbone;
    # the v2 ones keep BatchNorm2d. Read from the builder itself, since building with weights
    # would download them.
    spec = transfer_spec(task="detect", model=model)
    frozen = "FrozenBatchNorm2d" in inspect.getsource(torchvision_builder(spec))
    assert (model in FROZEN_BATCHNORM) == frozen
    assert spec.frozen_batchnorm == frozen


@pytest.mark.parametrize("model", MODELS["segment"])
def test_segmentation_models_keep_batchnorm(model: str) -> None:
    assert not transfer_spec(task="segment", model=model).frozen_batchnorm
