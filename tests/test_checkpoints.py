"""A checkpoint is user input: every bad file or field is one sentence naming the file, and nothing loads.

Each case writes a small file in tmp_path. Metadata is checked before the weights are
fitted to a network, so a two-tensor "model" is enough for every refusal; one test loads a
complete checkpoint to show that the checks let good files through. Every case a
``.safetensors`` file can hold is also written as one, and gets the sentence of its ``.pth``.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from resnet_demo.__main__ import main
from resnet_demo.core import weights
from resnet_demo.core.errors import UserError
from resnet_demo.core.weights import CHECKPOINT_FORMAT, WeightsError, shared_model
from resnet_demo.explain import find_class, resolve_class

from .conftest import EXAMPLES, random_state_dict

CAT = EXAMPLES / "cat.jpg"
DROP = object()  # a field to leave out of the checkpoint
GOOD_PRE = {
    "resize_size": 128,
    "crop_size": 112,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25] * 3,
    "interpolation": "bilinear",
}


def _tiny_model(n: int = 3) -> dict[str, torch.Tensor]:
    return {"fc.weight": torch.zeros(n, 8), "fc.bias": torch.zeros(n)}


def _checkpoint(**fields: Any) -> dict[str, Any]:
    """A fine-tune checkpoint with ``fields`` replaced (``pre_<key>`` for a preprocessing key)."""
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "arch": "resnet50",
        "class_names": ["a", "b", "c"],
        "model": _tiny_model(),
        "preprocessing": dict(GOOD_PRE),
    }
    for key, value in fields.items():
        target, key = (ckpt["preprocessing"], key[4:]) if key.startswith("pre_") else (ckpt, key)
        if value is DROP:
            target.pop(key)
        else:
            target[key] = value
    return ckpt


class _RunsCode:
    """Unpickling this calls print: what weights_only loading must refuse."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this ran while loading",))


def _jpeg(path: Path) -> None:
    Image.new("RGB", (16, 16), (200, 30, 30)).save(path, format="JPEG")


def _text_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("photos/cat.txt", "not a checkpoint")


