"""The Hugging Face Hub cache as a source of the named weights.

timm publishes torchvision's own ImageNet weights on the Hub as ``model.safetensors``, under
torchvision's parameter names (conv1, bn1, layer1..4, fc): ``timm/resnet50.tv_in1k`` holds
torchvision's V1 weights of ResNet-50, ``timm/resnet50.tv2_in1k`` its V2 weights, and the
same for resnet101 and resnet152. A Space pre-loads them at build time (``preload_from_hub``
in README.md), so the app finds them on disk instead of downloading at the first request.

Only the cache on disk is looked at (``HF_HUB_CACHE``, or ``HF_HOME``/hub), never the network.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["HUB_FILE", "hub_cached_file", "hub_repo"]

HUB_FILE = "model.safetensors"
# timm's names for torchvision's weights: "tv" is torchvision's V1, "tv2" its V2.
_HUB_TAGS = {"imagenet-v1": "tv_in1k", "imagenet-v2": "tv2_in1k"}


def hub_repo(*, arch: str, weights: str) -> str:
    """The Hub repository that holds the named ``weights`` ("imagenet-v1" or "imagenet-v2") of
    ``arch`` as :data:`HUB_FILE`, e.g. ``"timm/resnet50.tv2_in1k"``."""
    return f"timm/{arch}.{_HUB_TAGS[weights]}"


def hub_cached_file(*, repo: str) -> Path | None:
    """:data:`HUB_FILE` of ``repo`` in the Hugging Face Hub cache, or None when it is not there."""
    try:
        from huggingface_hub import try_to_load_from_cache  # installed with gradio: imported only when needed
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id=repo, filename=HUB_FILE)
    except OSError:  # an unreadable cache folder holds no weights we can use
        return None
    # Not a str: absent, or known to be absent (huggingface_hub's _CACHED_NO_EXIST).
    return Path(found) if isinstance(found, str) else None
