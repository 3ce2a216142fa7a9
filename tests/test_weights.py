from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from resnet_demo.core.model import build_model
from resnet_demo.core.weights import (
    CHECKPOINT_FORMAT,
    WeightsError,
    cache_path,
    fetch_weights_file,
    load_model,
    shared_model,
    state_dict_fit_problem,
    weights_spec,
)

from .conftest import random_state_dict

TV_WEIGHTS = {
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights),
    "resnet152": (tvm.resnet152, tvm.ResNet152_Weights),
}


@pytest.mark.parametrize("arch", ["resnet50", "resnet101", "resnet152"])
def test_pretrained_loads_like_torchvision_offline(arch: str, fake_pretrained, torch_home: Path) -> None:
    path = fake_pretrained(arch, "imagenet-v2", seed=11)
    builder, enum = TV_WEIGHTS[arch]
    assert path == torch_home / enum.IMAGENET1K_V2.url.rsplit("/", 1)[-1]

    loaded = load_model(arch=arch, weights="imagenet-v2")
    # torchvision's own loader reads the same cache file (its download is blocked).
    reference = builder(weights=enum.IMAGENET1K_V2).eval()

    assert not loaded.untrained and loaded.warning is None
    ours = loaded.model.state_dict()
    theirs = reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (loaded.model(x) - reference(x)).abs().max().item() < 1e-4
    assert loaded.spec.categories == tuple(enum.IMAGENET1K_V2.meta["categories"])
    assert loaded.spec.published["acc@1"] == enum.IMAGENET1K_V2.meta["_metrics"]["ImageNet-1K"]["acc@1"]


def test_v1_and_v2_specs_come_from_torchvision() -> None:
    v1 = weights_spec(arch="resnet50", weights="imagenet-v1")
    v2 = weights_spec(arch="resnet50", weights="imagenet-v2")
    assert v1.file_name == "resnet50-0676ba61.pth" and v2.file_name == "resnet50-11ad3fa6.pth"
    assert (v1.preprocessing.resize_size, v2.preprocessing.resize_size) == (256, 232)
    assert v1.preprocessing.crop_size == v2.preprocessing.crop_size == 224
    assert v2.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    assert len(v1.categories) == 1000 and v1.categories[281] == "tabby"
    assert v1.published["acc@1"] == pytest.approx(76.13) and v2.published["acc@1"] == pytest.approx(80.858)


def test_imagenet_v1_loads_from_its_own_file(fake_pretrained) -> None:
    fake_pretrained("resnet50", "imagenet-v1", seed=2)
    loaded = load_model(arch="resnet50", weights="imagenet-v1")
    assert torch.equal(loaded.model.fc.weight, random_state_dict("resnet50", seed=2)["fc.weight"])
    with pytest.raises(WeightsError):  # V2's file is a different one, and it is absent
        load_model(arch="resnet50", weights="imagenet-v2")


def test_missing_file_offline_gives_clear_error(torch_home: Path) -> None:
    with pytest.raises(WeightsError) as e:
        load_model(arch="resnet50", weights="imagenet-v2")
    msg = str(e.value)
    # The command line's remedy names this machine's cache; the problem alone (what the app shows) does not.
    assert str(torch_home / "resnet50-11ad3fa6.pth") in msg
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in msg
    assert "--weights PATH" in msg and "downloads are off" in msg
    assert "resnet50-11ad3fa6.pth" in e.value.problem and "/" not in e.value.problem
    assert "--weights" not in e.value.problem


def test_failed_download_gives_clear_error(torch_home: Path) -> None:
    with pytest.raises(WeightsError, match=r"could not be downloaded \(OSError\)\. \(downloads are blocked") as e:
        load_model(arch="resnet101", weights="imagenet-v1", download=True)
    assert "resnet101-63fe2227.pth" in str(e.value)
    assert str(torch_home) not in e.value.problem and "blocked" not in e.value.problem
    assert not (torch_home / "resnet101-63fe2227.pth").exists()


def test_fetch_weights_file_finds_the_cached_file_or_says_why_not(fake_pretrained, torch_home: Path) -> None:
    spec = weights_spec(arch="resnet50", weights="imagenet-v1")
    fetch = functools.partial(
        fetch_weights_file,
        url=spec.url,
        file_name=spec.file_name,
        what="the test's weights",
        progress=False,
        cli_fix=lambda path: f"place it at {path}",
    )
    with pytest.raises(
        WeightsError, match=r"the test's weights \(resnet50-0676ba61\.pth\) are not in torchvision's cache"
    ) as e:
        fetch(download=False)
    assert "downloads are off" in e.value.problem and str(torch_home) not in e.value.problem
    assert e.value.cli_fix.endswith(f"place it at {cache_path(spec)}")  # the remedy gets the path; the problem never
    with pytest.raises(WeightsError, match=r"could not be downloaded \(OSError\)"):
        fetch(download=True)  # the tests' downloader refuses
    path = fake_pretrained("resnet50", "imagenet-v1")
    assert fetch(download=False) == path == cache_path(spec)


