"""``python app.py`` itself: it starts offline on random weights, serves, and stops cleanly, leaving
none of its files behind, on SIGTERM (how hosts and process managers stop a server) and on Ctrl-C alike."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from .conftest import EXAMPLES, app_py, stop


def _files(*roots: Path) -> set[Path]:
    return {p for root in roots for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_app_py_serves_then_stops_leaving_no_files(sig: signal.Signals, tmp_path: Path) -> None:
    cache, temp = tmp_path / "gradio", tmp_path / "tmp"  # Gradio's cache; the system temp folder
    temp.mkdir()
    # The raw maps and the sessions' work folders go to the system temp folder.
    with app_py(tmp_path, env={"TMPDIR": str(temp)}) as (proc, url, log):
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        photo = handle_file(str(EXAMPLES / "cat.jpg"))
        answer = client.predict(photo, "resnet50", "imagenet-v2", api_name="/predict")
        probs = [c["confidence"] for c in answer["confidences"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
        client.predict(photo, "resnet50", "random", None, "layer4", "gradcam", 0.5, "crop", api_name="/explain")
        client.close()
        config = httpx.get(url + "config", timeout=30).json()
        status = next(
            c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "weights-status"
        )
        assert "UNTRAINED" in status and "Pretrained weights unavailable" in status
        made = _files(cache, temp)
        # The photo's upload, the images returned, the raw map in its own folder: the requests wrote files.
        assert any(p.suffix == ".npy" for p in made) and any(p.name == "cat.jpg" for p in made), made
        folders = {p.parent for p in made}
        code = stop(proc, sig=sig)
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, f"app.py exited with status {code}:\n{text}"
    assert "closing server" in text, text
    assert _files(cache, temp) == set(), f"files left behind:\n{text}"
    assert not [f for f in folders if f.exists()], "the folders of the app's files are left behind"
    with socket.socket() as s:  # nothing listens on the port any more (closed connections may linger)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/"))))
