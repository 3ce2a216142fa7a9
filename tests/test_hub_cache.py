"""Named weights from the Hugging Face Hub cache: found there first, loaded strictly, their source told.

The cache is generated (random weights under torchvision's names, as timm publishes them) in
tmp_path, laid out as huggingface_hub lays it out; nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
import yaml

from resnet_demo.core.weights import (
    ARCHES,
    WeightsError,
    clear_model_cache,
    load_model,
    named_weights_on_disk,
    weights_spec,
)

from .conftest import ROOT, random_state_dict


def _without_batch_counts(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict as safetensors exports often are: no BatchNorm ``num_batches_tracked``."""
    return {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}


def test_the_named_weights_are_timms_copies_of_torchvisions() -> None:
    repos = {(a, w): weights_spec(arch=a, weights=w).hub_repo for a in ARCHES for w in ("imagenet-v2", "imagenet-v1")}
    assert repos[("resnet50", "imagenet-v2")] == "timm/resnet50.tv2_in1k"
    assert repos[("resnet50", "imagenet-v1")] == "timm/resnet50.tv_in1k"
    assert repos[("resnet152", "imagenet-v2")] == "timm/resnet152.tv2_in1k"
    assert repos[("resnet101", "imagenet-v1")] == "timm/resnet101.tv_in1k"
    assert len(set(repos.values())) == 6
    assert weights_spec(arch="resnet50", weights="random").hub_repo is None


def test_the_space_preloads_every_named_weights_repo() -> None:
    front_matter = yaml.safe_load((ROOT / "README.md").read_text().split("---")[1])
    expected = {f"{weights_spec(arch=a, weights=w).hub_repo} model.safetensors" for a in ARCHES for w in ("imagenet-v2", "imagenet-v1")}  # fmt: skip
    assert set(front_matter["preload_from_hub"]) == expected


@pytest.mark.parametrize("weights", ["imagenet-v2", "imagenet-v1"])
def test_hub_weights_load_and_compute_what_torchvision_computes(weights: str, hub_cache, torch_home: Path) -> None:
    from huggingface_hub import hf_hub_download

    repo = weights_spec(arch="resnet50", weights=weights).hub_repo
    state = random_state_dict("resnet50", seed=5)
    link = hub_cache(repo, _without_batch_counts(state))
    # The generated cache is one that huggingface_hub itself reads (offline: HF_HUB_OFFLINE=1 in the tests).
    assert hf_hub_download(repo, "model.safetensors", local_files_only=True) == str(link)

    loaded = load_model(arch="resnet50", weights=weights)
    assert loaded.source == f"the Hugging Face Hub cache ({repo})"
    assert not loaded.untrained and loaded.warning is None and loaded.spec.name == weights
    assert not torch_home.exists()  # torchvision's cache was never needed
    # torchvision's own ResNet-50 loads the same state_dict (torch fills the missing counts, as we do).
    reference = tvm.resnet50()
    reference.load_state_dict(_without_batch_counts(state), strict=True)
    reference.eval()
    ours = loaded.model.state_dict()
    assert ours.keys() == reference.state_dict().keys()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in ours.items())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), reference(x), atol=1e-4, rtol=0)


def test_hub_cache_wins_over_torchvisions_cache(hub_cache, fake_pretrained) -> None:
    repo = weights_spec(arch="resnet50", weights="imagenet-v2").hub_repo
    tv_file = fake_pretrained("resnet50", "imagenet-v2", seed=1)
    link = hub_cache(repo, random_state_dict("resnet50", seed=2))

    loaded = load_model(arch="resnet50", weights="imagenet-v2")
    assert loaded.source == "the Hugging Face Hub cache (timm/resnet50.tv2_in1k)"
    assert torch.equal(loaded.model.fc.weight, random_state_dict("resnet50", seed=2)["fc.weight"])

    assert named_weights_on_disk(arch="resnet50", weights="imagenet-v2")
    tv_file.unlink()
    assert named_weights_on_disk(arch="resnet50", weights="imagenet-v2")  # the Hub's file alone will do
    assert not named_weights_on_disk(arch="resnet50", weights="imagenet-v1")
    tv_file = fake_pretrained("resnet50", "imagenet-v2", seed=1)
    shutil.rmtree(link.parents[2])  # the repo leaves the Hub cache: torchvision's file is next
    assert named_weights_on_disk(arch="resnet50", weights="imagenet-v2")
    clear_model_cache()
    loaded = load_model(arch="resnet50", weights="imagenet-v2")
    assert loaded.source == f"torchvision's cache ({tv_file.name})" == "torchvision's cache (resnet50-11ad3fa6.pth)"
    assert torch.equal(loaded.model.fc.weight, random_state_dict("resnet50", seed=1)["fc.weight"])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("drop fc.bias", "does not fit resnet50 (wrong key names or shapes: 1 missing (fc.bias))"),
        ("nan fc.weight", "holds NaN or infinite values in fc.weight"),
    ],
)
def test_a_bad_hub_file_is_one_sentence_and_strictness_stays(change: str, says: str, hub_cache) -> None:
    state = _without_batch_counts(random_state_dict("resnet50"))
    if change == "drop fc.bias":
        del state["fc.bias"]
    else:
        state["fc.weight"][0, 0] = float("nan")
    hub_cache("timm/resnet50.tv2_in1k", state)
    with pytest.raises(WeightsError) as e:
        load_model(arch="resnet50", weights="imagenet-v2")
    problem = e.value.problem
    assert problem.startswith("model.safetensors of resnet50.tv2_in1k ") and says in problem, problem
    assert "num_batches_tracked" not in problem and "/" not in problem and "\n" not in problem
    assert "hf download timm/resnet50.tv2_in1k model.safetensors --force-download" in e.value.cli_fix
    # Asked to fall back, the app gets random weights, and is told where they came from.
    fallback = load_model(arch="resnet50", weights="imagenet-v2", fallback_to_random=True)
    assert fallback.untrained and fallback.source == "random initialisation" and says in (fallback.warning or "")


def test_missing_weights_name_the_hub_in_the_command_line_remedy_only(hub_cache) -> None:
    with pytest.raises(WeightsError) as e:
        load_model(arch="resnet101", weights="imagenet-v1")
    assert "hf download timm/resnet101.tv_in1k model.safetensors" in e.value.cli_fix
    assert "timm" not in e.value.problem and "/" not in e.value.problem
    assert load_model(arch="resnet101", weights="random").source == "random initialisation"
