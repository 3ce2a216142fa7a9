"""ResNet Explorer: `python app.py [--host --port --share --arch --weights --device --time-budget --mcp]`.

Also the `app_file` of the Hugging Face Space; the interface is built in resnet_demo.ui.
"""

from __future__ import annotations

import sys

from resnet_demo.ui import build_demo, main

if __name__ == "__main__":
    sys.exit(main())
else:
    # `gradio app.py` (hot reload) and other importers look for a module-level `demo`.
    demo = build_demo()
