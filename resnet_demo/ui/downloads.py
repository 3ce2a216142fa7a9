"""The folder of raw maps (.npy) that users may download, kept to a bounded number of files."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np


class Downloads:
    """A folder of at most ``keep`` files for the raw maps users may download.

    Gradio copies returned files into its own cache (cleaned by ``delete_cache``);
    this keeps our own copies bounded too, whatever the number of requests.
    """

    def __init__(self, keep: int = 64) -> None:
        self.dir = Path(tempfile.gettempdir()) / f"resnet-explorer-{os.getpid()}"
        self.keep = keep
        self._lock = threading.Lock()

    def save_npy(self, array: np.ndarray, *, stem: str) -> str:
        """Write ``array`` as ``{stem}-{content hash}.npy``, dropping the oldest files beyond ``keep``."""
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            files = sorted(self.dir.glob("*.npy"), key=lambda p: p.stat().st_mtime)
            for old in files[: max(0, len(files) - self.keep + 1)]:
                old.unlink(missing_ok=True)
            # Named by content: the same map gives the same file, which Gradio's cache
            # (keyed by content and name) then stores once instead of once per request.
            digest = hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()[:12]
            path = self.dir / f"{stem}-{digest}.npy"
            np.save(path, array)
            return str(path)

    def remove(self) -> None:
        """Remove the folder and every file in it: the server is stopping."""
        with self._lock:
            shutil.rmtree(self.dir, ignore_errors=True)


# The app's one folder, shared by every request of this server process.
DOWNLOADS = Downloads()