def test_state_dict_fit_problem_names_the_first_keys_of_each_mismatch() -> None:
    model = build_model("resnet50", num_classes=3)
    sd = model.state_dict()
    assert state_dict_fit_problem(model, sd) is None
    sd = dict(sd)
    del sd["fc.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["fc.weight"] = torch.zeros(10, 2048)
    problem = state_dict_fit_problem(model, sd)
    assert problem == (
        "1 missing (fc.bias); 1 unexpected (extra.weight); "
        "1 of the wrong shape (fc.weight [10, 2048] where [3, 2048] is needed)"
    )
    without_layer4 = {k: v for k, v in model.state_dict().items() if not k.startswith("layer4.")}
    assert state_dict_fit_problem(model, without_layer4) == (
        "60 missing (layer4.0.conv1.weight, layer4.0.bn1.weight, layer4.0.bn1.bias, ...)"
    )


def test_fallback_to_random_is_explicit_and_labelled(torch_home: Path) -> None:
    loaded = load_model(arch="resnet50", weights="imagenet-v2", fallback_to_random=True)
    assert loaded.untrained
    assert "UNTRAINED" in loaded.status and "UNTRAINED" in (loaded.warning or "")
    assert "resnet50-11ad3fa6.pth" in (loaded.warning or "")
    assert load_model(arch="resnet50", weights="random").warning is None


def test_wrong_shape_gives_clear_error(fake_pretrained) -> None:
    sd = random_state_dict("resnet50")
    sd["fc.weight"] = sd["fc.weight"][:10]
    path = fake_pretrained("resnet50", "imagenet-v2", state_dict=sd)
    with pytest.raises(WeightsError, match="does not fit resnet50") as e:
        load_model(arch="resnet50", weights="imagenet-v2")
    assert str(path) in str(e.value) and "fc.weight" in str(e.value)


def test_wrong_key_gives_clear_error(fake_pretrained) -> None:
    sd = random_state_dict("resnet50")
    sd["layer1.0.conv_one.weight"] = sd.pop("layer1.0.conv1.weight")
    fake_pretrained("resnet50", "imagenet-v2", state_dict=sd)
    with pytest.raises(WeightsError, match="wrong key names or shapes") as e:
        load_model(arch="resnet50", weights="imagenet-v2")
    assert "layer1.0.conv1.weight" in str(e.value)


def test_other_arch_file_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r101.pth"
    torch.save(random_state_dict("resnet101"), path)
    with pytest.raises(WeightsError, match="does not fit resnet50"):
        load_model(arch="resnet50", weights=str(path))


def test_corrupt_file_gives_clear_error(torch_home: Path) -> None:
    path = cache_path(weights_spec(arch="resnet50", weights="imagenet-v2"))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(WeightsError, match="resnet50-11ad3fa6.pth is a damaged PyTorch checkpoint") as e:
        load_model(arch="resnet50", weights="imagenet-v2")
    assert str(path) in str(e.value)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)
    with pytest.raises(WeightsError, match="Refused to load"):
        load_model(arch="resnet50", weights=str(path))
    assert not marker.exists()


def test_local_state_dict_file(tmp_path: Path) -> None:
    sd = random_state_dict("resnet50", seed=4)
    path = tmp_path / "mine.pth"
    torch.save(sd, path)
    loaded = load_model(arch="resnet50", weights=str(path))
    assert torch.equal(loaded.model.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])
    assert loaded.spec.num_classes == 1000 and not loaded.untrained
    assert "mine.pth" in loaded.status


def test_finetune_checkpoint_carries_class_names(tmp_path: Path) -> None:
    sd = random_state_dict("resnet50", num_classes=3)
    path = tmp_path / "ft.pth"
    pre = {"resize_size": 128, "crop_size": 112, "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear"}
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "arch": "resnet50",
            "class_names": ["a", "b", "c"],
            "model": sd,
            "preprocessing": pre,
        },
        path,
    )
    loaded = load_model(arch="resnet50", weights=str(path))
    assert loaded.spec.categories == ("a", "b", "c")
    assert loaded.model.fc.out_features == 3
    assert loaded.spec.preprocessing.crop_size == 112
    with pytest.raises(WeightsError, match="fine-tuned resnet50 checkpoint, not resnet101"):
        load_model(arch="resnet101", weights=str(path))


def test_unknown_name_and_arch() -> None:
    with pytest.raises(WeightsError, match="Unknown weights 'imagenet-v3'"):
        weights_spec(arch="resnet50", weights="imagenet-v3")
    with pytest.raises(WeightsError, match="Unknown architecture 'resnet18'"):
        weights_spec(arch="resnet18", weights="imagenet-v2")


def test_get_model_is_cached_and_frozen(torch_home: Path) -> None:
    a = shared_model(arch="resnet50", weights="random")
    b = shared_model(arch="resnet50", weights="random")
    assert a is b
    assert not any(p.requires_grad for p in a.model.parameters())
    assert not a.model.training
