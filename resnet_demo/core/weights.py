"""Named weights, local checkpoints and clear errors.

Weights are named per architecture:

* ``imagenet-v2`` (default) and ``imagenet-v1``: torchvision's published ImageNet
  weights. Their URL, file name, preprocessing, category names and published figures
  are read from torchvision's weights enums, never copied by hand. They are looked for
  first in the Hugging Face Hub cache, where timm publishes the same weights under
  torchvision's names (``timm/resnet50.tv2_in1k``, ``timm/resnet50.tv_in1k``, ...; a
  Space pre-loads them at build time), then in torchvision's cache,
  ``$TORCH_HOME/hub/checkpoints/<file name>``, where they are downloaded when missing
  (unless downloads are off). :attr:`LoadedModel.source` says where they came from.
* a path to a local ``.pth`` or ``.safetensors`` file: a torchvision-style state_dict, or
  a checkpoint written by this project's fine-tune routine (it carries its class names).
* ``random``: Kaiming-initialised, untrained weights.

Every file is user input, read by :mod:`resnet_demo.core.checkpoint_files`: plain data only
(``torch.load(..., weights_only=True)``, so a pickle that would run code is refused),
finite float weights, and metadata checked field by field; each refusal is one
:class:`WeightsError` sentence naming the file by its name, and nothing is loaded or
cached. Nothing falls back to random weights unless the caller asks for it, and a
model on random weights says so (:attr:`LoadedModel.untrained`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm

from .cache import BoundedCache
from .checkpoint_files import (
    WeightsError,
    check_class_names,
    check_preprocessing,
    check_tensors,
    check_widths,
    check_widths_recorded,
    is_state_dict,
    read_pth,
)
from .devices import resolve_device
from .hub_cache import HUB_FILE, hub_cached_file, hub_repo
from .model import ARCH_DEPTHS, ResNet, Widths, build_model
from .state_dict_fit import load_strict, state_dict_fit_problem

__all__ = [
    "ARCHES",
    "ARCH_LABELS",
    "CHECKPOINT_FORMAT",
    "DEFAULT_WEIGHTS",
    "KEEP_FILE_MODELS",
    "NAMED_WEIGHTS",
    "LoadedModel",
    "Preprocessing",
    "WeightsError",
    "WeightsSpec",
    "cache_path",
    "check_arch",
    "clear_model_cache",
    "fetch_weights_file",
    "hub_repo",
    "is_shared",
    "load_model",
    "named_weights_on_disk",
    "offline",
    "read_pth",
    "shared_model",
    "shared_models",
    "state_dict_fit_problem",
    "weights_spec",
]

ARCHES: tuple[str, ...] = tuple(ARCH_DEPTHS)
# What people call each architecture ("ResNet-50"): the app's menus, tables and messages read it here.
ARCH_LABELS: dict[str, str] = {arch: f"ResNet-{arch.removeprefix('resnet')}" for arch in ARCHES}
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
RANDOM_SOURCE = "random initialisation"


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
    def from_dict(cls, d: Any, *, name: str = "The checkpoint") -> Preprocessing:
        """The preprocessing a checkpoint stored, every field checked (:class:`WeightsError`
        naming ``name``, the file, when one is wrong)."""
        return cls(**check_preprocessing(d, name=name))


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
    widths: Widths | None = None  # a channel-pruned checkpoint's inner widths; None: the standard ones
    hub_repo: str | None = None  # the same named weights on the Hugging Face Hub ("timm/resnet50.tv2_in1k")

    @property
    def num_classes(self) -> int:
        return len(self.categories)


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with the spec of its weights.

    ``warning`` is set when the caller allowed a fallback and got random weights
    instead of the ones asked for; it says why and what to do. ``source`` says, for people,
    where the weights were read: "the Hugging Face Hub cache (timm/resnet50.tv2_in1k)",
    "torchvision's cache (resnet50-11ad3fa6.pth)", "the file best.pth" or "random
    initialisation" (:func:`load_model` sets it; empty for a model built by other code).
    """

    model: ResNet
    spec: WeightsSpec
    warning: str | None = None
    cause: WeightsError | None = None  # why the fallback happened, for a remedy in the app's words
    source: str = ""

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


