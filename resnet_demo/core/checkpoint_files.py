"""A ``.pth`` (or ``.safetensors``) file as hostile input: whatever a user hands over, read without trusting it.

* :func:`read_pth` loads plain data only (``torch.load(weights_only=True)``), and says what
  a file is when it is not a PyTorch checkpoint at all; a ``.safetensors`` file goes to
  :mod:`.safetensors_files` instead, which gives back the same shapes of data;
* :func:`check_tensors` refuses NaN, infinite or non-float weights and buffers;
* :func:`check_preprocessing`, :func:`check_class_names` and :func:`check_widths` check the
  metadata a fine-tune checkpoint carries, every type and every size, within what a ResNet
  demo needs.

Each refusal is one :class:`WeightsError` sentence that names the file by its name alone:
uploads live in server folders that are none of the user's business.
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import InterpolationMode

from .class_names import clean_class_name
from .errors import WeightsError, damaged_file
from .model import ARCH_DEPTHS, Widths, standard_widths
from .safetensors_files import is_safetensors, read_safetensors

__all__ = [
    "INTERPOLATIONS",
    "MAX_SIDE",
    "MIN_CROP",
    "WeightsError",
    "check_class_names",
    "check_preprocessing",
    "check_tensors",
    "check_widths",
    "check_widths_recorded",
    "is_state_dict",
    "read_pth",
]

MIN_CROP = 32  # the network halves the image five times: a smaller crop leaves layer4 nothing to see
# A crop of 4500 px took 47 s and ~10 GB for one request; nothing a ResNet learns needs more than this.
MAX_SIDE = 1024
INTERPOLATIONS: tuple[str, ...] = tuple(m.value for m in InterpolationMode)
MAX_CLASS_NAME = 200  # characters: a name is shown in menus and labels
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty zip


def _short(value: Any) -> str:
    """``repr`` of a value from a file, cut short: a hostile file can hold a megabyte string."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _file_kind(path: Path) -> str:
    """ "zip", "pickle", "empty" or "other", from the first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise WeightsError(f"Could not read {path.name} ({e.strerror or type(e).__name__}).") from e
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    # torch.save's pickles start with the PROTO opcode and a protocol from 2 to 5.
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    return "other"


def _torch_zip_problem(path: Path) -> str | None:
    """Why a zip is not one torch.save wrote, or None when it is (a folder holding data.pkl)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return f"{path.name} is a damaged PyTorch checkpoint (its zip directory is unreadable): it may be incomplete."
    if not any(i.filename.count("/") == 1 and i.filename.endswith("/data.pkl") for i in infos):
        return f"{path.name} is not a PyTorch checkpoint: it is a zip archive without torch.save's data.pkl."
    # torch.save stores every entry as it is, but torch.load also inflates compressed ones:
    # a few kilobytes could unpack to gigabytes (a zip bomb), so only stored entries are read.
    if any(i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size for i in infos):
        return f"{path.name} was refused: its zip entries are compressed, which torch.save never does."
    return None