def _deflated(path: Path) -> None:
    """A torch.save zip re-packed with compression: 40 MB of zeros in kilobytes, a checkpoint bomb."""
    plain = path.with_name("plain.pth")
    torch.save({"fc.weight": torch.zeros(10_000_000)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert path.stat().st_size < 200_000


def _truncated(path: Path) -> None:
    torch.save(_tiny_model(), path)
    path.write_bytes(path.read_bytes()[:200])


def _with_nan(key: str, value: float) -> dict[str, torch.Tensor]:
    sd = {**_tiny_model(), "bn1.running_var": torch.ones(4)}
    sd[key] = sd[key].clone()
    sd[key].view(-1)[1] = value
    return sd


# id -> (what the file holds: an object to torch.save, or a function writing the file; what the sentence says)
FILES: dict[str, tuple[Any, str]] = {
    "text": (lambda p: p.write_text("learning rate 0.01\n"), "is not a PyTorch checkpoint"),
    "jpeg": (_jpeg, "is not a PyTorch checkpoint"),
    "empty": (lambda p: p.write_bytes(b""), "is empty, so it is not a PyTorch checkpoint"),
    "zip-of-text": (_text_zip, "is not a PyTorch checkpoint: it is a zip archive without torch.save's data.pkl"),
    "truncated": (_truncated, "is a damaged PyTorch checkpoint"),
    "compressed-zip": (_deflated, "was refused: its zip entries are compressed, which torch.save never does"),
    "runs-code": ({"fc.weight": torch.zeros(1), "x": _RunsCode()}, "is a pickle that could run code (it asks for"),
    "list": ([torch.zeros(1)], "is not a ResNet state_dict"),
    "nan-weight": (_with_nan("fc.weight", math.nan), "holds NaN or infinite values in fc.weight"),
    "inf-buffer": (_with_nan("bn1.running_var", math.inf), "holds NaN or infinite values in bn1.running_var"),
    "nan-in-finetune": (_checkpoint(model=_with_nan("fc.bias", -math.inf)), "NaN or infinite values in fc.bias"),
    "complex": ({"fc.weight": torch.zeros(3, 8, dtype=torch.complex64)}, "holds torch.complex64 values in fc.weight"),
    "no-preprocessing": (_checkpoint(preprocessing=DROP), "its preprocessing is missing"),
    "preprocessing-list": (_checkpoint(preprocessing=[224]), "its preprocessing is not a dict"),
    "no-model": (_checkpoint(model=DROP), "it has no model weights"),
    "model-not-tensors": (_checkpoint(model={"fc.weight": [0.0]}), "its model is not a state_dict of tensors"),
    "bad-arch": (_checkpoint(arch="resnet18"), "its arch is not one of resnet50, resnet101, resnet152"),
    "names-a-string": (_checkpoint(class_names="abc"), "class_names must be a list of strings, not 'abc'"),
    "names-not-strings": (_checkpoint(class_names=["a", 2, "c"]), "class_names must be a list of strings"),
    "names-too-few": (_checkpoint(class_names=["a", "b"]), "it names 2 classes but its head (fc) has 3 outputs"),
    "names-repeated": (_checkpoint(class_names=["a", "b", "a"]), "class name 'a' appears more than once"),
    "names-blank": (_checkpoint(class_names=["a", " ", "c"]), "class name ' ' is blank"),
    "names-long": (_checkpoint(class_names=["a", "b" * 10**6, "c"]), "class name 'bbbbbbbb"),
    "interpolation": (_checkpoint(pre_interpolation="bogus"), "interpolation must be one of nearest"),
    "std-zero": (_checkpoint(pre_std=[0.25, 0.0, 0.25]), "std must be a list of 3 numbers above 0"),
    "std-negative": (_checkpoint(pre_std=[-1, -1, -1]), "std must be a list of 3 numbers above 0"),
    "std-missing": (_checkpoint(pre_std=DROP), "std must be a list of 3 numbers above 0 (at least 1e-06), not None"),
    "mean-too-long": (_checkpoint(pre_mean=[0.5] * 4), "mean must be a list of 3 finite numbers"),
    "mean-strings": (_checkpoint(pre_mean=["0.5"] * 3), "mean must be a list of 3 finite numbers"),
    "mean-nan": (_checkpoint(pre_mean=[0.5, math.nan, 0.5]), "mean must be a list of 3 finite numbers"),
    "crop-zero": (_checkpoint(pre_crop_size=0), "crop_size must be an integer from 32 to 1024, not 0"),
    "crop-huge": (
        _checkpoint(pre_crop_size=4500, pre_resize_size=4500),
        "crop_size must be an integer from 32 to 1024",
    ),
    "crop-float": (_checkpoint(pre_crop_size=112.0), "crop_size must be an integer from 32 to 1024, not 112.0"),
    "crop-bool": (_checkpoint(pre_crop_size=True), "crop_size must be an integer from 32 to 1024, not True"),
    "resize-huge": (_checkpoint(pre_resize_size=10**6), "resize_size must be an integer from crop_size (112) to 1024"),
    "resize-below-crop": (_checkpoint(pre_resize_size=100), "resize_size must be an integer from crop_size (112)"),
    "resize-string": (
        _checkpoint(pre_resize_size="128"),
        "resize_size must be an integer from crop_size (112) to 1024",
    ),
    "resize-negative": (_checkpoint(pre_resize_size=-128), "not -128"),
}


def _holds_tensors(obj: Any) -> bool:
    return isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _fits_safetensors(content: Any) -> bool:
    """Whether a safetensors file can hold ``content``: a state_dict, or a checkpoint whose model
    (if any) is one; what only a pickle can hold (code, lists, non-tensor weights) cannot."""
    if callable(content) or not isinstance(content, dict):
        return False
    return _holds_tensors(content) or ("format" in content and _holds_tensors(content.get("model", {})))


def _write_safetensors(path: Path, content: dict[str, Any]) -> None:
    """``content`` written by safetensors itself: the tensors, and a checkpoint's other fields as JSON
    under the one metadata key, as the fine-tune routine writes them."""
    from safetensors.torch import save_file

    from resnet_demo.core.safetensors_files import METADATA_KEY

    if _holds_tensors(content):
        save_file(content, path)
    else:
        fields = {k: v for k, v in content.items() if k != "model"}
        save_file(content.get("model", {}), path, metadata={METADATA_KEY: json.dumps(fields)})


def _write(path: Path, content: Any) -> Path:
    """``content`` at ``path``: a function writes it, else torch.save or, for a .safetensors path, safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if callable(content):
        content(path)
    elif path.suffix == ".safetensors":
        _write_safetensors(path, content)
    else:
        torch.save(content, path)
    return path


def _assert_one_sentence(message: str, *, name: str, says: str, server: Path) -> None:
    assert message.startswith(name) or f" {name}" in message, message
    assert says in message, message
    assert "\n" not in message and message.endswith(".") and len(message) < 400
    assert str(server) not in message and "/" not in message  # the file's name, never a server path


@pytest.mark.parametrize("case", list(FILES))
def test_bad_checkpoint_is_one_sentence_and_nothing_is_cached(case: str, tmp_path: Path, torch_home: Path) -> None:
    content, says = FILES[case]
    path = _write(tmp_path / "server" / "a1b2c3" / "best.pth", content)
    with pytest.raises(WeightsError) as e:
        shared_model(arch="resnet50", weights=str(path))
    _assert_one_sentence(str(e.value), name="best.pth", says=says, server=tmp_path)
    assert not weights.shared_models()  # nothing loaded, nothing kept


SAFETENSORS_CASES = [case for case, (content, _) in FILES.items() if _fits_safetensors(content)]


@pytest.mark.parametrize("case", SAFETENSORS_CASES)
def test_bad_safetensors_gets_the_sentence_of_its_pth(case: str, tmp_path: Path, torch_home: Path) -> None:
    content, says = FILES[case]
    sentences = []
    for name in ("best.pth", "best.safetensors"):
        path = _write(tmp_path / "server" / "a1b2c3" / name, content)
        with pytest.raises(WeightsError) as e:
            shared_model(arch="resnet50", weights=str(path))
        sentences.append(str(e.value))
    _assert_one_sentence(sentences[1], name="best.safetensors", says=says, server=tmp_path)
    assert sentences[1] == sentences[0].replace("best.pth", "best.safetensors")
    assert not weights.shared_models()


def test_most_cases_are_tried_as_safetensors_too() -> None:
    # Guards the list above: only what a pickle alone can hold, and the files of other kinds, are left out.
    left_out = set(FILES) - set(SAFETENSORS_CASES)
    assert left_out == {
        "text", "jpeg", "empty", "zip-of-text", "truncated", "compressed-zip", "runs-code", "list", "model-not-tensors"
    }  # fmt: skip


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_good_finetune_checkpoint_loads(suffix: str, tmp_path: Path, torch_home: Path) -> None:
    path = _write(tmp_path / f"good{suffix}", _checkpoint(model=random_state_dict("resnet50", num_classes=3)))
    loaded = shared_model(arch="resnet50", weights=str(path))
    assert loaded.source == f"the file good{suffix}"
    assert loaded.spec.categories == ("a", "b", "c") and loaded.spec.preprocessing.crop_size == 112
    assert loaded.spec.preprocessing.std == (0.25, 0.25, 0.25)
    assert len(weights.shared_models()) == 1


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_head_that_does_not_fit_says_which_keys(suffix: str, tmp_path: Path, torch_home: Path) -> None:
    path = _write(tmp_path / f"heads{suffix}", _checkpoint())  # valid fields, but a two-tensor model
    with pytest.raises(WeightsError) as e:
        shared_model(arch="resnet50", weights=str(path))
    message = str(e.value)
    _assert_one_sentence(
        message, name=f"heads{suffix}", says="does not fit resnet50 (wrong key names or shapes", server=tmp_path
    )
    assert "missing (conv1.weight, bn1.weight, bn1.bias, ...)" in message
    assert "fc.weight [3, 8] where [3, 2048] is needed" in message
    assert not weights.shared_models()


@pytest.mark.parametrize(
    ("case", "suffix"),
    [(c, ".pth") for c in ("text", "jpeg", "nan-weight", "resize-huge", "crop-huge")]
    + [(c, ".safetensors") for c in ("nan-weight", "resize-huge", "crop-huge")],
)
def test_cli_says_one_line_and_exits_2(case: str, suffix: str, tmp_path: Path, capsys, torch_home: Path) -> None:
    content, says = FILES[case]
    path = _write(tmp_path / "ckpt" / f"mine{suffix}", content)
    assert main(["explain", str(CAT), "--weights", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: mine{suffix}") and err.count("\n") == 1 and says in err
    assert str(tmp_path) not in err
    assert not weights.shared_models() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("case", "suffix"),
    [(c, ".pth") for c in ("jpeg", "nan-in-finetune", "names-too-few", "std-zero")]
    + [(c, ".safetensors") for c in ("nan-in-finetune", "names-too-few", "std-zero")],
)
def test_app_upload_shows_the_same_sentence(case: str, suffix: str, tmp_path: Path, torch_home: Path) -> None:
    import gradio as gr

    from resnet_demo.ui.model_choice import UPLOAD, weights_status

    content, says = FILES[case]
    session = "k8x2mq9d0zv"  # uploads live in Gradio's folder, named by a hash
    path = _write(tmp_path / "gradio" / session / f"best{suffix}", content)
    with pytest.raises(WeightsError) as core:
        shared_model(arch="resnet50", weights=str(path))
    with pytest.raises(gr.Error) as shown:
        weights_status("resnet50", UPLOAD, str(path))
    assert shown.value.message == str(core.value)
    assert session not in shown.value.message and says in shown.value.message
    assert not weights.shared_models()


def test_missing_file_names_only_the_file(tmp_path: Path, torch_home: Path) -> None:
    with pytest.raises(WeightsError) as e:
        shared_model(arch="resnet50", weights=str(tmp_path / "gone" / "best.pth"))
    _assert_one_sentence(str(e.value), name="'best.pth'", says="no such file exists", server=tmp_path)


def test_unavailable_imagenet_weights_are_told_per_audience(torch_home: Path) -> None:
    from resnet_demo.ui.model_choice import app_message, resolve_model, status_markdown

    with pytest.raises(WeightsError) as e:
        weights.load_model(arch="resnet50", weights="imagenet-v2")
    cli, app = str(e.value), app_message(e.value)
    assert "--weights random" in cli and str(torch_home) in cli  # the command line's own machine
    assert "Weights menu" in app and "--" not in app and "/" not in app
    assert app.startswith(e.value.problem)
    banner = status_markdown(resolve_model(arch="resnet50", weights="imagenet-v2", checkpoint=None))
    assert "Weights menu" in banner and str(torch_home) not in banner and "--weights" not in banner


# -- class queries: user input, and names from checkpoints

NAMES = ["tabby", "Café crème", "straße", "x²", "tiger-cat"]


@pytest.mark.parametrize(
    ("query", "index"),
    [("²", 3), ("2", 2), ("CAFE\u0301", 1), ("café CRÈME", 1), ("STRASSE", 2), (" 4 ", 4), ("tiger", 4)],
)
def test_class_query_with_odd_unicode(query: str, index: int) -> None:
    assert resolve_class(categories=NAMES, query=query) == index


@pytest.mark.parametrize(
    ("query", "says"),
    [("٣", "No class matches '٣'"), ("9" * 5000, "No class matches '999"), ("7", "Class 7 does not exist")],
)
def test_class_query_that_fits_nothing_is_a_user_error(query: str, says: str) -> None:
    assert find_class(categories=NAMES, query=query) == []
    with pytest.raises(UserError, match=says):
        resolve_class(categories=NAMES, query=query)


def test_cli_target_superscript_is_one_line(tmp_path: Path, capsys, torch_home: Path) -> None:
    image = tmp_path / "small.png"
    Image.new("RGB", (64, 64), (40, 120, 200)).save(image)
    assert main(["explain", str(image), "--weights", "random", "--target", "²", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == "error: No class matches '²'. Give a class index or part of a class name.\n"


# -- a pruned model's weights without the widths it needs


def _pruned_state(seed: int = 0) -> tuple[dict[str, torch.Tensor], tuple[tuple[int, int], ...]]:
    from resnet_demo.core.model import resnet50
    from resnet_demo.slim import prune_model

    torch.manual_seed(seed)
    model = prune_model(resnet50().eval(), fraction=0.3, criterion="l1")
    return model.state_dict(), model.widths()


def test_pruned_state_dict_without_widths_says_they_are_missing(tmp_path: Path, torch_home: Path) -> None:
    from resnet_demo.core.model import ARCH_DEPTHS, standard_widths

    state, widths = _pruned_state()
    path = _write(tmp_path / "server" / "plain.pth", state)
    with pytest.raises(WeightsError) as e:
        shared_model(arch="resnet50", weights=str(path))
    message = str(e.value)
    blocks = [f"layer{s + 1}.{i}" for s, n in enumerate(ARCH_DEPTHS["resnet50"]) for i in range(n)]
    first = next(i for i, (w, s) in enumerate(zip(widths, standard_widths("resnet50"), strict=True)) if w != s)
    block_widths = f"{blocks[first]} has {widths[first][0]} of {standard_widths('resnet50')[first][0]} channels"
    _assert_one_sentence(message, name="plain.pth", says="holds a channel-pruned resnet50", server=tmp_path)
    assert "recorded widths" in message and block_widths in message and "wrong shape" not in message
    assert not weights.shared_models()
    # The same weights with their widths recorded, as the slim run saves them, load.
    ckpt = _checkpoint(model={**state, "fc.weight": torch.zeros(3, 2048), "fc.bias": torch.zeros(3)})
    loaded = shared_model(arch="resnet50", weights=str(_write(tmp_path / "slim.pth", {**ckpt, "widths": widths})))
    assert loaded.model.widths() == widths
    # Wrong shapes that no pruning makes (a convolution wider than the standard one) stay "wrong shapes".
    wider = random_state_dict("resnet50")
    wider["layer1.0.conv1.weight"] = torch.zeros(80, 64, 1, 1)
    with pytest.raises(WeightsError, match="does not fit resnet50 \\(wrong key names or shapes") as e:
        shared_model(arch="resnet50", weights=str(_write(tmp_path / "wide.pth", wider)))
    assert "recorded widths" not in str(e.value)


def test_class_names_lose_their_direction_controls(tmp_path: Path, torch_home: Path) -> None:
    names = ["\u202egpj.tac", "\u2066dog\u2069", "bird\u200f"]
    ckpt = _checkpoint(model=random_state_dict("resnet50", num_classes=3), class_names=names)
    loaded = shared_model(arch="resnet50", weights=str(_write(tmp_path / "rtl.pth", ckpt)))
    assert loaded.spec.categories == ("gpj.tac", "dog", "bird")
    assert resolve_class(categories=loaded.spec.categories, query="dog") == 1
    for name, says in (("\u202e\u202c", "is blank"), ("dog\u200e", "appears more than once")):
        bad = _checkpoint(class_names=["dog", name, "cat"])
        with pytest.raises(WeightsError, match=says):
            shared_model(arch="resnet50", weights=str(_write(tmp_path / "bad.pth", bad)))
    from resnet_demo.core.class_names import BIDI_CONTROLS, clean_class_name

    # U+202A..U+202E, U+2066..U+2069, U+200E, U+200F, U+061C: every one of them goes.
    every = "".join(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C))
    assert set(every) == BIDI_CONTROLS and clean_class_name(f"a{every}b") == "ab"