def check_arch(arch: str) -> str:
    """``arch`` when it is one of :data:`ARCHES`; else a :class:`WeightsError` (a ``UserError``) naming them.

    The one check of an architecture's name, for the command line and the app alike.
    """
    if not isinstance(arch, str) or arch not in ARCH_DEPTHS:  # a request may send any JSON value
        names = ", ".join(f"{a} ({ARCH_LABELS[a]})" for a in ARCHES)
        # Cut: the name may be anything an API caller sent.
        raise WeightsError(f"Unknown architecture {str(arch)[:40]!r}; choose one of {names}.")
    return arch


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
        hub_repo=hub_repo(arch=arch, weights=name),
    )


def weights_spec(*, arch: str, weights: str = DEFAULT_WEIGHTS) -> WeightsSpec:
    """Describe ``weights`` (a name or a file path) for ``arch`` without loading anything.

    For a local file, the categories and preprocessing are read from the file.
    """
    check_arch(arch)
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
    spec, _ = _read_local(arch, _local_path(weights))
    return spec


def _local_path(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(
            f"Unknown weights {path.name[:80]!r}: not one of {', '.join(NAMED_WEIGHTS)}, and no such file exists. "
            f"Give a weights name or a .pth or .safetensors file."
        )
    return path


def cache_path(spec: WeightsSpec) -> Path:
    """Where torchvision's cache keeps the file of a named weights entry."""
    if spec.file_name is None:
        raise ValueError(f"{spec.name} weights have no file in torchvision's cache")
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.file_name


def named_weights_on_disk(*, arch: str, weights: str) -> bool:
    """Whether the named ``weights`` of ``arch`` can load without a download: their file is in the
    Hugging Face Hub cache or in torchvision's cache (whether it is a good file is told by loading it)."""
    spec = weights_spec(arch=arch, weights=weights)
    if spec.hub_repo is None:  # random weights need no file
        return True
    return hub_cached_file(repo=spec.hub_repo) is not None or cache_path(spec).is_file()


def _read_local(arch: str, path: Path) -> tuple[WeightsSpec, dict[str, torch.Tensor]]:
    """A user's .pth or .safetensors: a plain state_dict or a fine-tune checkpoint, every part checked."""
    obj = read_pth(path)
    name = path.name
    widths = None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        state_dict, categories, preprocessing = _finetune_parts(obj, arch=arch, name=name)
        widths = check_widths(obj.get("widths"), name=name, arch=arch)  # recorded by every checkpoint we write
        label = f"fine-tuned: {name}"
    elif is_state_dict(obj):
        state_dict = obj
        fc = state_dict.get("fc.weight")
        n = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.ndim == 2 else 1000
        categories = _imagenet_categories() if n == 1000 else tuple(f"class {i}" for i in range(n))
        preprocessing = _torchvision_spec(arch, DEFAULT_WEIGHTS).preprocessing
        label = f"file: {name}"
    else:
        raise WeightsError(
            f"{name} is not a ResNet state_dict: expected a dict of tensors "
            f"(torch.save(model.state_dict())) or a resnet_demo fine-tune checkpoint."
        )
    check_tensors(state_dict, name=name)
    spec = WeightsSpec(
        arch=arch,
        name=str(path),
        label=label,
        categories=categories,
        preprocessing=preprocessing,
        pretrained=True,
        path=path,
        widths=widths,
    )
    return spec, state_dict


def _finetune_parts(
    obj: dict[str, Any], *, arch: str, name: str
) -> tuple[dict[str, torch.Tensor], tuple[str, ...], Preprocessing]:
    """The weights, class names and preprocessing of a fine-tune checkpoint, each checked."""
    saved_arch = obj.get("arch")
    if saved_arch not in ARCH_DEPTHS:
        raise WeightsError(f"{name} is not a usable fine-tune checkpoint: its arch is not one of {', '.join(ARCHES)}.")
    if saved_arch != arch:
        raise WeightsError(
            f"{name} is a fine-tuned {saved_arch} checkpoint, not {arch}. Choose {saved_arch} to load it."
        )
    state_dict = obj.get("model")
    if not is_state_dict(state_dict):
        what = "it has no model weights" if state_dict is None else "its model is not a state_dict of tensors"
        raise WeightsError(f"{name} is not a usable fine-tune checkpoint: {what}.")
    fc = state_dict.get("fc.weight")
    head = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.ndim == 2 else None
    categories = check_class_names(obj.get("class_names"), name=name, head_size=head)
    return state_dict, categories, Preprocessing.from_dict(obj.get("preprocessing"), name=name)


def _cli_fix(spec: WeightsSpec, path: Path) -> str:
    """What to do about missing or broken named weights, in command-line words (this machine's paths)."""
    return (
        f"Fix: download {spec.url} and place it at {path}, or run `hf download {spec.hub_repo} {HUB_FILE}` "
        f"(the Hugging Face Hub cache), or pass --weights PATH (a .pth or .safetensors state_dict), "
        f"or --weights random for an untrained model."
    )


def fetch_weights_file(
    *, url: str, file_name: str, what: str, download: bool, progress: bool, cli_fix: Callable[[Path], str]
) -> Path:
    """The published file ``file_name`` in torchvision's cache, downloaded there from ``url`` first when
    missing and ``download`` allows it (its hash checked, as torch.hub does).

    Raises :class:`WeightsError` when the file is missing and downloads are off, or the download
    fails; the sentence names ``what`` ("ImageNet V2 (torchvision) weights for resnet50") and the
    file, and its ``cli_fix`` is ``cli_fix(path)``: where to place it by hand, in command-line words.
    """
    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if path.exists():
        return path
    missing = f"{what} ({file_name}) are not in torchvision's cache on this machine"
    if not download:
        raise WeightsError(f"{missing}, and downloads are off.", cli_fix=f"({OFFLINE_ENV}=1) {cli_fix(path)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    match = re.search(torch.hub.HASH_REGEX, path.name)
    try:
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=progress)
    except Exception as e:  # noqa: BLE001 - urllib, ssl, socket and hash errors all mean "not available"
        detail = str(e).splitlines()[0] if str(e) else "no detail"
        raise WeightsError(
            f"{missing}, and they could not be downloaded ({type(e).__name__}).", cli_fix=f"({detail}) {cli_fix(path)}"
        ) from e
    return path


def _fetch_named(spec: WeightsSpec, *, download: bool, progress: bool) -> Path:
    assert spec.url is not None and spec.file_name is not None  # named, published weights
    return fetch_weights_file(
        url=spec.url,
        file_name=spec.file_name,
        what=f"{spec.label} weights for {spec.arch}",
        download=download,
        progress=progress,
        cli_fix=lambda path: _cli_fix(spec, path),
    )


def _load_published(spec: WeightsSpec, path: Path, *, name: str, where: str, fix: str) -> ResNet:
    """The published state_dict at ``path`` (named ``name`` in ``where``) in a new ``spec.arch``, every part checked."""
    try:
        state_dict = read_pth(path)
        if not is_state_dict(state_dict):
            raise WeightsError(f"{name} in {where} is not a ResNet state_dict.")
        check_tensors(state_dict, name=name)
        model = build_model(spec.arch)
        load_strict(model=model, state_dict=state_dict, name=name, arch=spec.arch)
    except WeightsError as e:
        raise WeightsError(e.problem, cli_fix=fix) from e
    return model


def _load_named(spec: WeightsSpec, *, download: bool, progress: bool) -> tuple[ResNet, str]:
    """Published weights and where they were found: the Hugging Face Hub cache first, then torchvision's
    cache (downloaded there when missing and allowed)."""
    assert spec.hub_repo is not None  # named, published weights
    hub = hub_cached_file(repo=spec.hub_repo)
    if hub is not None:
        # Named without the repo's "/": the app's sentences never show one.
        name = f"{HUB_FILE} of {spec.hub_repo.split('/')[-1]}"
        fix = f"Fix: run `hf download {spec.hub_repo} {HUB_FILE} --force-download`, or delete {hub}."
        model = _load_published(spec, hub, name=name, where="the Hugging Face Hub cache", fix=fix)
        return model, f"the Hugging Face Hub cache ({spec.hub_repo})"
    path = _fetch_named(spec, download=download, progress=progress)
    fix = f"Fix: delete {path} so that it is downloaded again, or pass --weights PATH or --weights random."
    model = _load_published(spec, path, name=path.name, where="torchvision's cache", fix=fix)
    return model, f"torchvision's cache ({path.name})"


def load_model(
    *,
    arch: str,
    weights: str = DEFAULT_WEIGHTS,
    fallback_to_random: bool = False,
    download: bool | None = None,
    progress: bool = False,
) -> LoadedModel:
    """Build ``arch`` and load ``weights`` (a name or a path) into it, in eval mode.

    Named weights are read from the Hugging Face Hub cache when there, else from torchvision's
    cache; ``download=None`` downloads them there when missing unless ``RESNET_DEMO_OFFLINE=1``.
    With ``fallback_to_random=True``, named weights that cannot be had give a random
    model with a ``warning`` that explains why; otherwise, and always for a file the
    user gave, :class:`WeightsError` is raised and nothing is loaded.
    """
    check_arch(arch)
    if weights not in NAMED_WEIGHTS:
        spec, state_dict = _read_local(arch, _local_path(weights))
        if spec.widths is None:  # a pruned model's weights without its widths: say so, not "wrong shapes"
            check_widths_recorded(state_dict, name=Path(spec.name).name, arch=arch)
        model = build_model(arch, num_classes=spec.num_classes, widths=spec.widths)
        load_strict(model=model, state_dict=state_dict, name=Path(spec.name).name, arch=arch)
        return LoadedModel(model.eval(), spec, source=f"the file {Path(spec.name).name}")
    spec = weights_spec(arch=arch, weights=weights)
    if weights == "random":
        return LoadedModel(build_model(arch).eval(), spec, source=RANDOM_SOURCE)
    try:
        download = (not offline()) if download is None else download
        model, source = _load_named(spec, download=download, progress=progress)
    except WeightsError as e:
        if not fallback_to_random:
            raise
        random_spec = weights_spec(arch=arch, weights="random")
        warning = f"{e} Running on random weights: UNTRAINED."
        return LoadedModel(build_model(arch).eval(), random_spec, warning=warning, cause=e, source=RANDOM_SOURCE)
    return LoadedModel(model.eval(), spec, source=source)


# Named weights stay loaded (a handful of models at most); checkpoint files are kept for the
# most recent KEEP_FILE_MODELS only: every distinct upload would otherwise pin ~100 MB (plus its
# folded inference copy) until the server restarts.
KEEP_FILE_MODELS = 2
_CACHE: BoundedCache[tuple[str, str, bool, str], LoadedModel] = BoundedCache(
    KEEP_FILE_MODELS, evictable=lambda key: key[1] not in NAMED_WEIGHTS
)


def shared_model(
    *, arch: str, weights: str = DEFAULT_WEIGHTS, fallback_to_random: bool = False, device: str = "cpu"
) -> LoadedModel:
    """:func:`load_model`, loaded once per (arch, weights, device) and shared read-only.

    Named weights stay cached; of the models loaded from checkpoint files, only the
    :data:`KEEP_FILE_MODELS` most recently used do (an older one is loaded again when asked
    for). Callers must not modify the returned model: every user of the process shares it.
    """
    target = resolve_device(device)

    def load() -> LoadedModel:
        loaded = load_model(arch=arch, weights=weights, fallback_to_random=fallback_to_random)
        for p in loaded.model.parameters():
            p.requires_grad_(False)
        loaded.model.to(target)
        return loaded

    # Made under the cache's lock: two users asking for the same model load it once.
    return _CACHE.get_or_make((arch, weights, fallback_to_random, str(target)), load)


def is_shared(loaded: LoadedModel) -> bool:
    """Whether ``loaded`` is still in the cache of shared models (a checkpoint's model may have left it)."""
    return any(v is loaded for v in _CACHE.values())


def shared_models() -> list[LoadedModel]:
    """The models cached now, least recently used first."""
    return _CACHE.values()


def clear_model_cache() -> None:
    """Forget every cached model (tests, or after new weights were placed in the cache)."""
    _CACHE.clear()
