"""Server-wide settings of the app: how many requests run at once, upload and cache limits, the look."""

from __future__ import annotations

import os

import gradio as gr

# Requests that run at once per queue ("inference": new photos and their views; "checks": the
# trust checks and the comparison of depths, which take seconds), each with the cores shared
# out as torch threads (see :func:`.demo.main`; RESNET_DEMO_CONCURRENCY sets it for larger
# hosts). On the 2-core EPYC one request of two threads beat two of one thread each, for 16
# clients (5.8 against 3.9 requests/s), for one (0.20 against 0.25 s round trip) and in the
# browser (0.49 against 0.78 s): the convolutions use both cores either way, and two requests
# at once only add switching between them.
INFERENCE_LIMIT = max(1, int(os.environ.get("RESNET_DEMO_CONCURRENCY", "1")))
QUEUE_SIZE = 32
# Photos are limited by pixels (resnet_demo.core.images); this cap is for fine-tune zips and checkpoints.
MAX_UPLOAD = "300mb"
# Gradio's own sweep of its cache (every hour, files older than two hours; everything when the
# server stops). The app's files are also kept bounded every few seconds (.temp_files).
DELETE_CACHE = (3600, 7200)
# The server's one training job, fine-tune or slim (.finetune_job): a queue of its own, a few wide, so that
# a second user gets the "busy" sentence at once instead of waiting unseen, and inference never queues behind it.
TRAINING_QUEUE = {"concurrency_id": "finetune", "concurrency_limit": 4}
# Per-user analyses are dropped after 20 minutes idle (each holds activations).
STATE_TTL_S = 20 * 60
# How returned images are encoded: JPEG takes ~2 ms for the dozen images of a new photo, where
# WebP took 70 ms and PNG 115 ms (on the 2-core EPYC); 160 kB in all, against 95 kB and 530 kB.
IMAGE_FORMAT = "jpeg"

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="sky")
CSS = """
.banner-warn { border-left: 4px solid #f59e0b; padding-left: 8px; }
footer { display: none !important; }
#heatmap img { width: 100%; height: 100%; object-fit: contain; image-rendering: auto; }
"""
