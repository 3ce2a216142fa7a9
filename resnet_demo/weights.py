"""Named weights, local checkpoints and clear errors.

Weights are named per architecture:

* ``imagenet-v2`` (default) and ``imagenet-v1``: torchvision's published ImageNet
  weights. Their URL, file name, preprocessing, category names and published figures
  are read from torchvision's weights enums, never copied by hand. The file lives in
  torchvision's cache, ``$TORCH_HOME/hub/checkpoints/<file name>``, and is downloaded
  there when missing (unless downloads are off).
* a path to a local ``.pth`` file: a torchvision-style state_dict, or a checkpoint
  written by this project's fine-tune routine (it carries its class names).
* ``random``: Kaiming-initialised, untrained weights.

Every file is read with ``torch.load(..., weights_only=True)``, so a pickle that
would run code is refused. Nothing falls back to random weights unless the caller
asks for it, and a model on random weights says so (:attr:`LoadedModel.untrained`).
"""

from __future__ import annotations

import os
import pickle
import re
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from .devices import resolve_device
from .errors import UserError
from .model import ARCH_DEPTHS, ResNet, build_model

__all__ = [
    "ARCHES",
    "CHECKPOINT_FORMAT",
    "DEFAULT_WEIGHTS",
    "NAMED_WEIGHTS",
    "LoadedModel",
    "Preprocessing",
    "WeightsError",
    "WeightsSpec",
    "cache_path",
    "shared_model",
    "load_model",
    "offline",
    "weights_spec",
]

ARCHES: tuple[str, ...] = tuple(ARCH_DEPTHS)
DEFAULT_WEIGHTS = "imagenet-v2"
NAMED_WEIGHTS: tuple[str, ...] = ("imagenet-v2", "imagenet-v1", "random")

# Marks a checkpoint written by resnet_demo.finetune.
CHECKPOINT_FORMAT = "resnet-explorer-checkpoint/1"