def read_pth(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, refusing with one sentence what it cannot read.

    A file that is no torch zip or pickle at all "is not a PyTorch checkpoint"; a pickle that
    asks for code to run is refused as such; a torch file that fails half way is "damaged".
    A ``.safetensors`` file is read by :func:`~.safetensors_files.read_safetensors` instead:
    a state_dict, or a checkpoint dict with the state_dict as its ``model``, as from a ``.pth``.
    """
    if is_safetensors(path=path):
        return read_safetensors(path=path)
    if not path.is_file():
        raise WeightsError(f"{path.name} is not a file, so it is not a PyTorch checkpoint.")
    kind = _file_kind(path)
    if kind == "empty":
        raise WeightsError(f"{path.name} is empty, so it is not a PyTorch checkpoint.")
    if kind == "other":
        raise WeightsError(f"{path.name} is not a PyTorch checkpoint: it is neither a torch.save zip nor a pickle.")
    problem = _torch_zip_problem(path) if kind == "zip" else None
    if problem:
        raise WeightsError(problem)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        asks = (
            f"it asks for {found.group(1)[:80]}" if found else "it uses pickle instructions that safe loading refuses"
        )
        raise WeightsError(
            f"Refused to load {path.name}: it is a pickle that could run code ({asks}), not plain tensors; "
            f"save the weights with torch.save(model.state_dict())."
        ) from e
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, storage and unpickling errors all mean a broken file
        raise damaged_file(path.name, kind="PyTorch checkpoint", why=f"{type(e).__name__} while reading it") from e


def is_state_dict(obj: Any) -> bool:
    """Whether ``obj`` is a non-empty dict of tensors under string keys."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _finite(t: torch.Tensor) -> bool:
    # min and max propagate NaN, and are infinite when any value is: one reduction and no
    # boolean copy of the tensor (about 3 ms for ResNet-50's weights, isfinite().all() about 25).
    lo, hi = torch.aminmax(t)
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


def check_tensors(state_dict: Mapping[str, torch.Tensor], *, name: str) -> None:
    """Refuse weights or buffers that are not finite floats (a diverged run's NaN, a hand-edited file)."""
    for key, t in state_dict.items():
        if (
            t.layout != torch.strided
            or t.is_complex()
            or not (t.is_floating_point() or key.endswith("num_batches_tracked"))
        ):
            raise WeightsError(
                f"{name} holds {t.dtype} values in {key[:80]}, not the floating-point weights of a ResNet."
            )
        if t.is_floating_point() and t.numel() and not _finite(t):
            raise WeightsError(
                f"{name} holds NaN or infinite values in {key[:80]}, so it was not loaded: "
                f"use a checkpoint saved before the training diverged."
            )


def _unusable(name: str, what: str) -> WeightsError:
    return WeightsError(f"{name} is not a usable fine-tune checkpoint: {what}.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(v: Any) -> list[float] | None:
    """Three finite numbers (ints or floats, not bools), or None."""
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
        return None
    return [float(x) for x in v]


def check_preprocessing(d: Any, *, name: str) -> dict[str, Any]:
    """The ``preprocessing`` of a fine-tune checkpoint, checked: the keyword arguments of
    :class:`~resnet_demo.core.weights.Preprocessing`.

    ``crop_size`` is an int from :data:`MIN_CROP` to :data:`MAX_SIDE`, ``resize_size`` an int
    from the crop size to :data:`MAX_SIDE`; ``mean`` and ``std`` three finite numbers, the
    std above 0; ``interpolation`` (default bilinear) one of :data:`INTERPOLATIONS`.
    """
    if not isinstance(d, dict):
        raise _unusable(name, "its preprocessing is missing" if d is None else "its preprocessing is not a dict")
    crop, resize = d.get("crop_size"), d.get("resize_size")
    if not _is_int(crop) or not MIN_CROP <= crop <= MAX_SIDE:
        raise _unusable(name, f"crop_size must be an integer from {MIN_CROP} to {MAX_SIDE}, not {_short(crop)}")
    if not _is_int(resize) or not crop <= resize <= MAX_SIDE:
        raise _unusable(
            name, f"resize_size must be an integer from crop_size ({crop}) to {MAX_SIDE}, not {_short(resize)}"
        )
    mean, std = _numbers(d.get("mean")), _numbers(d.get("std"))
    if mean is None:
        raise _unusable(name, f"mean must be a list of 3 finite numbers, not {_short(d.get('mean'))}")
    if std is None or min(std) < 1e-6:  # dividing by a tinier std overflows float32
        raise _unusable(name, f"std must be a list of 3 numbers above 0 (at least 1e-06), not {_short(d.get('std'))}")
    interpolation = d.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise _unusable(name, f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not {_short(interpolation)}")
    return {
        "resize_size": resize,
        "crop_size": crop,
        "mean": tuple(mean),
        "std": tuple(std),
        "interpolation": str(interpolation),
    }


def check_class_names(names: Any, *, name: str, head_size: int | None) -> tuple[str, ...]:
    """The ``class_names`` of a fine-tune checkpoint: distinct, non-empty strings, one per output of the head."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
        raise _unusable(name, f"class_names must be a list of strings, not {_short(names)}")
    names = [clean_class_name(c) for c in names]  # before the checks: a name of controls alone is blank
    blank = next((c for c in names if not c.strip()), None)
    if blank is not None:
        raise _unusable(name, f"class name {_short(blank)} is blank")
    long = next((c for c in names if len(c) > MAX_CLASS_NAME), None)
    if long is not None:
        raise _unusable(name, f"class name {_short(long)} is longer than {MAX_CLASS_NAME} characters")
    repeated = [c for c, n in Counter(names).items() if n > 1]
    if repeated:
        raise _unusable(name, f"class name {_short(repeated[0])} appears more than once")
    if head_size is not None and len(names) != head_size:
        raise _unusable(name, f"it names {len(names)} classes but its head (fc) has {head_size} outputs")
    return tuple(names)


def check_widths(widths: Any, *, name: str, arch: str) -> Widths | None:
    """The ``widths`` of a checkpoint of ``arch``: None (the standard widths) or one pair of
    integers per block, each from 1 to the standard width of that convolution.

    Returns None for the standard widths, whether absent or written out, so that every
    unpruned model reads alike."""
    if widths is None:
        return None
    standard = standard_widths(arch)
    if not isinstance(widths, (list, tuple)) or len(widths) != len(standard):
        what = f"{len(widths)} entries" if isinstance(widths, (list, tuple)) else f"{_short(widths)}"
        raise _unusable(name, f"its widths must list one pair per block ({len(standard)} for {arch}), not {what}")
    blocks = [f"layer{s + 1}.{i}" for s, n in enumerate(ARCH_DEPTHS[arch]) for i in range(n)]
    for block, pair, (w1, w2) in zip(blocks, widths, standard, strict=True):
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_is_int(w) for w in pair)
        if not ok or not (1 <= pair[0] <= w1 and 1 <= pair[1] <= w2):
            raise _unusable(name, f"the widths of {block} must be two integers from 1 to {w1}, not {_short(pair)}")
    checked = tuple((int(a), int(b)) for a, b in widths)
    return None if checked == standard else checked


def _block_names(arch: str) -> list[str]:
    return [f"layer{s + 1}.{i}" for s, n in enumerate(ARCH_DEPTHS[arch]) for i in range(n)]


def _narrower_widths(state_dict: Mapping[str, Any], *, arch: str) -> Widths | None:
    """The inner widths of a channel-pruned ``arch`` that ``state_dict``'s shapes spell, or None.

    Read from every block's ``conv1`` and ``conv2`` weights (their output channels are the block's
    inner widths); None unless all of them are there as 4-D tensors, within the standard widths and
    narrower somewhere: the shapes of a pruned model, not of a broken file."""
    standard = standard_widths(arch)
    found = []
    for block, (w1, w2) in zip(_block_names(arch), standard, strict=True):
        conv1, conv2 = state_dict.get(f"{block}.conv1.weight"), state_dict.get(f"{block}.conv2.weight")
        if not all(isinstance(t, torch.Tensor) and t.ndim == 4 for t in (conv1, conv2)):
            return None
        pair = (int(conv1.shape[0]), int(conv2.shape[0]))
        if not (1 <= pair[0] <= w1 and 1 <= pair[1] <= w2) or int(conv2.shape[1]) != pair[0]:
            return None
        found.append(pair)
    widths = tuple(found)
    return None if widths == standard else widths


def check_widths_recorded(state_dict: Mapping[str, Any], *, name: str, arch: str) -> None:
    """Refuse, in one sentence naming the file ``name``, weights of a channel-pruned ``arch`` that come
    without the widths they need (a plain state_dict of a pruned model): where they load into the
    standard network, "176 of the wrong shape" would not say why."""
    widths = _narrower_widths(state_dict, arch=arch)
    if widths is None:
        return
    pruned = zip(_block_names(arch), widths, standard_widths(arch), strict=True)
    block, (w1, _w2), (s1, _s2) = next((b, w, s) for b, w, s in pruned if w != s)
    raise WeightsError(
        f"{name} holds a channel-pruned {arch} ({block} has {w1} of {s1} channels, for one) but not its "
        f"recorded widths, which a plain state_dict of a pruned model lacks. Load the checkpoint the slim "
        f"run saved (it records them), or save the pruned model with them."
    )
