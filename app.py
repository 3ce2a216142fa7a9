"""ResNet Explorer: `python app.py`, or a Hugging Face Space with this file as app_file."""

from __future__ import annotations

raise SystemExit("The app is not built yet: see issue 5. Try `python -m resnet_demo info`.")
