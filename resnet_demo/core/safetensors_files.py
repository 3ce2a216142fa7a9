"""A ``.safetensors`` file: read as hostile input, and written for fine-tuned and slimmed models.

A safetensors file holds tensors and a header of string metadata, nothing that could run
code. This project's checkpoint fields (format, arch, class names, widths, preprocessing,
recipe, ...: everything a ``.pth`` checkpoint holds besides its state_dict) travel as JSON
under one metadata key, :data:`METADATA_KEY`; the tensors are the model's state_dict.

:func:`read_safetensors` gives back what :func:`~resnet_demo.core.checkpoint_files.read_pth`
gives for the ``.pth`` equivalent (a state_dict, or a checkpoint dict whose ``model`` is the
state_dict), so that the same checks (shapes, NaN, metadata fields) follow; ``read_pth``
routes a file here by its suffix. Each refusal is one :class:`WeightsError` sentence naming
the file by its name alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import WeightsError, damaged_file

__all__ = ["METADATA_KEY", "SUFFIX", "is_safetensors", "read_safetensors", "write_safetensors"]

SUFFIX = ".safetensors"
METADATA_KEY = "resnet_demo"  # safetensors metadata is str -> str: one key holds the checkpoint's JSON
# safetensors itself refuses larger headers; checked first so that a stray file is named as such.
MAX_HEADER = 100_000_000


def is_safetensors(*, path: Path) -> bool:
    """Whether ``path`` names a ``.safetensors`` file (by its suffix, as uploads keep their names)."""
    return path.suffix.lower() == SUFFIX


def _check_header(path: Path) -> None:
    """Refuse ``path`` (a :class:`WeightsError`) if its first bytes (8 bytes of header length, then
    the JSON header) show it is no safetensors file, or one cut short."""
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise WeightsError(f"Could not read {name} ({e.strerror or type(e).__name__}).") from e
    if size == 0:
        raise WeightsError(f"{name} is empty, so it is not a safetensors file.")
    length = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if not 2 <= length <= MAX_HEADER or head[8:9] != b"{":
        raise WeightsError(f"{name} is not a safetensors file: it does not start with the length of a JSON header.")
    if length > size - 8:
        raise damaged_file(name, kind="safetensors file", why="its header is cut short")


def read_safetensors(*, path: Path) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file on the CPU, as a state_dict; when its metadata holds
    this project's checkpoint fields (:data:`METADATA_KEY`), those fields as a dict with the
    tensors as its ``"model"`` (absent when the file holds no tensors).

    Raises :class:`WeightsError` for a file that is no safetensors file, a damaged one, or one
    whose checkpoint fields are not a JSON object; the fields themselves are checked by the caller.
    """
    name = path.name
    if not path.is_file():
        raise WeightsError(f"{name} is not a file, so it is not a safetensors file.")
    _check_header(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is no dict
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - header, offset and dtype errors all mean a broken file
        raise damaged_file(name, kind="safetensors file", why=f"{type(e).__name__} while reading it") from e
    text = metadata.get(METADATA_KEY)
    if text is None:
        return tensors
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: a header of nested brackets
        raise WeightsError(
            f"{name} is not a usable fine-tune checkpoint: its {METADATA_KEY} metadata is not JSON."
        ) from e
    if not isinstance(fields, dict):
        raise WeightsError(
            f"{name} is not a usable fine-tune checkpoint: its {METADATA_KEY} metadata is not a JSON object."
        )
    fields.pop("model", None)  # the weights are the file's tensors, never text
    if tensors:
        fields["model"] = tensors
    return fields


def write_safetensors(*, obj: Mapping[str, Any], path: Path) -> None:
    """Write ``obj`` to ``path`` as safetensors: a state_dict as it is, or a checkpoint dict (its
    ``"model"`` the tensors, every other field JSON under :data:`METADATA_KEY`).

    Raises ``ValueError`` for a checkpoint with optimizer state: resuming needs ``last.pth``.
    """
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        tensors, metadata = dict(obj), {"format": "pt"}
    else:
        fields = {k: v for k, v in obj.items() if k != "model"}
        if "optimizer" in fields or "scaler" in fields:
            raise ValueError("optimizer state has no place in a .safetensors checkpoint; save it in last.pth")
        tensors = dict(obj["model"])
        metadata = {"format": "pt", METADATA_KEY: json.dumps(fields)}
    # safetensors stores each tensor's own bytes: contiguous, and never two views of one storage.
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