_TV_ENUMS = {
    "resnet50": tvm.ResNet50_Weights,
    "resnet101": tvm.ResNet101_Weights,
    "resnet152": tvm.ResNet152_Weights,
}
_TV_MEMBERS = {"imagenet-v1": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"}

OFFLINE_ENV = "RESNET_DEMO_OFFLINE"


class WeightsError(UserError):
    """Weights could not be had. The message names the file, the cause and the fix."""


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side, center crop, normalise: the eval transform of a weights entry."""

    resize_size: int = 232
    crop_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return {
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            resize_size=int(d["resize_size"]),
            crop_size=int(d["crop_size"]),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation", "bilinear")),
        )


@dataclass(frozen=True)
class WeightsSpec:
    """Where a set of weights comes from and what it expects and promises."""

    arch: str
    name: str  # "imagenet-v2", "imagenet-v1", "random", or the file's path
    label: str  # for people: "ImageNet V2 (torchvision)"
    categories: tuple[str, ...]
    preprocessing: Preprocessing
    pretrained: bool
    url: str | None = None
    file_name: str | None = None
    path: Path | None = None  # a local file given by the user
    published: dict[str, float] = field(default_factory=dict)  # acc@1, acc@5, params, GMACs

    @property
    def num_classes(self) -> int:
        return len(self.categories)


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with the spec of its weights.

    ``warning`` is set when the caller allowed a fallback and got random weights
    instead of the ones asked for; it says why and what to do.
    """

    model: ResNet
    spec: WeightsSpec
    warning: str | None = None

    @property
    def untrained(self) -> bool:
        return not self.spec.pretrained

    @property
    def status(self) -> str:
        """One line for people: which weights are loaded, and their published accuracy."""
        if self.untrained:
            return f"{self.spec.arch} on random weights: UNTRAINED, predictions are meaningless"
        acc = self.spec.published.get("acc@1")
        acc_text = f", published ImageNet top-1 {acc:.1f}%" if acc is not None else ""
        return f"{self.spec.arch}, {self.spec.label}{acc_text}"


def offline() -> bool:
    """True when downloads are switched off (``RESNET_DEMO_OFFLINE=1``)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}


def _check_arch(arch: str) -> None:
    if arch not in ARCH_DEPTHS:
        raise WeightsError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHES)}.")


def _imagenet_categories() -> tuple[str, ...]:
    return tuple(tvm.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _torchvision_spec(arch: str, name: str) -> WeightsSpec:
    entry = getattr(_TV_ENUMS[arch], _TV_MEMBERS[name])
    t = entry.transforms()
    metrics = entry.meta["_metrics"]["ImageNet-1K"]
    return WeightsSpec(
        arch=arch,
        name=name,
        label=f"ImageNet {name[-2:].upper()} (torchvision)",
        categories=tuple(entry.meta["categories"]),
        preprocessing=Preprocessing(
            resize_size=int(t.resize_size[0]),
            crop_size=int(t.crop_size[0]),
            mean=tuple(t.mean),
            std=tuple(t.std),
            interpolation=t.interpolation.value,
        ),
        pretrained=True,
        url=entry.url,
        file_name=entry.url.rsplit("/", 1)[-1],
        published={
            "acc@1": float(metrics["acc@1"]),
            "acc@5": float(metrics["acc@5"]),
            "params": float(entry.meta["num_params"]),
            "gmacs": float(entry.meta["_ops"]),
        },
    )


def weights_spec(*, arch: str, weights: str = DEFAULT_WEIGHTS) -> WeightsSpec:
    """Describe ``weights`` (a name or a file path) for ``arch`` without loading anything.

    For a local file, the categories and preprocessing are read from the file.
    """
    _check_arch(arch)
    if weights in _TV_MEMBERS:
        return _torchvision_spec(arch, weights)
    if weights == "random":
        return WeightsSpec(
            arch=arch,
            name="random",
            label="random (untrained)",
            categories=_imagenet_categories(),
            preprocessing=_torchvision_spec(arch, DEFAULT_WEIGHTS).preprocessing,
            pretrained=False,
        )
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(
            f"Unknown weights {weights!r}: not one of {', '.join(NAMED_WEIGHTS)}, "
            f"and no file exists at {path}. Pass a weights name or the path of a .pth file."
        )
    spec, _ = _read_local(arch, path)
    return spec


def cache_path(spec: WeightsSpec) -> Path:
    """Where torchvision's cache keeps the file of a named weights entry."""
    if spec.file_name is None:
        raise ValueError(f"{spec.name} weights have no file in torchvision's cache")
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.file_name


def _safe_load(path: Path) -> Any:
    """torch.load that refuses code-running pickles, with errors that say what was wrong."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"Refused to load {path}: it holds more than tensors (a pickle that could run code), "
            f"so it was not loaded. Use a plain state_dict saved with torch.save(model.state_dict()). "
            f"({str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsError(
            f"Could not read {path}: the file is corrupt or not a PyTorch checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}). "
            f"Delete it and download it again, or pass --weights PATH with a good file."
        ) from e


def _read_local(arch: str, path: Path) -> tuple[WeightsSpec, dict[str, torch.Tensor]]:
    obj = _safe_load(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        if obj.get("arch") != arch:
            raise WeightsError(
                f"{path} is a fine-tuned {obj.get('arch')} checkpoint, not {arch}. "
                f"Choose {obj.get('arch')} to load it."
            )
        state_dict = obj["model"]
        categories = tuple(str(c) for c in obj["class_names"])
        preprocessing = Preprocessing.from_dict(obj["preprocessing"])
        label = f"fine-tuned: {path.name}"
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state_dict = obj
        fc = state_dict.get("fc.weight")
        n = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.ndim == 2 else 1000
        categories = _imagenet_categories() if n == 1000 else tuple(f"class {i}" for i in range(n))
        preprocessing = _torchvision_spec(arch, DEFAULT_WEIGHTS).preprocessing
        label = f"file: {path.name}"
    else:
        raise WeightsError(
            f"{path} is not a ResNet state_dict: expected a dict of tensors "
            f"(torch.save(model.state_dict())) or a resnet_demo fine-tune checkpoint."
        )
    spec = WeightsSpec(
        arch=arch,
        name=str(path),
        label=label,
        categories=categories,
        preprocessing=preprocessing,
        pretrained=True,
        path=path,
    )
    return spec, state_dict


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: Path, arch: str) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        # PyTorch lists every missing key; the first lines are enough to see the cause.
        detail = " ".join(str(e).split())[:400]
        raise WeightsError(
            f"{source} does not fit {arch}: wrong key names or shapes ({detail}). "
            f"Check that the file was saved from a torchvision-compatible {arch}, "
            f"or pass --weights PATH with the right file."
        ) from e


def _fetch(spec: WeightsSpec, *, download: bool, progress: bool) -> Path:
    path = cache_path(spec)
    if path.exists():
        return path
    fix = (
        f"Fix: download {spec.url} and place it at {path}, or pass --weights PATH "
        f"(a .pth state_dict), or --weights random for an untrained model."
    )
    if not download:
        raise WeightsError(
            f"{spec.label} weights for {spec.arch} are not in the cache ({path}) "
            f"and downloads are off ({OFFLINE_ENV}=1). {fix}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    match = re.search(torch.hub.HASH_REGEX, path.name)
    try:
        torch.hub.download_url_to_file(spec.url, str(path), match.group(1) if match else None, progress=progress)
    except Exception as e:  # noqa: BLE001 - urllib, ssl, socket and hash errors all mean "not available"
        raise WeightsError(
            f"{spec.label} weights for {spec.arch} are not in the cache ({path}) and could not be "
            f"downloaded ({type(e).__name__}: {e}). {fix}"
        ) from e
    return path


def load_model(
    *,
    arch: str,
    weights: str = DEFAULT_WEIGHTS,
    fallback_to_random: bool = False,
    download: bool | None = None,
    progress: bool = False,
) -> LoadedModel:
    """Build ``arch`` and load ``weights`` (a name or a path) into it, in eval mode.

    ``download=None`` downloads missing named weights unless ``RESNET_DEMO_OFFLINE=1``.
    With ``fallback_to_random=True``, weights that cannot be had give a random model
    with a ``warning`` that explains why; otherwise :class:`WeightsError` is raised.
    """
    spec = weights_spec(arch=arch, weights=weights)
    try:
        if spec.name == "random":
            model = build_model(arch)
        elif spec.path is not None:
            spec, state_dict = _read_local(arch, spec.path)
            model = build_model(arch, num_classes=spec.num_classes)
            _load_strict(model, state_dict, source=spec.path, arch=arch)
        else:
            path = _fetch(spec, download=(not offline()) if download is None else download, progress=progress)
            model = build_model(arch)
            _load_strict(model, _safe_load(path), source=path, arch=arch)
    except WeightsError as e:
        if not fallback_to_random:
            raise
        random_spec = weights_spec(arch=arch, weights="random")
        return LoadedModel(build_model(arch).eval(), random_spec, warning=f"{e} Running on random weights: UNTRAINED.")
    return LoadedModel(model.eval(), spec)


_CACHE: dict[tuple[str, str, bool, str], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def shared_model(
    *, arch: str, weights: str = DEFAULT_WEIGHTS, fallback_to_random: bool = False, device: str = "cpu"
) -> LoadedModel:
    """:func:`load_model`, loaded once per (arch, weights, device) and shared read-only.

    Callers must not modify the returned model: every user of the process shares it.
    """
    target = resolve_device(device)
    key = (arch, weights, fallback_to_random, str(target))
    with _CACHE_LOCK:  # one lock: two users asking for the same model load it once
        if key not in _CACHE:
            loaded = load_model(arch=arch, weights=weights, fallback_to_random=fallback_to_random)
            for p in loaded.model.parameters():
                p.requires_grad_(False)
            loaded.model.to(target)
            _CACHE[key] = loaded
        return _CACHE[key]


def clear_model_cache() -> None:
    """Forget every cached model (tests, or after new weights were placed in the cache)."""
    with _CACHE_LOCK:
        _CACHE.clear()
