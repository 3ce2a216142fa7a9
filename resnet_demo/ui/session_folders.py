"""One work folder per browser session, for the Fine-tune tab's data and runs.

Everything the tab writes lives under :data:`WORK_ROOT`, in the system temp folder
(which Gradio may serve files from); folders idle for hours are removed, since a
Space's disk is small.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

WORK_ROOT = Path(tempfile.gettempdir()) / "resnet_demo_finetune"
STALE_AFTER_S = 6 * 3600


def session_name(request: gr.Request | None) -> str:
    """The browser session's id, reduced to characters that are safe in a folder name."""
    session = getattr(request, "session_hash", None)
    return "".join(c for c in str(session or "local") if c.isalnum())[:64] or "local"


def session_dir(session: str) -> Path:
    """The session's folder, created if needed and marked as in use."""
    path = WORK_ROOT / session
    path.mkdir(parents=True, exist_ok=True)
    path.touch()  # the mark prune() reads
    return path


def prune(*, keep: str | None) -> None:
    """Remove other sessions' folders idle for hours, except ``keep`` (the running fine-tune's)."""
    if not WORK_ROOT.exists():
        return
    now = time.time()
    for d in WORK_ROOT.iterdir():
        if d.is_dir() and d.name != keep and now - d.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(d, ignore_errors=True)


def fresh_folder(parent: Path, *, prefix: str) -> Path:
    """A new sub-folder; this session's earlier ones of that kind are removed first."""
    for old in parent.glob(f"{prefix}-*"):
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent))
