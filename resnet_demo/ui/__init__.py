"""The Gradio app. This package is the only part of resnet_demo that imports gradio."""

from __future__ import annotations

from .blocks import build_demo, launch_kwargs, main, parse_args

__all__ = ["build_demo", "launch_kwargs", "main", "parse_args"]
