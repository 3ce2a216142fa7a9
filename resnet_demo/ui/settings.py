"""Server-wide settings of the app: how many requests run at once, upload and cache limits, the look."""

from __future__ import annotations

import gradio as gr

# Two requests at once keep both cores busy; more would only slow each one down.
INFERENCE_LIMIT = 2
QUEUE_SIZE = 32
# Photos are limited by pixels (resnet_demo.images); this cap is for fine-tune zips and checkpoints.
MAX_UPLOAD = "300mb"
# Gradio's cache: every hour, delete files older than two hours, so a Space's disk stays small.
DELETE_CACHE = (3600, 7200)
# Per-user analyses are dropped after 20 minutes idle (each holds activations).
STATE_TTL_S = 20 * 60

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="sky")
CSS = """
.banner-warn { border-left: 4px solid #f59e0b; padding-left: 8px; }
footer { display: none !important; }
#heatmap img { width: 100%; height: 100%; object-fit: contain; image-rendering: auto; }
"""
