""".safetensors files: refused in one sentence when they are none or broken, written by the fine-tune
routine with their checkpoint fields, and read wherever a .pth is (the API, the command line).

The checks a .safetensors shares with a .pth (shapes, NaN, every metadata field) are in
tests/test_checkpoints.py, each case written in both formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from resnet_demo.__main__ import main
from resnet_demo.core import weights
from resnet_demo.core.safetensors_files import METADATA_KEY, read_safetensors
from resnet_demo.core.weights import WeightsError, load_model, shared_model

from .conftest import EXAMPLES, SHAPES, random_state_dict

TINY = {"fc.weight": torch.zeros(3, 8), "fc.bias": torch.zeros(3)}


def _cut(keep: int) -> Any:
    """A file of TINY cut after ``keep`` bytes (negative: that many bytes short)."""

    def write(path: Path) -> None:
        save_file(TINY, path)
        path.write_bytes(path.read_bytes()[:keep])

    return write


def _with_metadata(text: str) -> Any:
    return lambda path: save_file(TINY, path, metadata={METADATA_KEY: text})


def _bad_header(path: Path) -> None:
    header = b'{"fc.weight": {"dtype": "F32", "shape": [3, 8]}}'  # no data_offsets
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(96))


# id -> (a function writing the file, what the sentence says)
FILES: dict[str, tuple[Any, str]] = {
    "text": (lambda p: p.write_text("learning rate 0.01\n"), "is not a safetensors file: it does not start with"),
    "jpeg": (lambda p: Image.new("RGB", (8, 8)).save(p, format="JPEG"), "is not a safetensors file"),
    "torch-zip": (lambda p: torch.save(TINY, p), "is not a safetensors file"),
    "empty": (lambda p: p.write_bytes(b""), "is empty, so it is not a safetensors file"),
    "folder": (lambda p: p.mkdir(), "is not a file, so it is not a safetensors file"),
    "header-cut": (_cut(40), "is a damaged safetensors file (its header is cut short)"),
    "data-cut": (_cut(-20), "is a damaged safetensors file (SafetensorError while reading it)"),
    "header-wrong": (_bad_header, "is a damaged safetensors file"),
    "metadata-not-json": (_with_metadata("{'arch': 'resnet50'"), "its resnet_demo metadata is not JSON"),
    "metadata-deep": (_with_metadata("[" * 100_000), "its resnet_demo metadata is not JSON"),
    "metadata-list": (_with_metadata('["resnet50"]'), "its resnet_demo metadata is not a JSON object"),
    "metadata-no-format": (_with_metadata('{"arch": "resnet50"}'), "is not a ResNet state_dict"),
}


@pytest.mark.parametrize("case", list(FILES))
def test_a_file_that_is_no_safetensors_is_one_sentence(case: str, tmp_path: Path, torch_home: Path) -> None:
    write, says = FILES[case]
    path = tmp_path / "server" / "f00d" / "mine.safetensors"
    path.parent.mkdir(parents=True)
    write(path)
    with pytest.raises(WeightsError) as e:
        shared_model(arch="resnet50", weights=str(path))
    message = str(e.value)
    assert message.startswith("mine.safetensors ") and says in message, message
    assert "\n" not in message and message.endswith(".") and len(message) < 400
    assert str(tmp_path) not in message and "/" not in message
    assert not weights.shared_models()


def _pruned_finetuned() -> torch.nn.Module:
    """A 3-class, channel-pruned ResNet-50 with every weight and statistic random."""
    from resnet_demo.core.model import build_model
    from resnet_demo.slim import prune_model

    model = build_model("resnet50", num_classes=len(SHAPES))
    state = random_state_dict("resnet50", seed=4)
    state["fc.weight"], state["fc.bias"] = torch.randn(len(SHAPES), 2048) * 0.05, torch.zeros(len(SHAPES))
    model.load_state_dict(state)
    return prune_model(model.eval(), fraction=0.3, criterion="l1")


def test_a_finetuned_checkpoint_round_trips_through_safetensors(tmp_path: Path, torch_home: Path) -> None:
    from resnet_demo.core.weights import Preprocessing
    from resnet_demo.finetune import FinetuneConfig
    from resnet_demo.finetune.checkpoints import Progress, atomic_save, atomic_save_safetensors, make_checkpoint

    model = _pruned_finetuned()
    ckpt = make_checkpoint(
        cfg=FinetuneConfig(arch="resnet50", lr=0.02),
        class_names=SHAPES,
        model=model,
        preprocessing=Preprocessing(resize_size=73, crop_size=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)),
        progress=Progress(epoch=3, best_top1=87.5),
        total_steps=30,
        val_top1=87.5,
    )
    atomic_save(ckpt, tmp_path / "best.pth")
    atomic_save_safetensors(checkpoint=ckpt, path=tmp_path / "best.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "best.safetensors"]  # no temporaries left

    # Every field but the weights is JSON under one key; the weights are the file's tensors.
    with safe_open(str(tmp_path / "best.safetensors"), framework="pt") as f:
        fields = json.loads(f.metadata()[METADATA_KEY])
        assert set(f.keys()) == set(ckpt["model"])  # noqa: SIM118 - safe_open is no dict
    assert fields == json.loads(json.dumps({k: v for k, v in ckpt.items() if k != "model"}))
    assert fields["config"]["lr"] == 0.02 and fields["class_names"] == list(SHAPES)
    assert read_safetensors(path=tmp_path / "best.safetensors")["widths"] == ckpt["widths"]

    pth = load_model(arch="resnet50", weights=str(tmp_path / "best.pth"))
    st = load_model(arch="resnet50", weights=str(tmp_path / "best.safetensors"))
    assert st.spec.categories == pth.spec.categories == SHAPES
    assert st.spec.preprocessing == pth.spec.preprocessing and st.spec.preprocessing.mean == (0.5, 0.4, 0.3)
    assert st.spec.widths == pth.spec.widths == model.widths() and st.model.widths() == model.widths()
    assert st.spec.label == "fine-tuned: best.safetensors" and st.source == "the file best.safetensors"
    theirs = pth.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in st.model.state_dict().items())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(st.model(x), model(x))

    # The checkpoint to resume from keeps its optimizer state in last.pth only.
    with pytest.raises(ValueError, match="optimizer state has no place"):
        atomic_save_safetensors(checkpoint={**ckpt, "optimizer": {}}, path=tmp_path / "last.safetensors")
    assert not (tmp_path / "last.safetensors").exists()


def test_explain_takes_a_safetensors_file(tmp_path: Path, capsys, torch_home: Path) -> None:
    from .conftest import save_checkpoint
    from .test_checkpoints import _write_safetensors

    model = _pruned_finetuned()
    pth = save_checkpoint(model, tmp_path / "shapes.pth", crop=64)
    st = tmp_path / "shapes.safetensors"
    _write_safetensors(st, torch.load(pth, weights_only=True))  # the same checkpoint, as safetensors
    summaries = []
    for path in (pth, st):
        out = tmp_path / f"out-{path.suffix[1:]}"
        args = ["explain", str(EXAMPLES / "cat.jpg"), "--weights", str(path), "--stage", "layer4", "--json"]
        assert main([*args, "--out", str(out)]) == 0
        summaries.append(json.loads(capsys.readouterr().out))
        assert (out / "summary.json").is_file()
    assert {p["label"] for p in summaries[1]["predictions"]} == set(SHAPES)
    assert summaries[1]["predictions"] == summaries[0]["predictions"]
    assert summaries[1]["untrained"] is False
